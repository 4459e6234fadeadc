"""One replica of `kennel serve`, sized with the functions `kennel fit` and `kennel serve` use:
the quantization, the requests decoded together, the memory the pod needs and how fast it
answers. Nothing here re-derives a figure the fit code already gives; this module only adds
what a pod needs beyond llama.cpp (kennel's own process, the prompt cache); the batched
throughput is kennel.fit.throughput's, which `kennel cost` sizes boxes with too."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from gguf import LlamaFileType

from kennel.catalog import entries as catalog
from kennel.catalog.resolve import ResolvedModel
from kennel.errors import InvalidOptionError
from kennel.fit.estimate import FitOption, FitReport, SizedOption, default_run, estimate, size_option
from kennel.fit.memory import kv_cache_per_layer
from kennel.fit.quant import scheme, tensor_types
from kennel.fit.serving import serve_parallel, with_threads
from kennel.fit.speed import Calibration
from kennel.fit.throughput import Throughput as Throughput  # re-exported: deploy's callers use it
from kennel.fit.throughput import throughput
from kennel.hardware.profile import HardwareProfile
from kennel.store.add import default_name
from kennel.units import MiB, fmt_bytes

# kennel's own process around llama.cpp: Python, FastAPI/uvicorn, the tokenizer's vocabulary,
# Prometheus registries; ~300 MiB resident when measured with a small model, rounded up
KENNEL_OVERHEAD = 512 * MiB
# the floor `kennel serve` gives its prompt cache (server/models.py DEFAULT_PROMPT_CACHE); the
# deploy writes the figure into serve.yaml, so the pod's memory and the server's budget agree
PROMPT_CACHE_MIN = 256 * MiB
HUB = "https://huggingface.co"  # not HF_ENDPOINT: a manifest should not depend on who wrote it
# Kubernetes' extended resource for each vendor's device plugin
GPU_RESOURCES = {"nvidia": "nvidia.com/gpu", "amd": "amd.com/gpu", "intel": "gpu.intel.com/i915"}


@dataclass(frozen=True)
class ReplicaRequest:
    """What the user asked of one replica; None: what `kennel fit` / `kennel serve` would pick."""

    quant: str | None = None
    ctx: int | None = None
    parallel: int | None = None
    cpus: int = 4
    prompt_tokens: int = 512
    output_tokens: int = 256


@dataclass(frozen=True)
class ReplicaSize:
    """One replica: what it serves, where, and what the pod must reserve for it."""

    name: str  # the model id clients send
    source: str  # what the user named: a catalog name, hf.co/..., a path
    quant: str
    file_name: str
    file_size: int
    download_url: str | None
    ctx: int
    parallel: int
    threads: int
    hardware: str
    gpu_resource: str | None
    gpu_count: int
    fit_total: int  # `kennel fit`'s total for model x quant x ctx x parallel on this hardware
    vram: int  # of which on the GPUs
    ram: int  # of which in the pod's memory
    prompt_cache: int
    throughput: Throughput

    @property
    def overhead(self) -> int:
        return KENNEL_OVERHEAD

    @property
    def memory(self) -> int:
        """The pod's memory request and limit, rounded up to whole MiB."""
        return math.ceil((self.ram + self.prompt_cache + self.overhead) / MiB) * MiB

    def lines(self) -> list[str]:
        where = f"{self.gpu_count} x GPU" if self.gpu_resource else f"{self.threads} CPU threads"
        memory = [
            f"model: {self.source} as {self.name}, {self.quant} "
            f"({self.file_name}, {fmt_bytes(self.file_size)})",
            f"replica: {self.hardware}; ctx {self.ctx} x {self.parallel} requests at once on {where}",
            f"kennel fit total: {fmt_bytes(self.fit_total)}"
            + (f" = {fmt_bytes(self.vram)} on the GPU + {fmt_bytes(self.ram)} in RAM" if self.vram else ""),
            f"pod memory = {fmt_bytes(self.ram)} (llama.cpp in RAM) + {fmt_bytes(self.prompt_cache)} "
            f"(prompt cache) + {fmt_bytes(self.overhead)} (kennel's process) = {self.memory // MiB} Mi",
        ]
        return memory + self.throughput.lines()


def size_replica(
    resolved: ResolvedModel, hw: HardwareProfile, req: ReplicaRequest, *, calibration: Calibration
) -> ReplicaSize:
    """Size one replica of ``resolved`` on ``hw`` (a node; ``req.cpus`` of its cores) as `kennel
    fit` would, and refuse one that would not fit fully in the GPU (or, without one, in RAM):
    a pod spilling layers out of the GPU would be slower than another replica is worth."""
    shape = resolved.shape
    hw = with_threads(hw, req.cpus)
    run = default_run(shape, ctx=req.ctx).validated(shape)
    report = estimate(
        shape,
        hw,
        run,
        calibration=calibration,
        include_engines=False,
        only=_choices(resolved, req.quant),
        with_max_context=False,
    )
    option = _pick(report, resolved, req.quant)
    types = None if option.is_file else tensor_types(shape, LlamaFileType(scheme(option.quant).ftype or 0))
    base = replace(report.run, parallel=1)
    parallel = req.parallel or serve_parallel(shape, hw, base, types)
    sized = size_option(shape, hw, replace(base, parallel=parallel), types)
    _check_fits(resolved, hw, option.quant, sized, ctx=run.ctx, parallel=parallel)
    place = sized.placement
    vram = sum(d.used for d in place.devices if d.name != "RAM")
    ram = sum(d.used for d in place.devices if d.name == "RAM") or sized.memory.total - vram
    kv_one = sum(kv_cache_per_layer(shape, replace(base, parallel=parallel))) // parallel
    file_name, url = _file(resolved, option)
    return ReplicaSize(
        name=_served_name(resolved, file_name),
        source=resolved.ref,
        quant=option.quant,
        file_name=file_name,
        file_size=resolved.file_size if option.is_file and resolved.file_size else sized.memory.weights,
        download_url=url,
        ctx=run.ctx,
        parallel=parallel,
        threads=req.cpus,
        hardware=hw.describe(),
        gpu_resource=_gpu_resource(hw),
        gpu_count=len(hw.gpus),
        fit_total=sized.memory.total,
        vram=vram,
        ram=ram,
        prompt_cache=max(kv_one, PROMPT_CACHE_MIN),
        throughput=throughput(sized, hw, calibration, parallel, req.prompt_tokens, req.output_tokens),
    )


