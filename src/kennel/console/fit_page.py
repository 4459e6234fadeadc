"""The Fit page: `kennel fit` for a catalog model or a pasted hf.co/OWNER/REPO[:QUANT] reference,
or `kennel recommend` when no model is chosen, on this machine or on what-if hardware.

The sizing is the CLI's, call for call: ``resolve`` the model, ``hardware_from_options`` for the
machine, ``default_run`` + ``calibration.load`` + ``estimate`` (fit) or ``recommend``; this module
only turns the reports into rows. The work runs in a worker thread: probing this machine may time
its memory bandwidth once, and a hub reference reads the GGUF header over the network.

Only catalog names and hub references are accepted, never a path or a URL: ``resolve`` would
read a local file's header, and a console user must not be able to probe the server's disk.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import Response

from kennel.catalog import entries as catalog
from kennel.catalog.recommend import Pick, Recommendation, recommend
from kennel.catalog.resolve import parse_hub_ref, resolve
from kennel.cli.hardware_opts import HardwareOptions, hardware_from_options
from kennel.console.i18n import Gettext
from kennel.console.pages import home_of, translator
from kennel.console.render import page
from kennel.console.session import Viewer
from kennel.errors import InvalidOptionError, KennelError, RemoteError
from kennel.fit import calibration
from kennel.fit.estimate import FitOption, FitReport, default_run, estimate
from kennel.fit.speed import Calibration, Range
from kennel.hardware.profile import HardwareProfile
from kennel.hardware.specs import curated
from kennel.hardware.whatif import MAX_GPUS
from kennel.settings import KennelHome
from kennel.units import fmt_bytes, fmt_rate, parse_count

router = APIRouter()


@dataclass(frozen=True)
class FitQuery:
    """The form as sent (strings, so the form shows back what was typed)."""

    catalog: str = ""
    hub: str = ""
    hardware: str = "here"  # here | whatif
    gpu: str = ""
    gpu_count: str = "1"
    ram: str = ""
    ctx: str = ""

    @property
    def model_ref(self) -> str | None:
        return self.hub.strip() or self.catalog.strip() or None


@dataclass(frozen=True)
class FitRow:
    quant: str
    is_file: bool
    recommended: bool
    fits: str  # gpu | partial | cpu | no
    fits_detail: str  # "28/33 layers on GPU", or "" (already translated)
    weights: str
    kv_cache: str
    total: str
    max_context: str
    decode: str
    prefill: str


@dataclass(frozen=True)
class FitView:
    model: str
    source: str
    summary: str
    hardware: str
    what_if: bool
    context: int
    rows: tuple[FitRow, ...]
    recommended: str | None
    reason: str
    notes: tuple[str, ...]


@dataclass(frozen=True)
class PickRow:
    rank: int
    model: str
    quant: str
    quality: str
    memory: str
    where: str  # gpu | cpu | partial
    speed: str
    licence: str
    reason: str


@dataclass(frozen=True)
class RecommendView:
    hardware: str
    what_if: bool
    considered: int
    picks: tuple[PickRow, ...]
    upgrade: str | None
    upgrade_picks: tuple[PickRow, ...]


# ---- the sizing (a worker thread) --------------------------------------------------------------
def _reference(q: FitQuery, _: Gettext) -> str | None:
    """The reference to give ``resolve``: a catalog name, or hf.co/OWNER/REPO[:QUANT]."""
    hub = q.hub.strip()
    if hub:
        repo, quant = parse_hub_ref(hub)
        if repo is None or hub.startswith(("/", ".", "~")) or hub.lower().endswith(".gguf"):
            raise InvalidOptionError(
                _(
                    "%(ref)s is not a Hugging Face reference like hf.co/OWNER/REPO:Q4_K_M.",
                    ref=hub,
                )
            )
        return f"hf.co/{repo}" + (f":{quant}" if quant else "")
    name = q.catalog.strip()
    if not name:
        return None
    if catalog.find(name) is None:
        raise InvalidOptionError(_("%(name)s is not in the catalog.", name=name))
    return name


def _hardware(home: KennelHome, q: FitQuery, _: Gettext) -> HardwareProfile:
    if q.hardware != "whatif":
        return hardware_from_options(home, HardwareOptions())
    count = int(q.gpu_count) if q.gpu_count.strip().isdigit() else 0
    if not 1 <= count <= MAX_GPUS:
        raise InvalidOptionError(_("The number of GPUs must be between 1 and %(max)s.", max=MAX_GPUS))
    if not q.gpu.strip() and not q.ram.strip():
        raise InvalidOptionError(_("For what-if hardware, choose a GPU or give the RAM."))
    return hardware_from_options(
        home,
        HardwareOptions(
            gpu=q.gpu.strip() or None, gpu_count=count if q.gpu.strip() else 1, ram=q.ram or None
        ),
    )


def _context(q: FitQuery, _: Gettext) -> int | None:
    if not q.ctx.strip():
        return None
    tokens = parse_count(q.ctx)
    if tokens < 1:
        raise InvalidOptionError(_("The context must be at least 1 token."))
    return tokens


def _calibration(home: KennelHome, hw: HardwareProfile) -> Calibration:
    return calibration.load(
        home, hw, calibration.backend_of(hw, 1 if hw.llama is None or hw.llama.gpu_offload else 0)
    )


def run_fit(home: KennelHome, q: FitQuery, ref: str, _: Gettext) -> FitView:
    """`kennel fit REF --ctx N [--gpu G --gpu-count C --ram R]`, as rows."""
    ctx = _context(q, _)
    resolved = resolve(ref)
    hw = _hardware(home, q, _)
    run = default_run(resolved.shape, ctx=ctx).validated(resolved.shape)
    report = estimate(resolved.shape, hw, run, calibration=_calibration(home, hw))
    return _fit_view(report, resolved.ref, _)


def run_recommend(home: KennelHome, q: FitQuery, _: Gettext) -> RecommendView:
    """`kennel recommend --ctx N [--gpu ...]`, as rows."""
    ctx = _context(q, _)
    hw = _hardware(home, q, _)
    r = recommend(hw, ctx=ctx, calibration=_calibration(home, hw))
    return _recommend_view(r)


# ---- reports to rows -----------------------------------------------------------------------------
NBSP = "\u00a0"  # "4.36 GiB" stays on one line in a narrow column


def _bytes(n: float) -> str:
    return fmt_bytes(n).replace(" ", NBSP)


def _rate(r: Range) -> str:
    if r.expected <= 0:
        return "-"
    return f"{fmt_rate(r.expected)}{NBSP}({fmt_rate(r.low)}–{fmt_rate(r.high)})"


def _fits_detail(o: FitOption, _: Gettext) -> str:
    p = o.placement
    if p.fits == "partial":
        if p.experts_on_cpu:
            return _("experts of %(n)s layers in RAM", n=p.experts_on_cpu)
        return _("%(gpu)s of %(all)s layers on GPU", gpu=p.gpu_layers, all=p.n_layers)
    if p.fits == "no" and o.kind == "engine" and not p.devices:
        return _("needs a CUDA or ROCm GPU")
    return o.note if o.kind == "engine" else ""


def _fit_view(r: FitReport, source: str, _: Gettext) -> FitView:
    s = r.shape
    params = f"{s.n_params / 1e9:.2f}B" + (f" ({s.n_params_active / 1e9:.2f}B active)" if s.is_moe else "")
    rows = tuple(
        FitRow(
            quant=o.quant,
            is_file=o.is_file,
            recommended=o.quant == r.recommended,
            fits=o.fits,
            fits_detail=_fits_detail(o, _),
            weights=_bytes(o.memory.weights),
            kv_cache=_bytes(o.memory.kv_cache),
            total=_bytes(o.memory.total),
            max_context=f"{o.max_context:,}" if o.max_context else "-",
            decode=_rate(o.decode_tok_s),
            prefill=_rate(o.prefill_tok_s),
        )
        for o in r.options
    )
    return FitView(
        model=s.name,
        source=source,
        summary=f"{s.arch}, {params}, {s.n_layer} layers, trained ctx {s.n_ctx_train or '?'}",
        hardware=r.hardware.describe(),
        what_if=r.hardware.source != "probed",
        context=r.run.ctx,
        rows=rows,
        recommended=r.recommended,
        reason=r.reason,
        notes=r.notes,
    )


def _pick_rows(picks: tuple[Pick, ...]) -> tuple[PickRow, ...]:
    return tuple(
        PickRow(
            rank=i,
            model=p.entry.name,
            quant=p.quant,
            quality=f"{p.quality_b:.1f}B",
            memory=_bytes(p.option.memory.total),
            where=p.option.fits,
            speed=f"{p.option.decode_tok_s.expected:.1f}",
            licence=p.license.name,
            reason=p.reason,
        )
        for i, p in enumerate(picks, 1)
    )


def _recommend_view(r: Recommendation) -> RecommendView:
    return RecommendView(
        hardware=r.hardware.describe(),
        what_if=r.hardware.source != "probed",
        considered=r.considered,
        picks=_pick_rows(r.picks),
        upgrade=r.upgrade.name if r.upgrade is not None else None,
        upgrade_picks=_pick_rows(r.upgrade_picks),
    )


# ---- the page --------------------------------------------------------------------------------------
@router.get("/fit")
async def fit(
    request: Request,
    user: Viewer,
    catalog_model: str = "",
    hub: str = "",
    hardware: str = "here",
    gpu: str = "",
    gpu_count: str = "1",
    ram: str = "",
    ctx: str = "",
) -> Response:
    _ = translator(request)
    q = FitQuery(catalog_model, hub, hardware, gpu, gpu_count, ram, ctx)
    home = home_of(request)
    result: FitView | None = None
    picks: RecommendView | None = None
    error: str | None = None
    status = 200
    submitted = bool(request.query_params)
    if submitted:
        try:
            ref = _reference(q, _)
            if ref is None:
                picks = await asyncio.to_thread(run_recommend, home, q, _)
            else:
                result = await asyncio.to_thread(run_fit, home, q, ref, _)
        except RemoteError as exc:  # the hub is down or unreachable: say so, the page still works
            error, status = str(exc), 502
        except KennelError as exc:  # a name, size or GPU the sizing cannot use
            error, status = str(exc), 400
    context = {
        "q": q,
        "catalog": sorted(e.name for e in catalog.entries()),
        "gpus": [g.name for g in curated()],
        "result": result,
        "picks": picks,
        "error": error,
        "submitted": submitted,
    }
    return page(request, "fit.html", context, status_code=status)
