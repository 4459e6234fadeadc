"""`kennel fit --measure`: build the model's exact shape locally, time it, calibrate.

No weights are downloaded: the synthetic GGUF has the model's tensors, types and vocabulary size
with random values, which llama.cpp runs at the same speed as the real thing (speed depends on
shapes and types, not on what the numbers are).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from gguf import LlamaFileType

from kennel.errors import MeasureError
from kennel.fit import calibration
from kennel.fit import quant as q
from kennel.fit.estimate import size_option
from kennel.fit.llamacpp_run import BenchResult, bench
from kennel.fit.memory import RunConfig
from kennel.fit.speed import Calibration, decode, prefill
from kennel.hardware.profile import HardwareProfile
from kennel.model.layout import tensor_layout
from kennel.model.shape import ModelShape
from kennel.model.synthetic import write_synthetic_gguf
from kennel.settings import KennelHome
from kennel.units import GiB, fmt_bytes

# architectures whose synthetic files llama.cpp loads with kennel's metadata and tensor layout
MEASURABLE_ARCHS = {"llama", "qwen2", "qwen3", "qwen3moe", "gemma2", "gemma3"}
MEASURE_CTX = 4096
PROMPT_TOKENS = 512
GEN_TOKENS = 64

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class MeasureResult:
    quant: str
    path: Path
    proxy_note: str
    build_seconds: float
    bench: BenchResult
    gpu_layers: int
    estimated_decode: float
    estimated_prefill: float
    decode_ratio: float
    prefill_ratio: float
    calibration: Calibration
    estimated_buffers: int


def measurable_shape(shape: ModelShape) -> tuple[ModelShape, str]:
    """The shape to build: the model's own, or a llama-architecture one of the same size."""
    if shape.arch in MEASURABLE_ARCHS and not shape.is_mla and not shape.recurrent_layers:
        return replace(shape, tensors=tensor_layout(shape)), ""
    proxy = replace(
        shape,
        arch="llama",
        kv_lora_rank=0,
        mla_rope_dim=0,
        recurrent_layers=(),
        n_swa=0,
        swa_layers=(),
        n_head_kv=tuple(max(h, 1) for h in shape.n_head_kv),
        n_head=tuple(max(h, 1) for h in shape.n_head),
        n_ff=tuple(f or 0 for f in shape.n_ff),
    )
    proxy = replace(proxy, tensors=tensor_layout(proxy))
    return (
        proxy,
        f"measured as a llama-architecture model of the same dimensions "
        f"({shape.arch} has no synthetic builder)",
    )


def _types_for(shape: ModelShape, built: ModelShape, quant: str) -> dict[str, int]:
    s = q.scheme(quant)
    if s.kind != "gguf" or s.ftype is None:
        raise MeasureError(
            f"{quant} is a format for GPU engines, which kennel cannot time with llama.cpp.",
            hint="Measure a GGUF quantization, e.g. --quant Q4_K_M.",
        )
    types = q.tensor_types(built, LlamaFileType(s.ftype))
    if shape.source_kind == "gguf" and shape.file_type and q.scheme_for_file(shape.file_type) == s:
        # the file's own mix may differ from the standard one (imatrix, custom rules): copy it by name
        own = {t.name: t.ggml_type for t in shape.tensors}
        types = {n: own.get(n, t) for n, t in types.items()}
    return types


