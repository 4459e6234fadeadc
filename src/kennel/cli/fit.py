"""`kennel fit MODEL`: will it run here, at which quantization, how fast, with what context?"""

from __future__ import annotations

from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from gguf import LlamaFileType
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from kennel.catalog.resolve import resolve
from kennel.cli import hardware_opts as ho
from kennel.cli.output import console, err_console, print_json, status
from kennel.errors import InvalidOptionError
from kennel.fit import calibration
from kennel.fit.estimate import FitOption, FitReport, default_run, estimate, size_option
from kennel.fit.measure import MeasureResult, measure
from kennel.fit.quant import scheme, tensor_types
from kennel.fit.serialize import report_dict
from kennel.fit.serving import default_threads, serve_parallel, with_threads
from kennel.fit.speed import Range
from kennel.settings import KennelHome
from kennel.units import fmt_bytes, fmt_rate, parse_count


class KvType(StrEnum):
    f16 = "f16"
    q8_0 = "q8_0"
    q4_0 = "q4_0"


class OnOff(StrEnum):
    on = "on"
    off = "off"


def fit(
    model: str = typer.Argument(
        ...,
        help="A .gguf path, an https URL to a GGUF, hf.co/OWNER/REPO[:QUANT], OWNER/REPO, or a catalog name.",
    ),
    ctx: str | None = typer.Option(
        None,
        "--ctx",
        help="Context per sequence in tokens, e.g. 8192 or 32k (default: 8192, or the model's if shorter).",
    ),
    kv_type: KvType = typer.Option(
        KvType.f16, "--kv-type", help="KV cache type; q8_0 and q4_0 need flash attention."
    ),
    flash_attn: OnOff = typer.Option(
        OnOff.on, "--flash-attn", help="Flash attention (kennel's engine uses it by default)."
    ),
    parallel: int = typer.Option(
        1,
        "--parallel",
        min=1,
        max=256,
        help="Sequences served at once, each with a cache of ctx tokens. Without it, the table is "
        "for one, and a last line says how many `kennel serve` runs at once.",
    ),
    threads: int | None = typer.Option(
        None,
        "--threads",
        min=1,
        help="CPU threads llama.cpp uses (default: every physical core, as kennel serve).",
    ),
    ubatch: int = typer.Option(512, "--ubatch", min=1, help="Physical batch size (llama.cpp -ub)."),
    quant: list[str] = typer.Option(
        [], "--quant", help="Only these quantizations (repeatable); with --measure, the one to time."
    ),
    file: str | None = typer.Option(None, "--file", help="The GGUF file to read in a Hugging Face repo."),
    revision: str | None = typer.Option(None, "--revision", help="Hub revision (branch, tag or commit)."),
    engines: bool = typer.Option(
        True, "--engines/--no-engines", help="Also size non-GGUF formats for GPU engines (AWQ, FP8, ...)."
    ),
    do_measure: bool = typer.Option(
        False,
        "--measure",
        help="Build the model's shape locally with random weights, time it here, and calibrate.",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
    gpu: str | None = ho.GPU,
    gpu_count: int = ho.GPU_COUNT,
    ram: str | None = ho.RAM,
    cpu_cores: int | None = ho.CPU_CORES,
    ram_bandwidth: float | None = ho.RAM_BW,
    hardware: Path | None = ho.HARDWARE,
) -> None:
    """Size MODEL at every common quantization on this machine (or a what-if one) and recommend one.

    Reads only the GGUF header (or config.json) of remote models; never downloads weights.
    """
    home = KennelHome.from_env()
    ctx_tokens = parse_count(ctx) if ctx is not None else None
    if ctx_tokens is not None and ctx_tokens < 1:
        raise InvalidOptionError("--ctx must be at least 1 token.", hint="For example --ctx 8192.")
    with status(f"Reading {model}…", enabled=not json_out):
        resolved = resolve(stored_gguf(model, home) or model, file=file, revision=revision)
    shape = resolved.shape
    with status("Probing hardware…", enabled=not json_out):
        hw = ho.hardware_from_options(
            home, ho.HardwareOptions(gpu, gpu_count, ram, cpu_cores, ram_bandwidth, hardware)
        )
    hw = with_threads(hw, threads)  # speeds for the threads llama.cpp will use
    run = default_run(
        shape,
        ctx=ctx_tokens,
        kv_type=kv_type.value,
        flash_attn=flash_attn == OnOff.on,
        parallel=parallel,
        n_ubatch=ubatch,
        n_batch=max(2048, ubatch),
    ).validated(shape)
    only = tuple(scheme(q).name for q in quant)  # refuses unknown names with the list of known ones
    backend = calibration.backend_of(hw, 1 if hw.llama is None or hw.llama.gpu_offload else 0)
    cal = calibration.load(home, hw, backend)
    with status("Sizing every quantization…", enabled=not json_out):
        report = estimate(shape, hw, run, calibration=cal, include_engines=engines, only=only)
    measured: MeasureResult | None = None
    if do_measure:
        target = _measure_target(report, only)
        measured = _run_measure(shape, hw, run, target, home, quiet=json_out)
        report = estimate(
            shape, hw, run, calibration=measured.calibration, include_engines=engines, only=only
        )
    serving = _serving(report, parallel_given=parallel != 1)
    if json_out:
        doc = report_dict(
            report, source=resolved.ref, file_name=resolved.file_name, file_size=resolved.file_size
        )
        doc["serve"] = serving
        if measured is not None:
            doc["measured"] = _measured_dict(measured)
        print_json("fit", doc)
        return
    render(report, source=resolved.ref, file_size=resolved.file_size)
    if serving is not None:
        console().print(
            f"[bold]kennel serve[/] would run {serving['quant']} "
            f"with up to {serving['parallel']} requests at once "
            f"(a cache of {serving['context']} tokens for each, "
            f"{fmt_bytes(serving['memory_bytes'])}), "
            f"on {serving['threads']} CPU threads."
        )
    if measured is not None:
        _render_measured(measured)


def _serving(report: FitReport, *, parallel_given: bool) -> dict[str, Any] | None:
    """How `kennel serve` would run the recommended quantization (or the file's): the same
    figures it picks itself, from the same functions."""
    option = next((o for o in report.options if o.is_file), None) or next(
        (o for o in report.options if o.quant == report.recommended), None
    )
    if option is None or option.fits == "no":
        return None
    shape, hw = report.shape, report.hardware
    types = None if option.is_file else tensor_types(shape, LlamaFileType(scheme(option.quant).ftype or 0))
    base = replace(report.run, parallel=1)
    parallel = report.run.parallel if parallel_given else serve_parallel(shape, hw, base, types)
    sized = size_option(shape, hw, replace(base, parallel=parallel), types)
    return {
        "quant": option.quant,
        "parallel": parallel,
        "context": report.run.ctx,
        "threads": default_threads(hw),
        "memory_bytes": sized.memory.total,
        "placement": sized.placement.fits,
    }


def _measure_target(report: FitReport, only: tuple[str, ...]) -> str:
    if len(only) == 1:
        return only[0]
    if only:
        raise InvalidOptionError("--measure times one quantization; give a single --quant.")
    own = next((o.quant for o in report.options if o.is_file), None)
    target = own or report.recommended
    if target is None:
        raise InvalidOptionError("Nothing fits this machine, so there is nothing to measure.")
    return target


def _run_measure(shape, hw, run, quant: str, home: KennelHome, *, quiet: bool) -> MeasureResult:  # type: ignore[no-untyped-def]
    if quiet:
        return measure(shape, hw, run, quant=quant, home=home)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=err_console(),
        transient=True,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                label = f"Building {quant} test model" if stage == "build" else "Timing prefill and decode"
                tasks[stage] = bar.add_task(label, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        return measure(shape, hw, run, quant=quant, home=home, progress=progress)


def _rng(r: Range) -> str:
    if r.expected <= 0:
        return "-"
    return f"{fmt_rate(r.expected)} [dim]({fmt_rate(r.low)}–{fmt_rate(r.high)})[/]"


def _fits(o: FitOption) -> str:
    p = o.placement
    if p.fits == "gpu":
        return "[green]GPU[/]" if o.kind == "gguf" else f"[green]GPU[/] [dim]{o.note}[/]"
    if p.fits == "partial":
        if p.experts_on_cpu:
            return (
                f"[yellow]partial[/] experts of {p.experts_on_cpu} "
                f"layer{'s' if p.experts_on_cpu > 1 else ''} in RAM"
            )
        return f"[yellow]partial[/] {p.gpu_layers}/{p.n_layers} on GPU"
    if p.fits == "cpu":
        return "CPU"
    if o.kind == "engine" and not o.placement.devices:
        return "[red]no[/] [dim](needs a CUDA/ROCm GPU)[/]"
    return "[red]no[/]"


def render(r: FitReport, *, source: str, file_size: int | None) -> None:
    c = console()
    s = r.shape
    params = f"{s.n_params / 1e9:.2f}B params" + (
        f", {s.n_params_active / 1e9:.2f}B active" if s.is_moe else ""
    )
    ftype = f", file {s.file_type} {fmt_bytes(file_size)}" if s.source_kind == "gguf" and file_size else ""
    c.print(f"[bold]{s.name}[/] [dim]({source})[/]")
    heads = f"{s.n_head[0]}/{s.n_head_kv[0]} heads x {s.head_dim_k}" if s.n_head else ""
    extra = (f", {s.n_expert} experts ({s.n_expert_used} used)" if s.is_moe else "") + (
        f", sliding window {s.n_swa}" if s.n_swa else ""
    )
    c.print(
        f"  {s.arch}, {params}, {s.n_layer} layers, {heads}, vocab {s.n_vocab}, "
        f"trained ctx {s.n_ctx_train or '?'}{extra}{ftype}"
    )
    c.print(
        f"  on [bold]{r.hardware.describe()}[/]"
        + ("" if r.hardware.source == "probed" else " [dim](what-if)[/]")
    )
    run = r.run
    c.print(
        f"  ctx {run.ctx}"
        + (f" x {run.parallel} sequences" if run.parallel > 1 else "")
        + (
            f" (llama.cpp allocates {r.n_ctx}), KV {run.kv_type}, "
            f"flash attention {'on' if run.flash_attn else 'off'}"
        )
        + (
            "; speeds [green]calibrated[/] by measurement"
            if r.calibrated
            else "; speeds uncalibrated (see --measure)"
        )
    )
    t = Table(header_style="bold", box=None, pad_edge=False)
    # llama.cpp's repacked copies of CPU weights (x86 AVX2, ARM): a column only where there are any
    repack = any(o.memory.repack for o in r.options)
    for col, just in (
        ("quant", "left"),
        ("weights", "right"),
        *((("repack", "right"),) if repack else ()),
        ("KV cache", "right"),
        ("compute", "right"),
        ("overhead", "right"),
        ("total", "right"),
        ("fits", "left"),
        ("max ctx", "right"),
        ("decode tok/s", "right"),
        ("prefill tok/s", "right"),
    ):
        t.add_column(col, justify=just)
    for o in r.options:
        m = o.memory
        name = o.quant + (" (file)" if o.is_file else "")
        if o.quant == r.recommended:
            name = f"[bold green]→ {name}[/]"
        t.add_row(
            name,
            fmt_bytes(m.weights),
            *((fmt_bytes(m.repack) if o.kind == "gguf" else "-",) if repack else ()),
            fmt_bytes(m.kv_cache),
            fmt_bytes(m.compute),
            fmt_bytes(m.overhead),
            fmt_bytes(m.total),
            _fits(o),
            f"{o.max_context:,}" if o.max_context else "-",
            _rng(o.decode_tok_s),
            _rng(o.prefill_tok_s),
        )
    c.print(t)
    if r.recommended:
        c.print(f"[bold green]Recommended: {r.recommended}[/] — {r.reason}")
    else:
        c.print(f"[bold red]{r.reason}[/]")
    c.print(
        "[dim]Decode speed is with ~1k tokens in context; prefill for a 512-token prompt. "
        "max ctx: largest context keeping the placement (GPU rows) or fitting at all (others).[/]"
    )
    for n in r.notes:
        c.print(f"[yellow]note:[/] {n}")


def _measured_dict(m: MeasureResult) -> dict[str, object]:
    return {
        "quant": m.quant,
        "synthetic_file": str(m.path),
        "note": m.proxy_note,
        "build_seconds": round(m.build_seconds, 2),
        "gpu_layers": m.gpu_layers,
        "decode_tok_s": round(m.bench.decode_tok_s, 2),
        "prefill_tok_s": round(m.bench.prefill_tok_s, 2),
        "estimated_decode_tok_s": round(m.estimated_decode, 2),
        "estimated_prefill_tok_s": round(m.estimated_prefill, 2),
        "decode_ratio": round(m.decode_ratio, 3),
        "prefill_ratio": round(m.prefill_ratio, 3),
        "llama_buffers_bytes": m.bench.buffers.total,
        "estimated_buffers_bytes": m.estimated_buffers,
    }


def _render_measured(m: MeasureResult) -> None:
    c = console()
    b = m.bench
    c.print(
        f"\n[bold]Measured here[/] ({m.quant}, {m.gpu_layers} layers on GPU, {b.prompt_tokens}-token prompt, "
        f"{b.gen_tokens} generated):"
    )
    c.print(
        f"  decode  {b.decode_tok_s:8.1f} tok/s  vs estimated {m.estimated_decode:8.1f}  "
        f"(x{m.decode_ratio:.2f})"
    )
    c.print(
        f"  prefill {b.prefill_tok_s:8.1f} tok/s  vs estimated {m.estimated_prefill:8.1f}  "
        f"(x{m.prefill_ratio:.2f})"
    )
    c.print(
        f"  memory  llama.cpp buffers {fmt_bytes(b.buffers.total)} "
        f"vs estimated {fmt_bytes(m.estimated_buffers)}"
    )
    if m.proxy_note:
        c.print(f"  [dim]{m.proxy_note}[/]")
    c.print(
        f"  [dim]Calibration saved: later estimates on this machine use x{m.calibration.decode:.2f} decode, "
        f"x{m.calibration.prefill:.2f} prefill. Test model kept at {m.path}.[/]"
    )


def stored_gguf(model: str, home: KennelHome) -> str | None:
    """A model of kennel's store, named as `serve` and `run` take it (support:prod, support@2), as
    the path of its GGUF file; None for anything else. A catalog name keeps meaning the catalog's
    model at every quantization, unless a version or a store tag that is not a quantization
    (qwen2.5-7b@1, qwen2.5-7b:prod) picks the file in the store."""
    from kennel.catalog.entries import find
    from kennel.server.models import stored_path
    from kennel.store.registry import Store, live_ref

    ref = live_ref(home, model)
    if ref is None:  # resolved as given: a path, a URL, a hub repo, a catalog name
        return None
    if find(ref.name) is not None and ref.version is None and (ref.tag is None or _is_quant(ref.tag)):
        return None
    with Store.open(home) as store:  # a missing tag is said by the store, with the tags it has
        if store.resolve(ref).profile.format != "gguf":
            return None
    return str(stored_path(model, home))


def _is_quant(tag: str) -> bool:
    try:
        scheme(tag)
    except InvalidOptionError:
        return False
    return True
