"""Measured speeds for `kennel cost --measured` and `--from URL`, as a calibration of the speed model.

The machine that was measured joins the comparison as a setup already owned; setups built on the
same GPU take its ratio too (the same silicon runs the same kernels), other hardware keeps the
uncalibrated model, since a CPU's ratio says nothing about a GPU's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from kennel.cost import observed as obs
from kennel.cost.capacity import Capacity
from kennel.cost.setups import Setup
from kennel.cost.workload import Targets, Workload
from kennel.errors import HardwareSpecError, InvalidOptionError
from kennel.fit import calibration
from kennel.fit.speed import Calibration
from kennel.hardware.profile import HardwareProfile
from kennel.hardware.specs import lookup
from kennel.settings import KennelHome

# sizes a capacity for (hardware, request sizes, targets, calibration)
SizeFn = Callable[[HardwareProfile, Workload, Targets, Calibration | None], Capacity]
LAX = Targets(ttft_p95_s=1e9, min_tok_s=1e-9)  # every batch size counts: only the speeds matter


@dataclass(frozen=True)
class Measured:
    calibration: Calibration
    line: str  # where the figures came from, for the report


def saved(home: KennelHome, hw: HardwareProfile, model: str) -> Measured:
    """`kennel fit --measure`'s calibration of this machine."""
    gpu_layers = 1 if hw.llama is None or hw.llama.gpu_offload else 0
    # a saved profile (`kennel hw --json` of a probed machine) counts as that machine
    cal = calibration.load(home, replace(hw, source="probed"), calibration.backend_of(hw, gpu_layers))
    if not cal.measured:
        raise InvalidOptionError(
            "This machine has no measured speeds yet.",
            hint=f"Run `kennel fit {model} --measure` first, or give --from URL of a running server.",
        )
    return Measured(
        cal,
        f"this machine: the speed model x{cal.decode:.2f} (decode), x{cal.prefill:.2f} (prefill), measured",
    )


def from_server(
    url: str, *, model: str, window_s: float, hw: HardwareProfile, load: Workload, size: SizeFn
) -> Measured:
    """The server's own speeds over ``window_s`` against the model's at the same request sizes
    and the same number of requests at once."""
    seen = obs.scrape(url, model=model, window_s=window_s)
    sizes = replace(
        load, prompt_tokens=max(1, round(seen.prompt_tokens)), output_tokens=max(1, round(seen.output_tokens))
    )
    cap = size(hw, sizes, LAX, None)
    if not cap.curve:
        raise InvalidOptionError(
            f"{model} does not fit the machine behind {url}, so its speeds cannot be compared.",
            hint="Give that machine's profile with --hardware, or the served file with --model.",
        )
    n = min(max(1, round(seen.in_flight)), len(cap.curve))
    cal = obs.calibrate(seen, cap.curve[n - 1])
    return Measured(
        cal,
        "; ".join(seen.lines())
        + f" -> the speed model x{cal.decode:.2f} (decode), x{cal.prefill:.2f} (prefill) at {n} at once",
    )


def spec_name(hw: HardwareProfile) -> str | None:
    try:
        return lookup(hw.gpus[0].name).spec.name if hw.gpus else None
    except HardwareSpecError:
        return None


def calibrations(mine: Setup, others: list[Setup], cal: Calibration) -> dict[str, Calibration]:
    """The measured machine, and every setup to buy on the same GPU."""
    out = {mine.name: cal}
    gpu = spec_name(mine.hardware)
    if gpu is not None:
        out.update({s.name: cal for s in others if s.kind == "buy" and s.gpu == gpu})
    return out
