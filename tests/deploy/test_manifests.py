"""`kennel deploy k8s`: every manifest it writes is a valid object (built-in kinds against the
Kubernetes schemas, KEDA and prometheus-operator kinds against their CRDs), and the objects say
what the brief asks: probes, a non-root pod, the keys Secret, the model volume, autoscaling."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from kennel.server.settings import load_settings
from tests.deploy.validate import deploy, documents, validate

VARIANTS: dict[str, tuple[str, ...]] = {
    "cpu-keda": ("--model", "qwen2.5-0.5b", "--replicas", "1..4"),
    "cpu-one-replica-hpa": ("--model", "qwen2.5-0.5b", "--replicas", "1", "--autoscaler", "hpa"),
    "cpu-bundle": ("--model", "qwen2.5-0.5b", "--replicas", "2..3", "--bundle", "qwen.tar"),
    "gpu-keda": ("--model", "llama-3.1-8b", "--gpu", "L4", "--replicas", "2..6", "--namespace", "llm"),
    "gpu-hpa-bundle": (
        "--model",
        "llama-3.1-8b",
        "--gpu",
        "L4",
        "--replicas",
        "1..3",
        "--autoscaler",
        "hpa",
        "--bundle",
        "llama.tar",
        "--namespace",
        "llm",
        "--target-rps",
        "4",
    ),
}


def _objects(*args: str) -> dict[str, dict[str, Any]]:
    out, _ = deploy(*args)
    docs = documents(out)
    kinds = [d["kind"] for d in docs]
    assert len(set(kinds)) == len(kinds), kinds
    return {d["kind"]: d for d in docs}


def _pod(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    pod: dict[str, Any] = objects["Deployment"]["spec"]["template"]["spec"]
    return pod


def _server(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    container: dict[str, Any] = _pod(objects)["containers"][0]
    return container


@pytest.mark.parametrize("variant", VARIANTS, ids=list(VARIANTS))
def test_every_manifest_validates(variant: str, tmp_path: Path) -> None:
    args = VARIANTS[variant]
    objects = _objects(*args)
    for doc in objects.values():
        validate(doc)
    expected = {
        "ConfigMap",
        "Deployment",
        "Service",
        "PersistentVolumeClaim",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "CronJob",
        "HorizontalPodAutoscaler" if "hpa" in args else "ScaledObject",
    } | ({"Namespace"} if "--namespace" in args else set())
    assert set(objects) == expected
    assert "Secret" not in objects  # keys are made where kennel runs; the command is printed
    # the ConfigMap's serve.yaml is what `kennel serve --config` accepts
    config = tmp_path / "serve.yaml"
    config.write_text(objects["ConfigMap"]["data"]["serve.yaml"])
    settings = load_settings(config)
    assert settings.metrics_public is True and settings.max_loaded == 1
    (entry,) = settings.models
    assert entry.pinned and entry.preload and entry.keep_alive == -1
    assert entry.name == args[1]


@pytest.mark.parametrize("variant", VARIANTS, ids=list(VARIANTS))
def test_files_match_the_stream_and_form_a_kustomize_base(variant: str, tmp_path: Path) -> None:
    args = VARIANTS[variant]
    out, _ = deploy(*args)
    deploy(*args, "-o", str(tmp_path / "k8s"))
    files = sorted((tmp_path / "k8s").glob("*.yaml"))
    kustomization = yaml.safe_load((tmp_path / "k8s" / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in files if p.name != "kustomization.yaml"
    )
    from_files = [documents((tmp_path / "k8s" / name).read_text())[0] for name in kustomization["resources"]]
    assert from_files == documents(out)


def test_validators_are_strict() -> None:
    """A misspelt field or a wrong type fails, for built-in and CRD kinds alike."""
    objects = _objects(*VARIANTS["cpu-keda"])
    broken: list[dict[str, Any]] = []
    d = copy.deepcopy(objects["Deployment"])
    d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "IfNotPresent"
    broken.append(d)
    so = copy.deepcopy(objects["ScaledObject"])
    so["spec"]["maxReplicas"] = 3  # the field is maxReplicaCount
    broken.append(so)
    so = copy.deepcopy(objects["ScaledObject"])
    del so["spec"]["triggers"][0]["metadata"]["query"]  # the Prometheus scaler needs its query
    broken.append(so)
    sm = copy.deepcopy(objects["ServiceMonitor"])
    sm["spec"]["endpoints"][0]["interval"] = 15  # a duration string
    broken.append(sm)
    for doc in broken:
        with pytest.raises(Exception):  # noqa: B017  # jsonschema's and the test's own assertion
            validate(doc)


def test_the_pod_runs_as_a_user_with_probes_keys_and_the_store() -> None:
    objects = _objects(*VARIANTS["cpu-keda"])
    pod, server = _pod(objects), _server(objects)
    assert pod["securityContext"]["runAsUser"] == 10001 and pod["securityContext"]["runAsNonRoot"]
    assert pod["enableServiceLinks"] is False and pod["automountServiceAccountToken"] is False
    sc = server["securityContext"]
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert server["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert server["livenessProbe"]["httpGet"]["path"] == "/healthz"
    startup = server["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120  # a model load, not a blink
    assert server["command"][:2] == ["kennel", "serve"] and "--keys-file" in server["command"]
    mounts = {m["name"]: m for m in server["volumeMounts"]}
    assert mounts["keys"]["mountPath"] == "/etc/kennel/keys"
    assert mounts["home"]["mountPath"] == "/var/lib/kennel"
    assert mounts["models"]["mountPath"] == "/models" and mounts["models"]["readOnly"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["keys"]["secret"]["secretName"] == "kennel-keys"
    resources = server["resources"]
    assert resources["requests"]["memory"] == resources["limits"]["memory"]
    assert "cpu" not in resources["limits"] and resources["requests"]["cpu"] == "4"
    service = objects["Service"]["spec"]
    assert service["type"] == "ClusterIP" and service["ports"] == [
        {"name": "http", "port": 8484, "targetPort": "http", "protocol": "TCP"}
    ]
    # the checkup Job's pods are not the Service's, the PDB's or the Deployment's
    job_labels = objects["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert not (service["selector"].items() <= job_labels.items())


def test_gpu_replicas_get_the_device_and_the_taint() -> None:
    objects = _objects(*VARIANTS["gpu-keda"])
    server = _server(objects)
    assert server["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in _pod(objects)[
        "tolerations"
    ]
    assert all(d["metadata"].get("namespace") == "llm" for k, d in objects.items() if k != "Namespace")
    assert objects["Namespace"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert server["image"] == "kennel:cuda"  # deploy/docker/Dockerfile.cuda
    cpu_only = _server(_objects(*VARIANTS["cpu-keda"]))
    assert "nvidia.com/gpu" not in cpu_only["resources"]["limits"] and cpu_only["image"] == "kennel:cpu"
    amd = _objects("--model", "qwen2.5-7b", "--gpu", "MI300X", "--image", "registry.example/kennel:rocm")
    assert _server(amd)["resources"]["limits"]["amd.com/gpu"] == 1
    assert _server(amd)["image"] == "registry.example/kennel:rocm"


def test_volume_access_and_rollout_follow_the_replica_range() -> None:
    one = _objects(*VARIANTS["cpu-one-replica-hpa"])
    assert one["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert one["Deployment"]["spec"]["strategy"] == {"type": "Recreate"}
    assert one["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    many = _objects(*VARIANTS["gpu-keda"])
    assert many["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadOnlyMany"]
    assert many["Deployment"]["spec"]["strategy"]["type"] == "RollingUpdate"
    assert many["PodDisruptionBudget"]["spec"]["minAvailable"] == 1
    # one pod and a ReadWriteOnce claim, with a bundle too: replaced, not rolled
    bundled = _objects("--model", "qwen2.5-0.5b", "--replicas", "1", "--bundle", "q.tar")
    assert bundled["Deployment"]["spec"]["strategy"] == {"type": "Recreate"}
    # the claim holds the file with headroom: 7.95 GiB x 1.25 + 1 GiB
    assert many["PersistentVolumeClaim"]["spec"]["resources"]["requests"]["storage"] == "11Gi"


def test_a_bundle_is_imported_by_an_init_container(tmp_path: Path) -> None:
    bundle = tmp_path / "qwen.tar"
    with bundle.open("wb") as f:  # sparse: only its size matters here
        f.truncate(5 * 2**30)
    objects = _objects("--model", "qwen2.5-0.5b", "--replicas", "2..3", "--bundle", str(bundle))
    pod = _pod(objects)
    (init,) = pod["initContainers"]
    assert init["command"] == ["kennel", "import", "/bundles/qwen.tar", "--name", "qwen2.5-0.5b"]
    assert {m["mountPath"] for m in init["volumeMounts"]} >= {"/bundles", "/var/lib/kennel"}
    assert "models" not in {m["name"] for m in _server(objects)["volumeMounts"]}
    serve = yaml.safe_load(objects["ConfigMap"]["data"]["serve.yaml"])
    assert serve["models"][0]["model"] == "qwen2.5-0.5b"  # from the pod's store, not a path
    # sized from the bundle on disk: 5 GiB x 1.25 + 1 GiB, in the claim and in the pod's store
    assert objects["PersistentVolumeClaim"]["spec"]["resources"]["requests"]["storage"] == "8Gi"
    home = next(v for v in pod["volumes"] if v["name"] == "home")
    assert home["emptyDir"]["sizeLimit"] == "8Gi"
    assert _server(objects)["resources"]["requests"]["ephemeral-storage"] == "8Gi"
    plain = _objects(*VARIANTS["cpu-keda"])
    assert "initContainers" not in _pod(plain)
    assert yaml.safe_load(plain["ConfigMap"]["data"]["serve.yaml"])["models"][0]["model"] == (
        "/models/qwen2.5-0.5b-instruct-q8_0.gguf"
    )


def test_autoscalers_scale_on_the_queue() -> None:
    keda = _objects(*VARIANTS["gpu-keda"])
    parallel = yaml.safe_load(keda["ConfigMap"]["data"]["serve.yaml"])["models"][0]["parallel"]
    so = keda["ScaledObject"]["spec"]
    assert (so["minReplicaCount"], so["maxReplicaCount"]) == (2, 6)
    assert so["scaleTargetRef"]["name"] == keda["Deployment"]["metadata"]["name"]
    (trigger,) = so["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger["metadata"]["query"].startswith('sum(kennel_requests_waiting{model="llama-3.1-8b"')
    assert 'namespace="llm"' in trigger["metadata"]["query"]
    assert trigger["metadata"]["threshold"] == str(max(1, parallel // 2))
    out, _ = deploy(*VARIANTS["cpu-one-replica-hpa"])
    hpa = next(d for d in documents(out) if d["kind"] == "HorizontalPodAutoscaler")
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["metric"]["name"] == "kennel_requests_waiting"
    assert metric["external"]["metric"]["selector"]["matchLabels"]["model"] == "qwen2.5-0.5b"
    assert "externalRules:" in out and "seriesQuery: 'kennel_requests_waiting" in out  # the adapter rule


def test_monitoring_and_checkups() -> None:
    out, err = deploy(*VARIANTS["cpu-keda"])
    objects = {d["kind"]: d for d in documents(out)}
    assert "metrics_public: true" in objects["ConfigMap"]["data"]["serve.yaml"]
    assert "scrapes /metrics without an API key" in objects["ConfigMap"]["data"]["serve.yaml"]
    (endpoint,) = objects["ServiceMonitor"]["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")
    job = objects["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    name = objects["Service"]["metadata"]["name"]
    assert job["command"][:5] == ["kennel", "checkup", "run", "--url", f"http://{name}:8484/v1"]
    key = next(e for e in job["env"] if e["name"] == "KENNEL_API_KEY")
    assert key["valueFrom"]["secretKeyRef"]["name"] == "kennel-checkup-key"
    # people read the Secret commands on stderr; stdout stays pure YAML for kubectl
    assert "kennel keys export -o keys.json && kubectl create secret generic kennel-keys" in err
    assert "--from-file=keys.json" in err
