"""The objects that run the server: its namespace, its config, its pods, its Service, its model
volume, its disruption budget, and the CronJob that checks what it answers."""

from __future__ import annotations

import hashlib
import math
from typing import Any

from kennel.deploy.spec import (
    BUNDLES_DIR,
    CHECKUP_SECRET,
    CONFIG,
    HOME,
    KEYS_DIR,
    KEYS_SECRET,
    MODELS_DIR,
    PORT,
    PROBE_PERIOD_S,
    PVC_HEADROOM,
    DeploySpec,
    Manifest,
    container_security,
    gibibytes,
    home_size,
    labels,
    made_by,
    mebibytes,
    meta,
    para,
    pod_security,
    secret_commands,
    selector,
    startup_seconds,
    with_headroom,
)
from kennel.units import MiB


def namespace(spec: DeploySpec) -> Manifest:
    body = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": spec.namespace,
            "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
        },
    }
    return Manifest(
        "namespace.yaml",
        (
            *made_by(spec),
            "The namespace, at the 'restricted' Pod Security level: every kennel pod runs as a user,",
            "with no privileges, no capabilities and a read-only root filesystem.",
        ),
        body,
    )


def serve_yaml(spec: DeploySpec) -> str:
    """kennel serve's config for the pod (fields: src/kennel/server/settings.py)."""
    s = spec.size
    model = s.name if spec.bundle else f"{MODELS_DIR}/{s.file_name}"
    return "\n".join(
        [
            f"# kennel serve settings; the pod runs: kennel serve --config {CONFIG} --host 0.0.0.0",
            f"#   --port {PORT} --keys-file {KEYS_DIR}/keys.json",
            "# metrics_public: Prometheus (the ServiceMonitor) scrapes /metrics without an API key. /metrics",
            "#   names the models and their traffic, no prompts; set it to false to ask for a key there.",
            "# max_loaded: one model per pod; the Deployment's memory is sized for this one alone.",
            "# ctx, parallel, threads, prompt_cache_mib: the Deployment's memory and CPU are sized for",
            "#   these; change them with `kennel deploy k8s --ctx/--parallel/--cpus`, not here alone.",
            "# pinned, preload, keep_alive -1: loaded before the pod is ready and never unloaded.",
            "metrics_public: true",
            "max_loaded: 1",
            "models:",
            f"  - model: {model}",
            f"    name: {s.name}",
            f"    ctx: {s.ctx}",
            f"    parallel: {s.parallel}",
            f"    threads: {s.threads}",
            f"    prompt_cache_mib: {math.ceil(s.prompt_cache / MiB)}",
            "    pinned: true",
            "    preload: true",
            "    keep_alive: -1",
            "",
        ]
    )


def configmap(spec: DeploySpec) -> Manifest:
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(spec, f"{spec.name}-config"),
        "data": {"serve.yaml": serve_yaml(spec)},
    }
    return Manifest(
        "configmap.yaml",
        (
            *made_by(spec),
            f"kennel serve's settings, mounted at {CONFIG}. A change rolls the pods (the Deployment",
            "carries the file's hash) once the Deployment is applied again.",
        ),
        body,
    )


