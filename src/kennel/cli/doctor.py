"""`kennel doctor`: find what stops kennel from using this machine well, and say how to fix it."""

from __future__ import annotations

import os
import shutil

import typer
from gguf import LlamaFileType
from rich.table import Table

from kennel.catalog.entries import entries
from kennel.cli.output import console, print_json, status
from kennel.doctor.checks import (
    DEFAULT_PORT,
    DoctorContext,
    cuda_runtime_of_build,
    nvidia_present,
    run_checks,
)
from kennel.fit.quant import tensor_types, weights_bytes
from kennel.hardware.probe import probe
from kennel.settings import KennelHome

_MARK = {"ok": "[green]ok[/]", "warn": "[yellow]warn[/]", "fail": "[bold red]fail[/]"}


def _smallest_model() -> tuple[str, int]:
    """The smallest catalog model at Q4_K_M: the least disk and RAM kennel can be useful with."""
    best = None
    for e in entries():
        shape = e.shape()
        size = weights_bytes(shape, tensor_types(shape, LlamaFileType.MOSTLY_Q4_K_M))
        if best is None or size < best[1]:
            best = (e.name, size)
    return best or ("a 0.5B model", 400 * 2**20)


def doctor(
    port: int = typer.Option(
        DEFAULT_PORT, "--port", min=1, max=65535, help="The port `kennel serve` will use."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Check the GPU driver, the llama.cpp build, CUDA_VISIBLE_DEVICES, disk, RAM and the serving port.

    Exits 1 when a check fails.
    """
    home = KennelHome.from_env()
    with status("Checking this machine…", enabled=not json_out):
        hw = probe(home, measure=False)
        name, size = _smallest_model()
        try:
            disk = shutil.disk_usage(home.root if home.root.exists() else home.root.parent).free
        except OSError:
            disk = None
        ctx = DoctorContext(
            hw=hw,
            home=home,
            env=dict(os.environ),
            port=port,
            disk_free=disk,
            nvidia_present=nvidia_present(),
            nvidia_smi=shutil.which("nvidia-smi") is not None,
            cuda_runtime=cuda_runtime_of_build(),
            smallest_model_bytes=size,
            smallest_model_name=name,
        )
        checks = run_checks(ctx)
    failed = any(c.status == "fail" for c in checks)
    if json_out:
        print_json("doctor", {"ok": not failed, "checks": [c.__dict__ for c in checks]})
    else:
        t = Table(box=None, header_style="bold", pad_edge=False)
        for col in ("check", "", "detail", "fix"):
            t.add_column(col, overflow="fold")
        for c in checks:
            t.add_row(c.name, _MARK[c.status], c.detail, c.fix)
        console().print(t)
        console().print("[bold red]Some checks failed.[/]" if failed else "[green]All checks passed.[/]")
    if failed:
        raise typer.Exit(1)
