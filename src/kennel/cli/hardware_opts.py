"""The hardware options `hw` and `fit` share: probe this machine, or describe another one."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import typer
import yaml

from kennel.errors import HardwareSpecError, InvalidOptionError
from kennel.hardware.probe import probe
from kennel.hardware.profile import HardwareProfile
from kennel.hardware.whatif import what_if
from kennel.settings import KennelHome
from kennel.units import parse_size

GPU = typer.Option(
    None, "--gpu", help="What-if: plan for this GPU instead of probing, e.g. 'RTX 4090', 'M3 Max', 'MI300X'."
)
GPU_COUNT = typer.Option(1, "--gpu-count", min=1, help="What-if: how many of --gpu.")
RAM = typer.Option(None, "--ram", help="What-if: system RAM (unified memory on Apple), e.g. 64G.")
CPU_CORES = typer.Option(None, "--cpu-cores", min=1, help="What-if: CPU cores (default 16).")
RAM_BW = typer.Option(None, "--ram-bandwidth", min=1.0, help="What-if: RAM bandwidth in GB/s (default 80).")
HARDWARE = typer.Option(
    None, "--hardware", help="Plan for a saved profile (JSON or YAML from `kennel hw --json`)."
)


_SHORT_KEYS = {"gpu", "gpu_count", "ram", "cpu_cores", "ram_bandwidth"}
_SHORT_HINT = (
    "A short profile takes gpu, gpu_count, ram, cpu_cores and ram_bandwidth, e.g. "
    "{gpu: RTX 3090, gpu_count: 2, ram: 128G}; `kennel hw --json` writes a full one."
)


def load_profile(path: Path) -> HardwareProfile:
    """A saved profile: the JSON of `kennel hw --json`, or a short YAML/JSON what-if such as
    ``{gpu: RTX 4090, gpu_count: 2, ram: 64G}``."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidOptionError(
            f"Cannot read hardware profile {path}: {exc.strerror}.",
            hint="Save one with `kennel hw --json > machine.json`.",
        ) from exc
    try:
        doc = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        if isinstance(doc, dict) and isinstance(doc.get("hardware"), dict):
            doc = doc["hardware"]
        if isinstance(doc, dict) and not {"cpu", "memory"} & doc.keys():  # the short form
            if unknown := sorted(str(k) for k in doc.keys() - _SHORT_KEYS):
                raise HardwareSpecError(
                    f"{path}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}.",
                    hint=_SHORT_HINT,
                )
            ram, count = doc.get("ram"), doc.get("gpu_count", 1)
            if not isinstance(count, int) or isinstance(count, bool):
                raise HardwareSpecError(
                    f"{path}: gpu_count is {count!r}, not a whole number.", hint=_SHORT_HINT
                )
            return what_if(
                gpu=doc.get("gpu"),
                gpu_count=count,
                ram=parse_size(str(ram)) if ram is not None else None,
                cpu_cores=doc.get("cpu_cores"),
                ram_bandwidth_gbs=doc.get("ram_bandwidth"),
            )
        return HardwareProfile.from_dict(doc)
    except KeyError as exc:  # a full profile without one of its parts
        raise HardwareSpecError(
            f"{path} is not a kennel hardware profile: it has no {exc.args[0]!r}.",
            hint="Save one with `kennel hw --json > machine.json`, or write gpu/gpu_count/ram in YAML.",
        ) from exc
    except (ValueError, TypeError, AttributeError, yaml.YAMLError) as exc:
        raise HardwareSpecError(
            f"{path} is not a kennel hardware profile ({exc}).",
            hint="Save one with `kennel hw --json > machine.json`, or write gpu/gpu_count/ram in YAML.",
        ) from exc


@dataclass(frozen=True)
class HardwareOptions:
    """The what-if flags as given on the command line."""

    gpu: str | None = None
    gpu_count: int = 1
    ram: str | None = None
    cpu_cores: int | None = None
    ram_bandwidth: float | None = None
    hardware: Path | None = None


def hardware_from_options(
    home: KennelHome, o: HardwareOptions, *, remeasure: bool = False, measure_bandwidth: bool = True
) -> HardwareProfile:
    """Probe this machine, or build the what-if one the flags describe."""
    if o.hardware is not None:
        if o.gpu or o.ram:
            raise InvalidOptionError("Give either --hardware or --gpu/--ram, not both.")
        return load_profile(o.hardware)
    if o.gpu or o.ram or o.cpu_cores or o.ram_bandwidth or o.gpu_count != 1:
        if o.gpu_count != 1 and not o.gpu:
            raise InvalidOptionError(
                "--gpu-count needs --gpu.", hint="For example: --gpu 'RTX 4090' --gpu-count 2."
            )
        return what_if(
            gpu=o.gpu,
            gpu_count=o.gpu_count,
            ram=parse_size(o.ram) if o.ram else None,
            cpu_cores=o.cpu_cores,
            ram_bandwidth_gbs=o.ram_bandwidth,
        )
    return probe(home, remeasure=remeasure, measure=measure_bandwidth)