def _server_container(spec: DeploySpec) -> dict[str, Any]:
    s = spec.size
    requests: dict[str, Any] = {"cpu": str(s.threads), "memory": mebibytes(s.memory)}
    limits: dict[str, Any] = {"memory": mebibytes(s.memory)}
    if spec.bundle:
        requests["ephemeral-storage"] = gibibytes(home_size(spec))
    if s.gpu_resource:
        limits[s.gpu_resource] = s.gpu_count
    mounts = [
        {"name": "config", "mountPath": CONFIG, "subPath": "serve.yaml", "readOnly": True},
        {"name": "keys", "mountPath": KEYS_DIR, "readOnly": True},
        {"name": "home", "mountPath": HOME},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if not spec.bundle:
        mounts.append({"name": "models", "mountPath": MODELS_DIR, "readOnly": True})
    return {
        "name": "kennel",
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "command": [
            "kennel",
            "serve",
            "--config",
            CONFIG,
            "--host",
            "0.0.0.0",
            "--port",
            str(PORT),
            "--keys-file",
            f"{KEYS_DIR}/keys.json",
        ],
        "env": [{"name": "KENNEL_HOME", "value": HOME}],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "startupProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": PROBE_PERIOD_S,
            "timeoutSeconds": 5,
            "failureThreshold": math.ceil(startup_seconds(spec) / PROBE_PERIOD_S),
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": PROBE_PERIOD_S,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
        "resources": {"requests": requests, "limits": limits},
        "securityContext": container_security(),
        "volumeMounts": mounts,
    }


def _import_container(spec: DeploySpec) -> dict[str, Any]:
    assert spec.bundle is not None
    return {
        "name": "import",
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["kennel", "import", f"{BUNDLES_DIR}/{spec.bundle}", "--name", spec.size.name],
        "env": [{"name": "KENNEL_HOME", "value": HOME}],
        "resources": {"requests": {"cpu": "1", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": "home", "mountPath": HOME},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "models", "mountPath": BUNDLES_DIR, "readOnly": True},
        ],
    }


def deployment(spec: DeploySpec) -> Manifest:
    s = spec.size
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        # Service links would set KENNEL_<SERVICE>_PORT=tcp://...; a Service named "kennel" would
        # set KENNEL_PORT, which kennel serve reads as its port
        "enableServiceLinks": False,
        "securityContext": pod_security(),
        "terminationGracePeriodSeconds": 60,
    }
    if s.gpu_resource:
        pod["tolerations"] = [{"key": s.gpu_resource, "operator": "Exists", "effect": "NoSchedule"}]
    if spec.bundle:
        pod["initContainers"] = [_import_container(spec)]
    pod["containers"] = [_server_container(spec)]
    pod["volumes"] = [
        {"name": "config", "configMap": {"name": f"{spec.name}-config"}},
        {"name": "keys", "secret": {"secretName": KEYS_SECRET, "defaultMode": 0o440}},
        {"name": "home", "emptyDir": {"sizeLimit": gibibytes(home_size(spec))}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        {"name": "models", "persistentVolumeClaim": {"claimName": f"{spec.name}-models", "readOnly": True}},
    ]
    # one pod holding a ReadWriteOnce claim: the new pod cannot attach it on another node
    # until the old one lets go, so it is replaced, not rolled
    strategy: dict[str, Any] = (
        {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
        if spec.shared
        else {"type": "Recreate"}
    )
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(spec, spec.name),
        "spec": {
            # no replicas: the autoscaler owns the count, and a re-apply must not reset it
            "revisionHistoryLimit": 3,
            "progressDeadlineSeconds": startup_seconds(spec) + 300,
            "selector": {"matchLabels": selector(spec)},
            "strategy": strategy,
            "template": {
                "metadata": {
                    "labels": labels(spec),
                    "annotations": {
                        "kennel/serve-yaml-sha256": hashlib.sha256(serve_yaml(spec).encode()).hexdigest()[:16]
                    },
                },
                "spec": pod,
            },
        },
    }
    where = (
        f"{s.gpu_count} x {s.gpu_resource} and {s.threads} CPUs" if s.gpu_resource else f"{s.threads} CPUs"
    )
    gpu_note = (
        " GPU nodes: add your cluster's GPU node label as a nodeSelector (e.g. GKE's"
        " cloud.google.com/gke-accelerator: nvidia-l4); the toleration matches the usual GPU taint."
        if s.gpu_resource
        else ""
    )
    comment = [
        *made_by(spec),
        *para(
            f"kennel serve for {s.name}, one replica per pod on {where}. Memory {mebibytes(s.memory)} is "
            "both request and limit: the model is mapped and loaded at start, and a pod that outgrows its "
            "estimate should be resized, not OOM-killed at a random moment."
        ),
        "",
        "Sizing (the same functions as `kennel fit`):",
        *(f"  {line}" for line in s.lines()),
        *_scale_comment(spec),
        "",
        "Before applying, create the Secrets it mounts (API keys are made where kennel runs):",
        *(f"  {c}" for c in secret_commands(spec)),
        "",
        *para(
            "Edit: the image (or kustomization.yaml's images:). The CPU request goes with threads in "
            "serve.yaml; there is no CPU limit on purpose: llama.cpp's threads wait on each other, and "
            "throttling one stalls them all." + gpu_note
        ),
        *para(
            f"Probes: the startup probe allows {startup_seconds(spec)} s to read {s.file_name} and load it "
            "(/healthz answers once the model is loaded); readiness is /readyz (the pinned model warm), "
            "liveness /healthz. No replicas field: the autoscaler owns the count."
        ),
    ]
    return Manifest("deployment.yaml", tuple(comment), body)


def _scale_comment(spec: DeploySpec) -> list[str]:
    if spec.scale is None or spec.scale.needed == 0:
        return [f"  replicas {spec.replicas} as asked (give --target-rps or --users to size it for a load)"]
    return [f"  {line}" for line in spec.scale.lines]


def service(spec: DeploySpec) -> Manifest:
    body = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(spec, spec.name),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(spec),
            "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    return Manifest(
        "service.yaml",
        (
            *made_by(spec),
            f"The OpenAI-compatible API inside the cluster: http://{spec.name}:{PORT}/v1 (clients send an",
            "API key as a Bearer token). Expose it with your Ingress or Gateway; it speaks plain HTTP.",
        ),
        body,
    )


def claim(spec: DeploySpec) -> Manifest:
    s = spec.size
    size = spec.bundle_size if spec.bundle and spec.bundle_size else s.file_size
    mode = "ReadOnlyMany" if spec.shared else "ReadWriteOnce"
    body_spec: dict[str, Any] = {
        "accessModes": [mode],
        "resources": {"requests": {"storage": gibibytes(with_headroom(size))}},
    }
    if spec.storage_class:
        body_spec["storageClassName"] = spec.storage_class
    body = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": meta(spec, f"{spec.name}-models"),
        "spec": body_spec,
    }
    what = spec.bundle or s.file_name
    where = BUNDLES_DIR if spec.bundle else MODELS_DIR
    fill = (
        [f"  kennel export {s.name} -o {spec.bundle}   (on a machine with the model), then copy it in"]
        if spec.bundle
        else (
            [f"  curl -L -o {MODELS_DIR}/{s.file_name} {s.download_url}"]
            if s.download_url
            else [f"  copy {s.file_name} in (e.g. kubectl cp)"]
        )
    )
    use = (
        f"An init container imports the bundle into the pod's own store ({HOME})."
        if spec.bundle
        else "kennel serve maps the file from there."
    )
    how = (
        "ReadOnlyMany: every replica mounts it. Fill it once before the pods start: with a storage class "
        "that also offers ReadWriteMany (NFS, a cloud file store) write it from a pod, or restore the "
        "claim from a VolumeSnapshot of a volume you filled (spec.dataSource). To write it:"
        if spec.shared
        else "ReadWriteOnce: one replica (--replicas 1). Fill it once before the pod starts, from a pod "
        "that mounts the claim read-write (delete that pod before the server's starts):"
    )
    comment = [
        *made_by(spec),
        *para(
            f"The model volume: {what}, mounted read-only at {where} in every pod. {use} Its size: the "
            f"file x {PVC_HEADROOM} + 1 GiB = {gibibytes(with_headroom(size))}."
        ),
        *para(how),
        *fill,
        "Edit: storageClassName for your cluster (or pass --storage-class).",
    ]
    return Manifest("pvc.yaml", tuple(comment), body)


