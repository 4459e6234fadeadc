"""The hardware `kennel cost` compares: every priced GPU at the box sizes it is sold in (in the
cheapest chassis that takes it), every whole machine (Apple, Jetson, DGX Spark, CPU servers), the
GPUs one can rent, and setups named on the command line ("2x RTX 4090", "Mac Studio M2 Ultra")."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Literal

from kennel.cost.money import Power
from kennel.cost.prices import Chassis, GpuPrice, PriceBook, System
from kennel.errors import HardwareSpecError, InvalidOptionError
from kennel.hardware.profile import HardwareProfile
from kennel.hardware.specs import lookup, normalize
from kennel.hardware.whatif import what_if
from kennel.units import GiB

Kind = Literal["buy", "rent", "owned"]
# a machine kennel has no price row for (this one, with --measured): a desktop around it
OWNED_HOST = Power(idle_w=45, max_w=230)
UNKNOWN_GPU = Power(idle_w=25, max_w=300)
NO_POWER = Power(idle_w=0.0, max_w=0.0)  # rented: the power is in the hourly price
_COUNTED = re.compile(r"^\s*(\d+)\s*[x×*]\s*(.+?)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Setup:
    """One way to run the model: a box to buy (``price`` and ``power`` per box), an instance to
    rent (``per_hour``), or a machine already owned (no purchase)."""

    name: str
    kind: Kind
    hardware: HardwareProfile
    price: float = 0.0  # per box, in the price book's currency
    power: Power = NO_POWER
    per_hour: float = 0.0  # per rented instance
    gpu: str | None = None
    gpu_count: int = 0
    detail: str = ""  # the chassis, the provider's note...

    @property
    def label(self) -> str:
        return f"{self.name} ({self.detail})" if self.detail else self.name


def chassis_for(book: PriceBook, gpu: GpuPrice, count: int) -> Chassis | None:
    fitting = [c for c in book.chassis if gpu.form in c.forms and c.max_gpus >= count]
    return min(fitting, key=lambda c: c.price, default=None)


def gpu_box(book: PriceBook, gpu: GpuPrice, count: int) -> Setup:
    chassis = chassis_for(book, gpu, count)
    if chassis is None:
        raise InvalidOptionError(
            f"No chassis in the price file holds {count}x {gpu.name} ({gpu.form} cards).",
            hint=f"{gpu.name} is planned in boxes of {', '.join(map(str, gpu.boxes))}.",
        )
    hw = what_if(
        gpu=gpu.name,
        gpu_count=count,
        ram=int(chassis.ram_gb * GiB),
        cpu_cores=chassis.cpu_cores,
        ram_bandwidth_gbs=chassis.ram_bandwidth_gbs,
    )
    return Setup(
        name=f"{count}x {gpu.name}",
        kind="buy",
        hardware=hw,
        price=chassis.price + count * gpu.price,
        power=Power(chassis.idle_w + count * gpu.idle_w, chassis.tdp_w + count * gpu.tdp_w),
        gpu=gpu.name,
        gpu_count=count,
        detail=chassis.name,
    )


def system_box(system: System) -> Setup:
    ram = int(system.ram_gb * GiB)
    if system.gpu is not None:
        hw = what_if(gpu=system.gpu, ram=ram)
    elif system.cpu_cores is not None:
        hw = what_if(ram=ram, cpu_cores=system.cpu_cores, ram_bandwidth_gbs=system.ram_bandwidth_gbs)
    else:
        raise InvalidOptionError(
            f"System {system.name!r} in the price file has neither a gpu nor cpu_cores.",
            hint="Give `gpu:` (a unified-memory entry of the GPU table) or `cpu_cores:` and "
            "`ram_bandwidth_gbs:`.",
        )
    return Setup(
        name=system.name,
        kind="buy",
        hardware=hw,
        price=system.price,
        power=Power(system.idle_w, system.tdp_w),
        gpu=system.gpu,
        gpu_count=1 if system.gpu else 0,
    )


def candidates(book: PriceBook) -> tuple[Setup, ...]:
    """Everything to buy: each priced GPU at each box size a chassis takes, and each system."""
    out = [gpu_box(book, g, n) for g in book.gpus for n in g.boxes if chassis_for(book, g, n) is not None]
    out += [system_box(s) for s in book.systems]
    return tuple(out)


def rentals(book: PriceBook) -> tuple[Setup, ...]:
    return tuple(
        Setup(
            name=r.name,
            kind="rent",
            hardware=what_if(gpu=r.gpu, gpu_count=r.gpus),
            per_hour=r.per_hour,
            gpu=r.gpu,
            gpu_count=r.gpus,
        )
        for r in book.rentals
    )


def owned(book: PriceBook, hw: HardwareProfile, name: str = "this machine") -> Setup:
    """A machine already bought: no purchase, power from its GPUs' price rows where kennel has
    them (else a typical card's), plus a desktop host."""
    power = OWNED_HOST
    for g in hw.gpus:
        row = _gpu_row(book, g.name)
        gp = Power(row.idle_w, row.tdp_w) if row is not None else UNKNOWN_GPU
        power = Power(power.idle_w + gp.idle_w, power.max_w + gp.max_w)
    return Setup(
        name=name,
        kind="owned",
        hardware=hw,
        power=power,
        gpu=hw.gpus[0].name if hw.gpus else None,
        gpu_count=len(hw.gpus),
        detail="already owned",
    )


def _gpu_row(book: PriceBook, name: str) -> GpuPrice | None:
    key = normalize(name)
    for g in book.gpus:
        if normalize(g.name) == key:
            return g
    try:
        spec = lookup(name).spec.name
    except HardwareSpecError:
        return None
    return next((g for g in book.gpus if g.name == spec), None)


def named(book: PriceBook, text: str) -> Setup:
    """A setup as people write it: 'N x GPU' (in the cheapest chassis for N), a system's name or
    alias, or a rental's name."""
    m = _COUNTED.match(text)
    if m is not None:
        count, gpu_name = int(m.group(1)), m.group(2)
        row = _gpu_row(book, gpu_name)
        if row is not None:
            if count < 1 or chassis_for(book, row, count) is None:
                biggest = max((c.max_gpus for c in book.chassis if row.form in c.forms), default=0)
                raise InvalidOptionError(
                    f"{text!r}: no chassis in the price file holds {count} {row.name} cards.",
                    hint=f"Give 1 to {biggest} of them.",
                )
            return gpu_box(book, row, count)
    key = normalize(text)
    for s in book.systems:
        if key in {normalize(n) for n in (s.name, *s.aliases)}:
            return system_box(s)
    for r in rentals(book):
        if normalize(r.name) == key:
            return r
    row = _gpu_row(book, text)
    if row is not None and m is None:
        return gpu_box(book, row, 1)
    names = (
        [f"1x {g.name}" for g in book.gpus]
        + [n for s in book.systems for n in (s.name, *s.aliases)]
        + [r.name for r in book.rentals]
    )
    close = difflib.get_close_matches(text, names, n=3, cutoff=0.5)
    raise InvalidOptionError(
        f"No priced setup called {text!r}.",
        hint=(f"Did you mean {', '.join(repr(c) for c in close)}? " if close else "")
        + "Write 'N x GPU' for a GPU in the price file, or a system's or rental's name "
        "(`kennel cost --prices-age` shows the file; --prices FILE adds your own).",
    )
