"""`kennel recommend`: the best catalog model x quantization for a machine, and why.

Every catalog model matching the task, language and licence filters is sized on the machine at
the quantizations people actually download; each model's best option is the one with the
highest quality proxy (catalog/quality.py) that fits and streams at a readable speed. Models
are ranked by that proxy. A second pass on the same machine with one more GPU (or twice the RAM
when there is no GPU) shows what an upgrade would unlock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from kennel.catalog.entries import CatalogEntry, License, license_of, select
from kennel.catalog.quality import dense_equivalent_b, quality_b, quant_loss_pct
from kennel.errors import InvalidOptionError
from kennel.fit.estimate import READABLE_TOK_S, FitOption, default_run, estimate
from kennel.fit.speed import Calibration
from kennel.hardware.profile import HardwareProfile, MemoryInfo
from kennel.hardware.whatif import what_if
from kennel.units import fmt_bytes

CANDIDATE_QUANTS = ("Q2_K", "IQ3_M", "Q3_K_M", "IQ4_XS", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0")
EMBEDDING_QUANTS = ("Q4_K_M", "Q8_0", "F16")


@dataclass(frozen=True)
class Pick:
    entry: CatalogEntry
    license: License
    option: FitOption
    quality_b: float
    readable: bool
    reason: str

    @property
    def quant(self) -> str:
        return self.option.quant


@dataclass(frozen=True)
class Recommendation:
    hardware: HardwareProfile
    picks: tuple[Pick, ...]
    upgrade: HardwareProfile | None
    upgrade_picks: tuple[Pick, ...]  # picks the upgrade makes possible or better
    considered: int


def _reason(e: CatalogEntry, o: FitOption, q: float, readable: bool) -> str:
    dense = dense_equivalent_b(e.params_b, e.active_params_b)
    loss = quant_loss_pct(o.quant, dense)
    where = {
        "gpu": "fully on the GPU",
        "cpu": "in RAM",
        "partial": o.placement.note or f"{o.placement.gpu_layers}/{o.placement.n_layers} layers on the GPU",
    }.get(o.fits, o.fits)
    size = f"{e.params_b:g}B" + (f" MoE ({e.active_params_b:g}B active)" if e.active_params_b else "")
    speed = (
        f"~{o.decode_tok_s.expected:.0f} tok/s" if readable else f"only ~{o.decode_tok_s.expected:.1f} tok/s"
    )
    return (
        f"{size} at {o.quant} (+{loss:.1f}% perplexity) is worth ~{q:.1f}B dense; "
        f"{fmt_bytes(o.memory.total)} {where}, {speed}"
    )


def _best_option(
    e: CatalogEntry, hw: HardwareProfile, ctx: int | None, cal: Calibration | None
) -> Pick | None:
    """The model's best quantization here: readable speed first, then quality; a fully-resident
    option wins over a partial offload unless the partial one is >10% better."""
    shape = e.shape()
    quants: tuple[str, ...] = EMBEDDING_QUANTS if e.embedding_only else CANDIDATE_QUANTS
    if e.gguf is not None:  # only what can be pulled
        quants = tuple(q for q in quants if q in e.gguf.quants) or quants
    run = default_run(shape, ctx=min(ctx, shape.n_ctx_train) if ctx and shape.n_ctx_train else ctx)
    report = estimate(
        shape, hw, run, calibration=cal, include_engines=False, only=quants, with_max_context=False
    )
    picks: list[Pick] = []
    for o in report.options:
        if o.fits == "no":
            continue
        fast = o.decode_tok_s.expected >= READABLE_TOK_S or e.embedding_only
        q = quality_b(e.params_b, e.active_params_b, o.quant)
        picks.append(Pick(e, license_of(e), o, q, fast, _reason(e, o, q, fast)))
    readable = [p for p in picks if p.readable]
    if not readable:
        # too slow at any quantization: offer a sound 4-bit one, not the fastest (and worst) Q2_K
        at_most_4bit = [p for p in picks if quant_loss_pct(p.quant, 8) >= quant_loss_pct("Q4_K_M", 8)]
        return max(at_most_4bit or picks, key=lambda p: p.quality_b, default=None)
    best = max(readable, key=lambda p: p.quality_b)
    resident = [p for p in readable if p.option.fits in ("gpu", "cpu")]
    if resident:
        best_resident = max(resident, key=lambda p: p.quality_b)
        if best_resident.quality_b >= 0.9 * best.quality_b:
            return best_resident
    return best


def best_quant(entry: CatalogEntry, hw: HardwareProfile, calibration: Calibration | None = None) -> str:
    """The quantization `kennel recommend` would pick for ``entry`` on ``hw`` (Q4_K_M if none fits)."""
    pick = _best_option(entry, hw, None, calibration)
    return pick.quant if pick is not None else "Q4_K_M"


def _rank(picks: list[Pick]) -> list[Pick]:
    """Readable first; then quality in ~7% steps; ties go to newer, general-purpose, faster."""

    def key(p: Pick) -> tuple[bool, int, str, bool, float]:
        bucket = round(math.log2(max(p.quality_b, 1e-3)) * 10)
        return (p.readable, bucket, p.entry.released, "chat" in p.entry.tasks, p.option.decode_tok_s.expected)

    return sorted(picks, key=key, reverse=True)


FIRST_GPU = "RTX 4090"  # the usual first card for local LLMs: 24 GB, widely sold


def upgraded(hw: HardwareProfile) -> HardwareProfile:
    """The next step up: one more of its GPU; a first GPU for a CPU-only machine (RAM bandwidth,
    not size, limits CPU decoding); twice the memory for unified-memory machines."""
    if not hw.unified_memory:
        extra = replace(hw.gpus[0] if hw.gpus else what_if(gpu=FIRST_GPU).gpus[0], index=len(hw.gpus))
        name = f"one more {extra.name} ({len(hw.gpus) + 1} in all)" if hw.gpus else f"an added {extra.name}"
        return replace(hw, gpus=(*hw.gpus, extra), source="what-if", name=name)
    mem = MemoryInfo(
        total=hw.memory.total * 2,
        available=hw.memory.available + hw.memory.total,
        bandwidth_gbs=hw.memory.bandwidth_gbs,
        bandwidth_source=hw.memory.bandwidth_source,
    )
    gpus = tuple(
        replace(
            g,
            total_memory=g.total_memory * 2,
            free_memory=g.free_memory + g.total_memory,
            working_set_limit=g.working_set_limit * 2 if g.working_set_limit else None,
        )
        for g in hw.gpus
    )
    return replace(
        hw,
        memory=mem,
        gpus=gpus,
        source="what-if",
        name=f"{mem.total / 2**30:.0f} GiB of memory (twice this)",
    )


def recommend(
    hw: HardwareProfile,
    *,
    task: str | None = None,
    lang: str | None = None,
    commercial: bool = False,
    ctx: int | None = None,
    top: int = 10,
    with_upgrade: bool = True,
    calibration: Calibration | None = None,
) -> Recommendation:
    if top < 1:
        raise InvalidOptionError("--top must be at least 1.")
    candidates = [
        e
        for e in select(task=task, lang=lang, commercial=commercial)
        if (task == "embedding" or not e.embedding_only) and (task == "guard" or not e.guard_only)
    ]
    if not candidates:
        raise InvalidOptionError(
            "No catalog model matches those filters.",
            hint="Drop --lang or --license, or see `kennel catalog` for what each model supports.",
        )
    picks = _rank([p for e in candidates if (p := _best_option(e, hw, ctx, calibration)) is not None])[:top]
    up_hw = upgraded(hw) if with_upgrade else None
    up_picks: tuple[Pick, ...] = ()
    if up_hw is not None:
        have = {p.entry.name: p.quality_b for p in picks}
        best_now = max((p.quality_b for p in picks if p.readable), default=0.0)
        better = [
            p
            for e in candidates
            if (p := _best_option(e, up_hw, ctx, calibration)) is not None
            and p.readable
            and p.quality_b > max(best_now, have.get(e.name, 0.0)) * 1.05
        ]
        up_picks = tuple(_rank(better)[:3])
    return Recommendation(
        hardware=hw, picks=tuple(picks), upgrade=up_hw, upgrade_picks=up_picks, considered=len(candidates)
    )
