"""The Kubernetes objects that run `kennel serve` for one model: pure data in, dicts out.

    Namespace        (when one is given) with the restricted Pod Security level
    ConfigMap        serve.yaml: the model, its context, parallel requests, threads
    Deployment       the server pods, sized by ``sizing``; probes; non-root; the keys Secret
    Service          ClusterIP, port 8484 named http
    PVC              the model file (or the bundle an init container imports)
    PDB              keeps one pod up through node drains
    ServiceMonitor   Prometheus scrapes /metrics
    CronJob          golden-prompt checkups against the Service, not each pod
    ScaledObject     KEDA scaling on kennel_requests_waiting (or an HPA through prometheus-adapter)

Each object (``workload``, ``autoscale``, from a ``spec.DeploySpec``) comes with the comment that
heads its file: what it does, what to edit, and for the Deployment and the autoscaler the sizing
arithmetic. ``render`` turns them into YAML.
"""

from __future__ import annotations

from kennel.deploy.autoscale import hpa, keda_scaled_object, service_monitor
from kennel.deploy.spec import (
    DEFAULT_CHECKUP_SCHEDULE,
    DEFAULT_IMAGE,
    DEFAULT_PROMETHEUS,
    IMAGES,
    DeploySpec,
    Manifest,
    dns_label,
    made_by,
    secret_commands,
)
from kennel.deploy.workload import (
    checkup_cronjob,
    claim,
    configmap,
    deployment,
    disruption_budget,
    namespace,
    service,
)

__all__ = [
    "DEFAULT_CHECKUP_SCHEDULE",
    "DEFAULT_IMAGE",
    "DEFAULT_PROMETHEUS",
    "IMAGES",
    "DeploySpec",
    "Manifest",
    "build",
    "dns_label",
    "kustomization",
    "secret_commands",
]


def build(spec: DeploySpec) -> list[Manifest]:
    out = [namespace(spec)] if spec.namespace else []
    out += [
        configmap(spec),
        deployment(spec),
        service(spec),
        claim(spec),
        disruption_budget(spec),
        service_monitor(spec),
        checkup_cronjob(spec),
        keda_scaled_object(spec) if spec.autoscaler == "keda" else hpa(spec),
    ]
    return out


def kustomization(spec: DeploySpec, manifests: list[Manifest]) -> Manifest:
    """kustomization.yaml listing the files, so the folder is a Kustomize base (kubectl apply -k)."""
    body = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [m.file for m in manifests],
    }
    comment = [
        *made_by(spec),
        "A Kustomize base: `kubectl apply -k DIR` (create the Secrets first: see deployment.yaml).",
        "Keep your changes in an overlay, a kustomization.yaml in another folder, e.g.:",
        "  resources: [../k8s]   # the path to this folder",
        "  namespace: llm",
        "  images:",
        f"    - name: {spec.image.rsplit(':', 1)[0]}",
        "      newName: registry.example.com/kennel",
        '      newTag: "1.0"   # your build of deploy/docker, by a tag you do not move',
        "  labels:",
        "    - {pairs: {release: prometheus}}   # what your Prometheus selects ServiceMonitors by",
        "Sizing (memory, CPU, replicas, the PVC) comes from the model: regenerate with the command above",
        "for another model, context or load rather than editing the numbers.",
    ]
    return Manifest("kustomization.yaml", tuple(comment), body)
