"""Measured-over-estimated speed ratios per machine and backend, kept in KENNEL_HOME.

After ``kennel fit --measure`` the estimates for this machine use the median of the recorded
ratios (last ten measurements), and their ranges narrow to +-10%.
"""

from __future__ import annotations

import statistics
import time

from kennel.fit.speed import Calibration
from kennel.hardware.profile import HardwareProfile
from kennel.jsonfile import read_section, write_section
from kennel.settings import KennelHome

KEEP = 10


def machine_key(hw: HardwareProfile) -> str:
    gpus = "+".join(g.name for g in hw.gpus) or "no-gpu"
    return f"{hw.cpu.model}|{hw.cpu.threads}t|{hw.memory.total // 2**30}G|{gpus}"


def backend_of(hw: HardwareProfile, gpu_layers: int) -> str:
    if not hw.gpus or gpu_layers == 0:
        return "cpu"
    return hw.gpus[0].backend


def load(home: KennelHome, hw: HardwareProfile, backend: str) -> Calibration:
    """The calibration for this machine, or none for what-if hardware and unmeasured machines."""
    if hw.source != "probed":
        return Calibration()
    table = read_section(home.calibration, "calibration")
    if not isinstance(table, dict):
        return Calibration()
    rows = table.get(f"{machine_key(hw)}|{backend}", [])
    try:
        decode = [float(r["decode_ratio"]) for r in rows if r.get("decode_ratio")]
        prefill = [float(r["prefill_ratio"]) for r in rows if r.get("prefill_ratio")]
    except (TypeError, ValueError, KeyError, AttributeError):
        return Calibration()
    if not decode:
        return Calibration()
    return Calibration(
        decode=statistics.median(decode),
        prefill=statistics.median(prefill) if prefill else 1.0,
        measured=True,
    )


def record(
    home: KennelHome,
    hw: HardwareProfile,
    backend: str,
    *,
    quant: str,
    decode_ratio: float,
    prefill_ratio: float,
) -> Calibration:
    table = read_section(home.calibration, "calibration")
    if not isinstance(table, dict):
        table = {}
    key = f"{machine_key(hw)}|{backend}"
    rows = [r for r in table.get(key, []) if isinstance(r, dict)]
    rows.append(
        {
            "quant": quant,
            "decode_ratio": round(decode_ratio, 4),
            "prefill_ratio": round(prefill_ratio, 4),
            "at": int(time.time()),
        }
    )
    table[key] = rows[-KEEP:]
    write_section(home.calibration, "calibration", table)
    return load(home, hw, backend)