def synthetic_path(home: KennelHome, shape: ModelShape, types: dict[str, int], quant: str) -> Path:
    key = json.dumps(
        {
            "arch": shape.arch,
            "tensors": [(t.name, t.shape) for t in shape.tensors],
            "types": types,
            "vocab": shape.n_vocab,
            "swa": [shape.n_swa, list(shape.swa_layers)],
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return home.synthetic_dir / f"{shape.arch}-{shape.n_layer}L-{shape.n_embd}-{quant}-{digest}.gguf"


def build_synthetic(
    home: KennelHome,
    built: ModelShape,
    types: dict[str, int],
    quant: str,
    *,
    weights: int,
    progress: Progress | None = None,
) -> tuple[Path, float]:
    """The synthetic GGUF of this exact shape and quantization (built once, cached);
    seconds spent building."""
    path = synthetic_path(home, built, types, quant)
    if path.exists():
        return path, 0.0
    free = shutil.disk_usage(home.ensure().root).free
    if free < weights + GiB // 2:
        raise MeasureError(
            f"Building the {fmt_bytes(weights)} test model needs that much free disk in "
            f"{home.root}; {fmt_bytes(free)} is free.",
            hint="Free some space or set KENNEL_HOME elsewhere.",
        )
    t0 = time.perf_counter()
    write_synthetic_gguf(
        path,
        built,
        tensor_types=types,
        block_cache=home.synthetic_dir / "blocks",
        progress=(lambda d, t: progress("build", d, t)) if progress else None,
    )
    return path, time.perf_counter() - t0


def synthetic_model(home: KennelHome, shape: ModelShape, quant: str) -> Path:
    """A shape-realistic model with random weights at a real quantization, for benchmarks."""
    built, _ = measurable_shape(shape)
    types = _types_for(shape, built, quant)
    return build_synthetic(home, built, types, quant, weights=q.weights_bytes(built, types))[0]


def measure(
    shape: ModelShape,
    hw: HardwareProfile,
    run: RunConfig,
    *,
    quant: str,
    home: KennelHome,
    progress: Progress | None = None,
    record: bool = True,
) -> MeasureResult:
    if hw.source != "probed":
        raise MeasureError("--measure times this machine; it cannot be combined with --gpu/--ram/--hardware.")
    built, proxy_note = measurable_shape(shape)
    types = _types_for(shape, built, quant)
    mrun = replace(run, ctx=min(run.ctx, MEASURE_CTX), parallel=1)
    can_offload = hw.llama is not None and hw.llama.gpu_offload
    plan_hw = hw if can_offload else replace(hw, gpus=())
    sized = size_option(built, plan_hw, mrun, types)
    if sized.placement.fits == "no":
        raise MeasureError(
            f"{shape.name} at {quant} does not fit this machine ({fmt_bytes(sized.memory.total)} needed), "
            "so it cannot be measured.",
            hint="Measure a smaller quantization or a shorter --ctx.",
        )
    path, build_seconds = build_synthetic(
        home, built, types, quant, weights=sized.memory.weights, progress=progress
    )
    ngl = sized.placement.gpu_layers if can_offload else 0
    if progress:
        progress("run", 0, 1)
    result = bench(
        path,
        built,
        mrun,
        n_gpu_layers=ngl,
        prompt_tokens=PROMPT_TOKENS,
        gen_tokens=GEN_TOKENS,
        threads=hw.cpu.cores,
    )
    if progress:
        progress("run", 1, 1)
    fill = result.prompt_tokens + result.gen_tokens // 2
    est_dec = decode(sized.parts, sized.placement, plan_hw, sized.inputs, Calibration(), fill=fill).expected
    est_pre = prefill(
        sized.parts, sized.placement, plan_hw, sized.inputs, Calibration(), prompt=result.prompt_tokens
    ).expected
    dec_ratio = result.decode_tok_s / est_dec if est_dec else 1.0
    pre_ratio = result.prefill_tok_s / est_pre if est_pre else 1.0
    backend = calibration.backend_of(plan_hw, ngl)
    cal = (
        calibration.record(home, hw, backend, quant=quant, decode_ratio=dec_ratio, prefill_ratio=pre_ratio)
        if record
        else calibration.load(home, hw, backend)
    )
    return MeasureResult(
        quant=quant,
        path=path,
        proxy_note=proxy_note,
        build_seconds=build_seconds,
        bench=result,
        gpu_layers=ngl,
        estimated_decode=est_dec,
        estimated_prefill=est_pre,
        decode_ratio=dec_ratio,
        prefill_ratio=pre_ratio,
        calibration=cal,
        estimated_buffers=sized.memory.llama_buffers,
    )