def _choices(resolved: ResolvedModel, quant: str | None) -> tuple[str, ...]:
    """The quantizations to size: the one asked for; a GGUF's own; or, for a catalog model, those
    its repo publishes (a deployment must name a file that exists)."""
    if resolved.shape.source_kind == "gguf":
        return ("__file_only__",)
    if quant is not None:
        s = scheme(quant)
        if s.ftype is None:
            raise InvalidOptionError(
                f"--quant {s.name} is a format for vLLM; kennel's image serves GGUF with llama.cpp.",
                hint="Give a GGUF quantization such as Q4_K_M or Q8_0.",
            )
        return (s.name,)
    entry = catalog.find(resolved.ref.split(":")[0]) if resolved.kind == "catalog" else None
    return entry.gguf.quants if entry is not None and entry.gguf is not None else ()


def _pick(report: FitReport, resolved: ResolvedModel, quant: str | None) -> FitOption:
    if resolved.shape.source_kind == "gguf":
        option = report.options[0]
        if quant is not None and scheme(quant).name != option.quant:
            raise InvalidOptionError(
                f"{resolved.ref} is a {option.quant} file; --quant {quant} names another one.",
                hint="Drop --quant, or point at the file of that quantization (hf.co/OWNER/REPO:QUANT).",
            )
        return option
    wanted = scheme(quant).name if quant is not None else report.recommended
    chosen = next((o for o in report.options if o.quant == wanted), None)
    if chosen is None:
        raise InvalidOptionError(
            f"{resolved.shape.name} does not fit {report.hardware.describe()}: {report.reason}",
            hint=_bigger_hint(resolved, report.hardware),
        )
    return chosen


def _check_fits(
    resolved: ResolvedModel, hw: HardwareProfile, quant: str, sized: SizedOption, *, ctx: int, parallel: int
) -> None:
    full = "gpu" if hw.gpus else "cpu"
    place = sized.placement
    if place.fits == full:
        return
    where = "the GPU" if hw.gpus else "RAM"
    if place.fits == "partial":
        got = f"only {place.gpu_layers} of {place.n_layers} layers would be on the GPU"
    else:
        got = "it does not fit at all"
    raise InvalidOptionError(
        f"{resolved.shape.name} {quant} does not fit in {where} of {hw.describe()} at ctx {ctx} "
        f"x {parallel} requests: it needs {fmt_bytes(sized.memory.total)}; {got}.",
        hint=_bigger_hint(resolved, hw),
    )


def _bigger_hint(resolved: ResolvedModel, hw: HardwareProfile) -> str:
    more = "--gpu-count 2 or a larger --gpu" if hw.gpus else "--ram, or --gpu"
    return (
        f"Try a smaller --quant, a shorter --ctx or a lower --parallel, or {more}; "
        f"`kennel fit {resolved.ref}"
        + (f" --gpu '{hw.gpus[0].name}'" if hw.gpus else "")
        + "` shows what fits."
    )


def _gpu_resource(hw: HardwareProfile) -> str | None:
    if not hw.gpus:
        return None
    vendor = hw.gpus[0].vendor
    if vendor not in GPU_RESOURCES:
        raise InvalidOptionError(
            f"Kubernetes has no device plugin for {hw.gpus[0].name} GPUs.",
            hint="Plan for a node GPU: NVIDIA (nvidia.com/gpu), AMD (amd.com/gpu) or Intel.",
        )
    return GPU_RESOURCES[vendor]


def _file(resolved: ResolvedModel, option: FitOption) -> tuple[str, str | None]:
    """The GGUF file a replica serves, and where it can be downloaded from (when known)."""
    if option.is_file and resolved.file_name:
        name = resolved.file_name.rsplit("/", 1)[-1]
        if resolved.kind == "gguf-url":
            return name, resolved.ref
        if resolved.kind == "gguf-hub":
            return name, f"{HUB}/{resolved.ref.removeprefix('hf.co/')}/resolve/main/{resolved.file_name}"
        return name, None
    entry = catalog.find(resolved.ref.split(":")[0]) if resolved.kind == "catalog" else None
    if entry is not None and entry.gguf is not None and option.quant in entry.gguf.quants:
        file = entry.gguf.file(option.quant)
        return file, f"{HUB}/{entry.gguf.repo}/resolve/main/{file}"
    stem = entry.name if entry is not None else default_name(resolved.shape.name + ".gguf")
    return f"{stem}-{option.quant}.gguf", None


def _served_name(resolved: ResolvedModel, file_name: str) -> str:
    if resolved.kind == "catalog":
        return resolved.ref.split(":")[0].strip().lower()
    return default_name(file_name)
