"""What every manifest is made from (``DeploySpec``), what each becomes (``Manifest``), and the
pieces the objects share: names, labels, the image's paths, the pods' security settings."""

from __future__ import annotations

import math
import re
import textwrap
from dataclasses import dataclass, field
from typing import Any, Literal

from kennel.deploy.scale import Replicas, ScaleOut
from kennel.deploy.sizing import ReplicaSize
from kennel.units import GiB, MiB

Autoscaler = Literal["keda", "hpa"]
PORT = 8484
UID = 10001  # the image's user (deploy/docker/Dockerfile)
HOME = "/var/lib/kennel"  # KENNEL_HOME in the image
CONFIG = "/etc/kennel/serve.yaml"
KEYS_DIR = "/etc/kennel/keys"
MODELS_DIR = "/models"
BUNDLES_DIR = "/bundles"
# the images deploy/docker builds: Dockerfile (CPU) and Dockerfile.cuda (NVIDIA)
IMAGES = {None: "kennel:cpu", "nvidia.com/gpu": "kennel:cuda"}
DEFAULT_IMAGE = IMAGES[None]
DEFAULT_PROMETHEUS = "http://prometheus-operated.monitoring.svc:9090"
DEFAULT_CHECKUP_SCHEDULE = "17 * * * *"
KEYS_SECRET = "kennel-keys"
CHECKUP_SECRET = "kennel-checkup-key"
# a claim holds the file, plus room for the filesystem's own use and for a copy interrupted
# half way (a second model wants its own claim)
PVC_HEADROOM = 1.25
PVC_SLACK = 1 * GiB
# the slowest storage a model is read from at start (network volumes: ~50 MB/s), plus a
# minute or two for llama.cpp to set up; the startup probe allows that before liveness counts
LOAD_BYTES_PER_S = 50e6
LOAD_BASE_S = 120
PROBE_PERIOD_S = 10


@dataclass(frozen=True)
class DeploySpec:
    """Everything the manifests depend on. ``command`` is the `kennel deploy k8s` line that
    makes them, written at the top of every file so it can be run again."""

    size: ReplicaSize
    replicas: Replicas
    command: str
    scale: ScaleOut | None = None
    app: str | None = None  # object names (default: kennel-MODEL)
    namespace: str | None = None
    image: str = DEFAULT_IMAGE
    autoscaler: Autoscaler = "keda"
    bundle: str | None = None  # the bundle's file name in the claim
    bundle_size: int | None = None
    storage_class: str | None = None
    prometheus_url: str = DEFAULT_PROMETHEUS
    checkup_schedule: str = DEFAULT_CHECKUP_SCHEDULE

    @property
    def name(self) -> str:
        return self.app or dns_label("kennel-" + self.size.name)

    @property
    def shared(self) -> bool:
        """More than one pod mounts the claim: ReadOnlyMany."""
        return self.replicas.max > 1

    @property
    def threshold(self) -> int:
        """Waiting requests per replica before another is added: half a batch. A replica frees a
        slot every response time / parallel, so a queue of parallel / 2 adds half a response
        time to a request's wait: worth a replica, and not so eager that a burst starts one."""
        return max(1, self.size.parallel // 2)


@dataclass(frozen=True)
class Manifest:
    """One object, the file it goes in, and the comment heading that file."""

    file: str
    comment: tuple[str, ...]
    body: dict[str, Any] = field(hash=False)

    @property
    def kind(self) -> str:
        return str(self.body["kind"])


def dns_label(text: str) -> str:
    """A Service-safe name (RFC 1035 label, room left for suffixes): qwen2.5-0.5b -> qwen2-5-0-5b."""
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:40].rstrip("-")
    return label if label and label[0].isalpha() else f"kennel-{label}".rstrip("-")


def secret_commands(spec: DeploySpec) -> list[str]:
    """The Secrets the manifests mount but do not contain: keys are made where kennel runs."""
    ns = f" -n {spec.namespace}" if spec.namespace else ""
    return [
        f"KEY=$(kennel keys create checkup --model {spec.size.name})",
        f"kennel keys export -o keys.json && kubectl{ns} create secret generic {KEYS_SECRET} "
        "--from-file=keys.json",
        f'kubectl{ns} create secret generic {CHECKUP_SECRET} --from-literal=api-key="$KEY"',
    ]


def labels(spec: DeploySpec, component: str = "server") -> dict[str, str]:
    return {**selector(spec, component), "app.kubernetes.io/part-of": "kennel"}


def selector(spec: DeploySpec, component: str = "server") -> dict[str, str]:
    """The server's pods, and not the checkup Jobs' (component: checkup) beside them."""
    return {
        "app.kubernetes.io/name": "kennel",
        "app.kubernetes.io/instance": spec.name,
        "app.kubernetes.io/component": component,
    }


def meta(spec: DeploySpec, name: str, component: str = "server") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if spec.namespace:
        meta["namespace"] = spec.namespace
    meta["labels"] = labels(spec, component)
    return meta


def mebibytes(n: int) -> str:
    return f"{math.ceil(n / MiB)}Mi"


def gibibytes(n: float) -> str:
    return f"{math.ceil(n / GiB)}Gi"


def para(text: str) -> list[str]:
    """Prose for a file's heading, wrapped to read in a 100-column editor."""
    return textwrap.wrap(text, width=100, break_on_hyphens=False)


def made_by(spec: DeploySpec) -> list[str]:
    return [f"Made by: {spec.command}", "(run it again, changed, rather than resizing by hand)"]


def container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        # volumes (the home, the claim) are group-writable by the image's user
        "fsGroup": UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def home_size(spec: DeploySpec) -> int:
    """KENNEL_HOME in the pod: logs and the keys' state, plus the imported model with a bundle."""
    return with_headroom(spec.bundle_size or spec.size.file_size) if spec.bundle else GiB


def with_headroom(n: int) -> int:
    return math.ceil((n * PVC_HEADROOM + PVC_SLACK) / GiB) * GiB


def startup_seconds(spec: DeploySpec) -> int:
    return LOAD_BASE_S + math.ceil(spec.size.file_size / LOAD_BYTES_PER_S)
