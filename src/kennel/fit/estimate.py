"""The fit report: every quantization of a model on one machine, and which one to use."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Literal

from gguf import LlamaFileType

from kennel.fit import quant as q
from kennel.fit.memory import (
    BACKEND_OVERHEAD,
    CTX_PAD,
    MemoryEstimate,
    RunConfig,
    compute_buffer,
    cparams,
    kv_cache_per_layer,
    layer_weights,
    output_buffer,
)
from kennel.fit.placement import DeviceUse, Fits, ModelParts, Placement, plan
from kennel.fit.repack import layer_repack, rules_for
from kennel.fit.speed import Calibration, Range, SpeedInputs, decode, prefill
from kennel.hardware.profile import HardwareProfile
from kennel.model.shape import ModelShape
from kennel.units import GiB, fmt_bytes

READABLE_TOK_S = 10.0  # a reply streams faster than people read
RECOMMENDABLE = (
    "Q8_0",
    "Q6_K",
    "Q5_K_M",
    "Q4_K_M",
    "Q4_K_S",
    "IQ4_XS",
    "Q3_K_L",
    "Q3_K_M",
    "IQ3_M",
    "Q3_K_S",
    "Q2_K",
    "IQ2_M",
)
GOOD_ENOUGH = {"Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_K_S", "IQ4_XS"}
ENGINE_UTILIZATION = 0.9  # vLLM's default gpu_memory_utilization
ENGINE_ACTIVATIONS = int(1.5 * GiB)  # activations for a 2048-token batch and CUDA graphs
DEFAULT_CTX = 8192


@dataclass(frozen=True)
class FitOption:
    quant: str
    kind: Literal["gguf", "engine"]
    is_file: bool
    memory: MemoryEstimate
    placement: Placement
    max_context: int
    decode_tok_s: Range
    prefill_tok_s: Range
    note: str = ""

    @property
    def fits(self) -> Fits:
        return self.placement.fits


@dataclass(frozen=True)
class FitReport:
    shape: ModelShape
    hardware: HardwareProfile
    run: RunConfig
    n_ctx: int  # what llama.cpp allocates after padding
    options: tuple[FitOption, ...]
    recommended: str | None
    reason: str
    calibrated: bool
    notes: tuple[str, ...] = field(default=())


def default_run(shape: ModelShape, **overrides: object) -> RunConfig:
    """kennel's engine defaults: 8k context (or the model's, if shorter), f16 KV, flash attention."""
    ctx = min(DEFAULT_CTX, shape.n_ctx_train) if shape.n_ctx_train else DEFAULT_CTX
    values = {k: v for k, v in overrides.items() if v is not None}
    return RunConfig(**{"ctx": ctx, **values})  # type: ignore[arg-type]


class _Sizer:
    """Memory parts of one shape under one run config, per quantization; compute is shared."""

    def __init__(self, shape: ModelShape, hw: HardwareProfile, run: RunConfig, gpu_offload: bool) -> None:
        self.shape, self.hw, self.run, self.gpu_offload = shape, hw, run, gpu_offload
        self.repack_rules = rules_for(hw)
        self._compute = lru_cache(maxsize=64)(self._compute_uncached)

    def _compute_uncached(self, ctx: int) -> tuple[int, int, bool]:
        run = replace(self.run, ctx=ctx)
        cpu, exact = compute_buffer(self.shape, run, alignment=32)
        gpu = compute_buffer(self.shape, run, alignment=128)[0] if self.hw.gpus else cpu
        return cpu, gpu, exact

    def parts(self, types: dict[str, int] | None, ctx: int) -> tuple[ModelParts, MemoryEstimate]:
        s, hw = self.shape, self.hw
        run = replace(self.run, ctx=ctx)
        lw = layer_weights(s, types)
        rp = layer_repack(s, types, self.repack_rules)
        kv = kv_cache_per_layer(s, run)
        cpu_c, gpu_c, exact = self._compute(ctx)
        t = cparams(s, run).reserve_tokens
        host = s.n_embd * t * 4 + 16 * t  # embeddings and small inputs before they cross to the GPU
        backend = hw.gpus[0].backend if hw.gpus and self.gpu_offload else "cpu"
        parts = ModelParts(
            input_weights=lw.input,
            layer_weights=lw.layers,
            layer_experts=lw.layer_experts,
            output_weights=lw.output,
            tied_copy=lw._tied_copy,
            layer_kv=tuple(kv),
            compute_gpu=gpu_c,
            compute_cpu=cpu_c,
            compute_host=host,
            output_buffer=output_buffer(s, run),
            gpu_overhead=BACKEND_OVERHEAD.get(backend, 0),
            cpu_overhead=BACKEND_OVERHEAD["cpu"],
            layer_repack=rp.layers,
            layer_repack_experts=rp.layer_experts,
            output_repack=rp.output,
            input_repack=rp.input,
        )
        mem = MemoryEstimate(
            weights=lw.total,
            kv_cache=sum(kv),
            compute=gpu_c if backend != "cpu" else cpu_c,
            output_buffer=parts.output_buffer,
            runtime_overhead=BACKEND_OVERHEAD["cpu"]
            + (BACKEND_OVERHEAD.get(backend, 0) if backend != "cpu" else 0),
            compute_exact=exact,
            layer_kv=tuple(kv),
            repack=rp.total,  # all on the CPU; place() narrows it to the placement's CPU part
        )
        return parts, mem

    def place(self, types: dict[str, int] | None, ctx: int) -> tuple[ModelParts, MemoryEstimate, Placement]:
        parts, mem = self.parts(types, ctx)
        placement = plan(parts, self.hw, gpu_offload=self.gpu_offload)
        return parts, replace(mem, repack=placement.repack), placement

    def max_context(self, types: dict[str, int] | None, fits: Fits) -> int:
        """Largest context (multiple of 256) keeping this placement class; for partial or CPU
        placements, the largest that fits at all."""
        if fits == "no":
            return 0
        want_gpu = fits == "gpu"
        limit = self.shape.n_ctx_train or 131072

        def ok(ctx: int) -> bool:
            p = self.place(types, ctx)[2]
            return p.fits == "gpu" if want_gpu else p.fits != "no"

        lo, hi = 1, max(limit // CTX_PAD, 1)
        if not ok(CTX_PAD):
            return 0
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if ok(mid * CTX_PAD):
                lo = mid
            else:
                hi = mid - 1
        return lo * CTX_PAD


@dataclass(frozen=True)
class SizedOption:
    """One quantization sized and placed, with what the speed model needs."""

    parts: ModelParts
    memory: MemoryEstimate
    placement: Placement
    inputs: SpeedInputs


def size_option(
    shape: ModelShape, hw: HardwareProfile, run: RunConfig, types: dict[str, int] | None
) -> SizedOption:
    """Memory and placement of ``shape`` with tensor ``types`` (None: the file's own) under ``run``."""
    run = run.validated(shape)
    parts, mem, place = _Sizer(shape, hw, run, gpu_offload=True).place(types, run.ctx)
    return SizedOption(parts, mem, place, speed_inputs(shape, run))


def speed_inputs(shape: ModelShape, run: RunConfig) -> SpeedInputs:
    cells = cparams(shape, run).n_ctx * 1 or 1
    kv_total = sum(kv_cache_per_layer(shape, run))
    frac = shape.n_expert_used / shape.n_expert if shape.n_expert else 1.0
    return SpeedInputs(
        active_params=shape.n_params_active,
        n_layer=shape.n_layer,
        attn_dim=shape.n_head[0] * shape.head_dim_k if shape.n_head else 0,
        kv_bytes_per_cell=kv_total // cells,
        expert_fraction=frac,
    )


def _gguf_option(
    sizer: _Sizer,
    name: str,
    types: dict[str, int] | None,
    is_file: bool,
    cal: Calibration,
    inputs: SpeedInputs,
    with_max_context: bool = True,
) -> FitOption:
    parts, mem, place = sizer.place(types, sizer.run.ctx)
    return FitOption(
        quant=name,
        kind="gguf",
        is_file=is_file,
        memory=mem,
        placement=place,
        max_context=sizer.max_context(types, place.fits) if with_max_context else 0,
        decode_tok_s=decode(parts, place, sizer.hw, inputs, cal) if place.fits != "no" else Range(0, 0, 0),
        prefill_tok_s=prefill(parts, place, sizer.hw, inputs, cal) if place.fits != "no" else Range(0, 0, 0),
        note=place.note,
    )


def _engine_option(
    shape: ModelShape, hw: HardwareProfile, run: RunConfig, s: q.QuantScheme, inputs: SpeedInputs
) -> FitOption:
    """GPU engines (vLLM and friends): weights and KV split evenly by tensor parallelism."""
    weights = q.engine_weights_bytes(shape, s)
    kv = sum(kv_cache_per_layer(shape, replace(run, kv_type="f16", flash_attn=True)))
    gpus = [g for g in hw.gpus if g.backend in ("cuda", "rocm")]
    n = len(gpus)
    overhead = BACKEND_OVERHEAD["cuda"] * max(n, 1)
    mem = MemoryEstimate(
        weights=weights,
        kv_cache=kv,
        compute=ENGINE_ACTIVATIONS * max(n, 1),
        output_buffer=0,
        runtime_overhead=overhead,
        compute_exact=False,
    )
    zero = Range(0, 0, 0)
    if not gpus:
        place = Placement("no", 0, shape.n_layer + 1, (), note="GPU engines (vLLM) need an NVIDIA or AMD GPU")
        return FitOption(s.name, "engine", False, mem, place, 0, zero, zero, note=place.note)
    per_gpu = (weights + kv) / n + ENGINE_ACTIVATIONS + BACKEND_OVERHEAD["cuda"]
    budget = min(g.total_memory for g in gpus) * ENGINE_UTILIZATION
    devs = tuple(DeviceUse(f"GPU{g.index} {g.name}", int(per_gpu), int(budget)) for g in gpus)
    fits: Fits = "gpu" if per_gpu <= budget else "no"
    tp = f"tensor-parallel over {n} GPUs" if n > 1 else "one GPU"
    place = Placement(
        fits, shape.n_layer + 1 if fits == "gpu" else 0, shape.n_layer + 1, devs, note=f"vLLM, {tp}"
    )
    max_ctx = 0
    if fits == "gpu":
        per_token = kv / max(cparams(shape, run).n_ctx, 1) / n
        room = budget - (weights / n + ENGINE_ACTIVATIONS + BACKEND_OVERHEAD["cuda"])
        max_ctx = min(
            int(room / per_token) // CTX_PAD * CTX_PAD if per_token else 0, shape.n_ctx_train or 131072
        )
    g = gpus[0]
    bw = (g.bandwidth_gbs or 300.0) * 1e9 * 0.7 * (n**0.8)
    active_bytes = weights * (shape.n_params_active / max(shape.n_params, 1))
    dec = 1.0 / (active_bytes / bw + shape.n_layer * 15e-6) if fits == "gpu" else 0.0
    pre = (g.fp16_tflops or 20.0) * 1e12 * 0.5 * n / (2.0 * inputs.active_params) if fits == "gpu" else 0.0
    return FitOption(
        s.name,
        "engine",
        False,
        mem,
        place,
        max_ctx,
        Range(dec * 0.6, dec, dec * 1.3),
        Range(pre * 0.6, pre, pre * 1.3),
        note=place.note,
    )


def estimate(
    shape: ModelShape,
    hw: HardwareProfile,
    run: RunConfig | None = None,
    *,
    calibration: Calibration | None = None,
    include_engines: bool = True,
    only: tuple[str, ...] = (),
    with_max_context: bool = True,
) -> FitReport:
    run = (run or default_run(shape)).validated(shape)
    cal = calibration or Calibration()
    gpu_offload = not (hw.llama is not None and hw.llama.installed and not hw.llama.gpu_offload)
    # plan with the GPUs the machine has even when this llama.cpp build cannot use them yet:
    # the fix is a rebuild (kennel doctor), and the note below says so
    sizer = _Sizer(shape, hw, run, gpu_offload=True)
    inputs = speed_inputs(shape, run)
    options: list[FitOption] = []
    file_scheme = q.scheme_for_file(shape.file_type) if shape.source_kind == "gguf" else None
    if shape.source_kind == "gguf":
        label = file_scheme.name if file_scheme else (shape.file_type or "file")
        options.append(_gguf_option(sizer, label, None, True, cal, inputs, with_max_context))
    for s in q.GGUF_SCHEMES:
        if only and s.name not in only:
            continue
        if file_scheme is not None and s.name == file_scheme.name:
            continue
        assert s.ftype is not None
        types = q.tensor_types(shape, LlamaFileType(s.ftype))
        options.append(_gguf_option(sizer, s.name, types, False, cal, inputs, with_max_context))
    # rows read from smallest to largest (nominal bits misorder e.g. Q3_K_L and IQ4_XS)
    options.sort(key=lambda o: (not o.is_file, o.memory.weights))
    if include_engines:
        for s in q.ENGINE_SCHEMES:
            if not only or s.name in only:
                options.append(_engine_option(shape, hw, run, s, inputs))
    recommended, reason = recommend(options, hw)
    notes = _notes(shape, hw, run, options, gpu_offload)
    return FitReport(
        shape=shape,
        hardware=hw,
        run=run,
        n_ctx=cparams(shape, run).n_ctx,
        options=tuple(options),
        recommended=recommended,
        reason=reason,
        calibrated=cal.measured,
        notes=tuple(notes),
    )


def _fast_memory(hw: HardwareProfile) -> str:
    if not hw.gpus:
        return "RAM"
    return "unified memory" if hw.unified_memory else "the GPU" if len(hw.gpus) == 1 else "the GPUs"


def recommend(options: list[FitOption], hw: HardwareProfile) -> tuple[str | None, str]:
    """Best quality that fits fully in fast memory and still streams at a readable speed."""
    gguf = {o.quant: o for o in options if o.kind == "gguf"}
    full = "gpu" if hw.gpus else "cpu"
    ranked = [gguf[n] for n in RECOMMENDABLE if n in gguf]
    where = _fast_memory(hw)
    fitting = [o for o in ranked if o.fits == full]
    readable = [o for o in fitting if o.decode_tok_s.expected >= READABLE_TOK_S]
    if readable and readable[0].quant in GOOD_ENOUGH:
        o = readable[0]
        better = next(
            (r for r in ranked if r.quant in GOOD_ENOUGH and ranked.index(r) < ranked.index(o)), None
        )
        why = (
            f"{o.quant} fits fully in {where} ({fmt_bytes(o.memory.total)}) "
            f"at ~{o.decode_tok_s.expected:.0f} tok/s"
        )
        if better is not None:
            why += f"; {better.quant} would need {fmt_bytes(better.memory.total)}"
            if better.fits == full:
                why += f" and decode at only ~{better.decode_tok_s.expected:.0f} tok/s"
        return o.quant, why + "."
    good = [o for o in fitting if o.quant in GOOD_ENOUGH]
    if good:
        # nothing good streams at a readable speed: take the fastest good-enough quantization,
        # preferring the common K-quant mixes, whose CPU kernels beat the i-quants' (which the
        # bytes-per-token model cannot see), when they are nearly as fast
        fastest = max(good, key=lambda x: x.decode_tok_s.expected)
        usual = [o for o in good if o.quant in ("Q4_K_M", "Q4_K_S", "Q4_0")]
        o = max(usual, key=lambda x: x.decode_tok_s.expected) if usual else fastest
        if o.decode_tok_s.expected < 0.85 * fastest.decode_tok_s.expected:
            o = fastest
        return o.quant, (
            f"{o.quant} fits fully in {where} but decodes at only ~{o.decode_tok_s.expected:.1f} tok/s here; "
            "larger quantizations are slower still. A smaller model, or a GPU, would be faster."
        )
    partial = [o for o in ranked if o.fits == "partial" and o.quant in GOOD_ENOUGH]
    if partial:
        o = max(partial, key=lambda x: x.decode_tok_s.expected) if not fitting else partial[0]
        p = o.placement
        where_layers = p.note or f"{p.gpu_layers} of {p.n_layers} layers on the GPU"
        return o.quant, (
            f"Nothing good enough fits fully in {where}; {o.quant} runs with {where_layers} "
            f"at ~{o.decode_tok_s.expected:.1f} tok/s."
        )
    if fitting:
        o = fitting[0]
        return o.quant, f"Only {o.quant} fits fully in {where}; expect a clear quality loss below 4 bits."
    any_fit = [o for o in ranked if o.fits != "no"]
    if any_fit:
        o = any_fit[0]
        return (
            o.quant,
            f"{o.quant} fits only partly "
            f"({o.placement.gpu_layers} of {o.placement.n_layers} layers on the GPU).",
        )
    smallest = min((o for o in gguf.values()), key=lambda o: o.memory.total, default=None)
    if smallest is None:
        return None, "No quantization was sized."
    need = smallest.memory.total
    have = hw.memory.available + sum(g.usable_memory for g in hw.gpus if not g.unified)
    return None, (
        f"Does not fit: even {smallest.quant} needs {fmt_bytes(need)} and this machine has "
        f"{fmt_bytes(have)} free; try a smaller model, a shorter --ctx, or more memory."
    )


def _notes(
    shape: ModelShape, hw: HardwareProfile, run: RunConfig, options: list[FitOption], gpu_offload: bool
) -> list[str]:
    notes = list(hw.notes)
    if shape.n_ctx_train and run.ctx > shape.n_ctx_train:
        notes.append(
            f"--ctx {run.ctx} is beyond the {shape.n_ctx_train} tokens the model was trained on; "
            "quality may drop past that point unless the model supports RoPE scaling."
        )
    if options and not options[0].memory.compute_exact:
        notes.append(
            f"The compute buffer of a {shape.arch} model is estimated with the llama graph of the same "
            "dimensions; weights and KV cache are exact."
        )
    if not gpu_offload and hw.gpus:
        notes.append(
            "This llama.cpp build has no GPU offload, so kennel's engine would run on the CPU "
            "until it is rebuilt (see `kennel doctor`)."
        )
    if any(o.memory.repack for o in options if o.kind == "gguf"):
        rules = rules_for(hw)
        notes.append(
            f"On this CPU llama.cpp repacks the {'/'.join(rules.types())} weights it multiplies with into a "
            "second copy in RAM, next to the mapped file (the repack column, counted in the total)"
            + ("; AMX's copies are sized approximately." if rules.amx else ".")
        )
    if shape.source_kind != "gguf":
        notes.append(
            "Weights are sized from the model's shape with llama.cpp's quantization rules "
            "(byte-exact for the standard mixes), not from a downloaded file."
        )
    return notes