def disruption_budget(spec: DeploySpec) -> Manifest:
    keep: dict[str, Any] = {"minAvailable": 1} if spec.replicas.min > 1 else {"maxUnavailable": 1}
    body = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta(spec, spec.name),
        "spec": {**keep, "selector": {"matchLabels": selector(spec)}},
    }
    why = (
        "minAvailable 1: with at least two replicas, a node drain always leaves one serving."
        if spec.replicas.min > 1
        else "maxUnavailable 1: with one replica, a drain may take it (minAvailable 1 would block drains)."
    )
    return Manifest("pdb.yaml", (*made_by(spec), why), body)


def checkup_cronjob(spec: DeploySpec) -> Manifest:
    url = f"http://{spec.name}:{PORT}/v1"
    container = {
        "name": "checkup",
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["kennel", "checkup", "run", "--url", url, "--model", spec.size.name],
        "env": [
            {"name": "KENNEL_HOME", "value": HOME},
            {
                "name": "KENNEL_API_KEY",
                "valueFrom": {"secretKeyRef": {"name": CHECKUP_SECRET, "key": "api-key"}},
            },
        ],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": container_security(),
        "volumeMounts": [{"name": "home", "mountPath": HOME}, {"name": "tmp", "mountPath": "/tmp"}],
    }
    body = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": meta(spec, f"{spec.name}-checkup", "checkup"),
        "spec": {
            "schedule": spec.checkup_schedule,
            "concurrencyPolicy": "Forbid",
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "spec": {
                    "backoffLimit": 0,
                    "activeDeadlineSeconds": 900,
                    "ttlSecondsAfterFinished": 86400,
                    "template": {
                        "metadata": {"labels": labels(spec, "checkup")},
                        "spec": {
                            "restartPolicy": "Never",
                            "automountServiceAccountToken": False,
                            "enableServiceLinks": False,
                            "securityContext": pod_security(),
                            "containers": [container],
                            "volumes": [
                                {"name": "home", "emptyDir": {"sizeLimit": "256Mi"}},
                                {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
                            ],
                        },
                    },
                }
            },
        },
    }
    return Manifest(
        "cronjob-checkup.yaml",
        (
            *made_by(spec),
            f"Golden-prompt checkups ({spec.checkup_schedule!r}) against the Service, so one run checks what",
            "clients get, whichever pod answers. A failed prompt fails the Job (exit 1): alert on",
            "kube_job_status_failed, or add --notify slack:URL (or webhook:, email:) to the command.",
            f"It needs an API key in the Secret {CHECKUP_SECRET} (see deployment.yaml for the commands).",
        ),
        body,
    )
