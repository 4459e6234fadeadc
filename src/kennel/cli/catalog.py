"""`kennel catalog`, `kennel show NAME` and `kennel recommend`: choose a model you may use."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from kennel.catalog.entries import TASKS, CatalogEntry, license_of, select
from kennel.catalog.entries import get as catalog_get
from kennel.catalog.recommend import Pick, Recommendation, recommend
from kennel.cli import hardware_opts as ho
from kennel.cli.output import console, print_json, status
from kennel.errors import InvalidOptionError, ModelNotFoundError
from kennel.fit import calibration
from kennel.settings import KennelHome
from kennel.units import fmt_bytes, parse_count

LANGUAGES = {
    "en": "English",
    "zh": "Chinese",
    "vi": "Vietnamese",
    "de": "German",
    "fr": "French",
    "es": "Spanish",
    "it": "Italian",
    "pt": "Portuguese",
    "th": "Thai",
    "ja": "Japanese",
    "ko": "Korean",
    "ar": "Arabic",
    "ru": "Russian",
    "tr": "Turkish",
    "id": "Indonesian",
    "hi": "Hindi",
    "ms": "Malay",
    "nl": "Dutch",
    "pl": "Polish",
    "sv": "Swedish",
    "uk": "Ukrainian",
}


class LicenseFilter(StrEnum):
    any = "any"
    commercial = "commercial"  # commercial use allowed, possibly with conditions
    open_source = "open-source"  # OSI-approved licence and openness open-source


TASK = typer.Option(None, "--task", help=f"Only models good at this: {', '.join(TASKS)}.")
LANG = typer.Option(None, "--lang", help="Only models strong in this language (ISO 639-1, e.g. vi, zh, de).")
LICENSE = typer.Option(
    LicenseFilter.any, "--license", help="commercial: usable in a business (conditions shown)."
)
JSON = typer.Option(False, "--json", help="Print JSON for scripts.")


def _check_filters(task: str | None, lang: str | None) -> None:
    if task is not None and task not in TASKS:
        raise InvalidOptionError(f"Unknown task {task!r}.", hint=f"Use one of: {', '.join(TASKS)}.")
    if lang is not None and lang.lower() not in LANGUAGES:
        raise InvalidOptionError(
            f"No catalog model lists language {lang!r}.",
            hint=f"Use an ISO 639-1 code: {', '.join(sorted(LANGUAGES))}.",
        )


def _filtered(task: str | None, lang: str | None, lic: LicenseFilter) -> list[CatalogEntry]:
    _check_filters(task, lang)
    out = select(task=task, lang=lang, commercial=lic != LicenseFilter.any)
    if lic == LicenseFilter.open_source:
        out = [e for e in out if license_of(e).osi_approved and e.openness == "open-source"]
    return out


def _params(e: CatalogEntry) -> str:
    return f"{e.params_b:g}B" + (f" ({e.active_params_b:g}B active)" if e.active_params_b else "")


def entry_dict(e: CatalogEntry, *, details: bool = False) -> dict[str, Any]:
    lic = license_of(e)
    doc: dict[str, Any] = {
        "name": e.name,
        "title": e.title,
        "family": e.family,
        "hf_repo": e.hf_repo,
        "params_b": e.params_b,
        "active_params_b": e.active_params_b,
        "released": e.released,
        "license": {"key": e.license, **lic.model_dump()},
        "openness": e.openness,
        "languages": list(e.languages),
        "tasks": list(e.tasks),
    }
    if details:
        s = e.shape()
        doc["shape"] = {
            "arch": s.arch,
            "n_params": s.n_params,
            "n_params_active": s.n_params_active,
            "n_layer": s.n_layer,
            "n_embd": s.n_embd,
            "n_head": s.n_head[0] if s.n_head else 0,
            "n_head_kv": s.n_head_kv[0] if s.n_head_kv else 0,
            "head_dim": s.head_dim_k,
            "n_ctx_train": s.n_ctx_train,
            "n_vocab": s.n_vocab,
            "n_expert": s.n_expert,
            "n_expert_used": s.n_expert_used,
            "sliding_window": s.n_swa,
        }
        doc["gguf_files"] = [
            {"quant": f.quant, "repo": f.repo, "file": f.file, "size_bytes": f.size} for f in e.gguf_files()
        ]
    return doc


def catalog(
    task: str | None = TASK,
    lang: str | None = LANG,
    license_: LicenseFilter = LICENSE,
    json_out: bool = JSON,
) -> None:
    """List the curated open models: size, licence, languages, tasks."""
    found = _filtered(task, lang, license_)
    if json_out:
        print_json("catalog", {"models": [entry_dict(e) for e in found]})
        return
    t = Table(header_style="bold", box=None, pad_edge=False)
    for col in ("name", "params", "released", "licence", "commercial", "tasks", "languages"):
        t.add_column(col)
    for e in found:
        lic = license_of(e)
        use = {"yes": "[green]yes[/]", "conditional": "[yellow]conditions[/]", "no": "[red]no[/]"}[
            lic.commercial
        ]
        langs = ",".join(e.languages[:8]) + ("…" if len(e.languages) > 8 else "")
        t.add_row(e.name, _params(e), e.released, lic.name, use, ",".join(e.tasks), langs)
    c = console()
    c.print(t)
    c.print(f"[dim]{len(found)} models. Details: kennel show NAME; what fits here: kennel recommend.[/]")


def show(
    name: str = typer.Argument(
        ...,
        help="A catalog name, e.g. qwen2.5-7b; or a model of the store: NAME@VERSION, or a NAME[:TAG] "
        "the catalog does not have.",
    ),
    json_out: bool = JSON,
) -> None:
    """One catalog model: licence conditions, shape, languages, GGUF files and sizes.

    NAME@VERSION shows a version from the store instead: its profile and, for a fine-tuned version,
    its lineage (base and data sha256, hyperparameters, loss curve, machine, eval).
    """
    from kennel.cli.versions import show_version

    if "@" in name:  # catalog names never hold '@'; store references do
        show_version(name, json_out=json_out)
        return
    try:
        e = catalog_get(name)
    except ModelNotFoundError:  # a model of the store's own (support:prod), as serve and run take it
        from kennel.store.registry import live_ref

        if live_ref(KennelHome.from_env(), name) is None:
            raise
        show_version(name, json_out=json_out)
        return
    doc = entry_dict(e, details=True)
    if json_out:
        print_json("show", {"model": doc})
        return
    c = console()
    lic, s = license_of(e), doc["shape"]
    c.print(f"[bold]{e.title}[/] [dim]({e.name}, {e.hf_repo}, released {e.released})[/]")
    c.print(f"  {_params(e)} parameters, {e.openness}; tasks: {', '.join(e.tasks)}")
    c.print(f"  languages: {', '.join(LANGUAGES.get(code, code) for code in e.languages)}")
    experts = f", {s['n_expert']} experts ({s['n_expert_used']} per token)" if s["n_expert"] else ""
    c.print(
        f"  shape: {s['arch']}, {s['n_layer']} layers, hidden {s['n_embd']}, {s['n_head']} heads / "
        f"{s['n_head_kv']} KV heads x {s['head_dim']}, context {s['n_ctx_train']:,}, "
        f"vocab {s['n_vocab']:,}{experts}"
    )
    use = {"yes": "allowed", "conditional": "allowed with conditions", "no": "not allowed"}[lic.commercial]
    c.print(f"\n[bold]Licence[/]: {lic.name} ({lic.url}){' — OSI approved' if lic.osi_approved else ''}")
    c.print(f"  commercial use {use}: {lic.conditions}")
    files = e.gguf_files()
    if files:
        c.print(f"\n[bold]GGUF files[/] in hf.co/{files[0].repo} (pull with kennel pull {e.name}:QUANT):")
        t = Table(header_style="bold", box=None, pad_edge=False)
        t.add_column("quant")
        t.add_column("file")
        t.add_column("size", justify="right")
        for f in files:
            t.add_row(f.quant, f.file, fmt_bytes(f.size))
        c.print(t)
    c.print(f"[dim]Sizing on this machine: kennel fit {e.name}[/]")


def _pick_dict(p: Pick, rank: int) -> dict[str, Any]:
    o = p.option
    return {
        "rank": rank,
        "model": p.entry.name,
        "quant": o.quant,
        "ref": f"{p.entry.name}:{o.quant}",
        "quality_b": round(p.quality_b, 2),
        "fits": o.fits,
        "gpu_layers": o.placement.gpu_layers,
        "n_layers": o.placement.n_layers,
        "total_bytes": o.memory.total,
        "decode_tok_s": round(o.decode_tok_s.expected, 2),
        "prefill_tok_s": round(o.prefill_tok_s.expected, 2),
        "readable": p.readable,
        "license": p.entry.license,
        "commercial": p.license.commercial,
        "reason": p.reason,
    }


def recommend_dict(r: Recommendation) -> dict[str, Any]:
    return {
        "hardware": r.hardware.describe(),
        "considered": r.considered,
        "picks": [_pick_dict(p, i + 1) for i, p in enumerate(r.picks)],
        "upgrade": None
        if r.upgrade is None
        else {
            "hardware": r.upgrade.name,
            "picks": [_pick_dict(p, i + 1) for i, p in enumerate(r.upgrade_picks)],
        },
    }


def _picks_table(picks: tuple[Pick, ...]) -> Table:
    t = Table(header_style="bold", box=None, pad_edge=False)
    for col, just in (
        ("#", "right"),
        ("model", "left"),
        ("quant", "left"),
        ("quality", "right"),
        ("memory", "right"),
        ("where", "left"),
        ("tok/s", "right"),
        ("licence", "left"),
    ):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for i, p in enumerate(picks, 1):
        o = p.option
        where = {"gpu": "GPU", "cpu": "CPU", "partial": "GPU+RAM"}[o.fits]
        speed = f"{o.decode_tok_s.expected:.1f}" if p.readable else f"[red]{o.decode_tok_s.expected:.1f}[/]"
        use = {"yes": "", "conditional": " [yellow](conditions)[/]", "no": " [red](non-commercial)[/]"}
        t.add_row(
            str(i),
            p.entry.name,
            o.quant,
            f"{p.quality_b:.1f}B",
            fmt_bytes(o.memory.total),
            where,
            speed,
            p.license.name + use[p.license.commercial],
        )
    return t


def recommend_cmd(
    task: str | None = TASK,
    lang: str | None = LANG,
    license_: LicenseFilter = LICENSE,
    ctx: str | None = typer.Option(None, "--ctx", help="Context you need, e.g. 8192 or 32k (default 8192)."),
    top: int = typer.Option(10, "--top", min=1, help="How many picks to show."),
    upgrade: bool = typer.Option(
        True, "--upgrade/--no-upgrade", help="Also show what more hardware would unlock."
    ),
    json_out: bool = JSON,
    gpu: str | None = ho.GPU,
    gpu_count: int = ho.GPU_COUNT,
    ram: str | None = ho.RAM,
    cpu_cores: int | None = ho.CPU_CORES,
    ram_bandwidth: float | None = ho.RAM_BW,
    hardware: Path | None = ho.HARDWARE,
) -> None:
    """Rank catalog model x quantization pairs that fit this (or a what-if) machine, and say why.

    Quality is a proxy in dense-equivalent billions of parameters: published perplexity losses per
    quantization and size, so a bigger model at a lower quantization can outrank a smaller one.
    """
    home = KennelHome.from_env()
    _check_filters(task, lang)
    ctx_tokens = parse_count(ctx) if ctx is not None else None
    with status("Probing hardware…", enabled=not json_out):
        hw = ho.hardware_from_options(
            home, ho.HardwareOptions(gpu, gpu_count, ram, cpu_cores, ram_bandwidth, hardware)
        )
    cal = calibration.load(
        home, hw, calibration.backend_of(hw, 1 if hw.llama is None or hw.llama.gpu_offload else 0)
    )
    with status("Sizing every catalog model…", enabled=not json_out):
        r = recommend(
            hw,
            task=task,
            lang=lang,
            commercial=license_ != LicenseFilter.any,
            ctx=ctx_tokens,
            top=top,
            with_upgrade=upgrade,
            calibration=cal,
        )
    if license_ == LicenseFilter.open_source:
        allowed = {e.name for e in _filtered(task, lang, license_)}
        r = Recommendation(
            r.hardware,
            tuple(p for p in r.picks if p.entry.name in allowed),
            r.upgrade,
            tuple(p for p in r.upgrade_picks if p.entry.name in allowed),
            len(allowed),
        )
    if json_out:
        print_json("recommend", recommend_dict(r))
        return
    _render(r)


def _render(r: Recommendation) -> None:
    c = console()
    what_if = "" if r.hardware.source == "probed" else " [dim](what-if)[/]"
    c.print(f"[bold]Best models for {r.hardware.describe()}[/]{what_if} [dim]({r.considered} considered)[/]")
    if not r.picks:
        c.print("[bold red]Nothing in the catalog fits this machine with those filters.[/]")
    else:
        c.print(_picks_table(r.picks))
        c.print("\n[bold]Why[/]")
        for i, p in enumerate(r.picks, 1):
            c.print(f"  {i}. {p.entry.name}:{p.quant}: {p.reason}")
        top = r.picks[0]
        c.print(f"\nGet it: [bold]kennel pull {top.entry.name}:{top.quant}[/]")
    if r.upgrade is not None:
        if r.upgrade_picks:
            c.print(f"\n[bold]With {r.upgrade.name}[/] you could run:")
            c.print(_picks_table(r.upgrade_picks))
        else:
            c.print(f"\n[dim]With {r.upgrade.name}, no better model would fit.[/]")
    c.print(
        "[dim]quality: dense-equivalent billions of parameters after quantization loss (higher is better).[/]"
    )
