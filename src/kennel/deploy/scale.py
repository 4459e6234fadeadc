"""How many replicas a load needs, and the replica range the autoscaler gets.

A load is a request rate, or people using it (Little's law: U users, each waiting for an answer
and then thinking S seconds, send U / (S + response time) requests a second). A replica serves
1 / (replica time per request) requests a second (``kennel.fit.throughput.Throughput``); the
replicas needed are the rate over that, rounded up. There is no extra headroom: the autoscaler
adds replicas on the queue, and the range's maximum is what it may reach.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kennel.errors import InvalidOptionError
from kennel.fit.throughput import Throughput
from kennel.units import at_least_one

MAX_REPLICAS = 1000  # a typo guard, not a cluster limit
_RANGE = re.compile(r"^\s*(\d+)\s*(?:(?:\.\.|-|:)\s*(\d+)\s*)?$")


@dataclass(frozen=True)
class Replicas:
    """The autoscaler's range (both ends included)."""

    min: int
    max: int

    @classmethod
    def parse(cls, text: str) -> Replicas:
        """``MIN..MAX`` or one number for a fixed count."""
        m = _RANGE.match(text)
        if m is None:
            raise InvalidOptionError(
                f"--replicas {text!r} is not a range.",
                hint="Give MIN..MAX, e.g. --replicas 1..4, or one number.",
            )
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if lo < 1 or hi < lo or hi > MAX_REPLICAS:
            raise InvalidOptionError(
                f"--replicas {text} is not a range of 1 to {MAX_REPLICAS} replicas with MIN <= MAX.",
                hint="For example --replicas 1..4: one replica is always kept, to answer at once.",
            )
        return cls(lo, hi)

    def __str__(self) -> str:
        return f"{self.min}..{self.max}"


@dataclass(frozen=True)
class Load:
    """The traffic to plan for: a rate, or users with a think time between their requests."""

    target_rps: float | None = None
    users: int | None = None
    think_time_s: float | None = None

    def __post_init__(self) -> None:
        if self.target_rps is not None and self.users is not None:
            raise InvalidOptionError(
                "Give either --target-rps or --users with --think-time, not both.",
                hint="--target-rps 5, or --users 200 --think-time 30.",
            )
        if (self.users is None) != (self.think_time_s is None):
            raise InvalidOptionError(
                "--users and --think-time go together.",
                hint="For example --users 200 --think-time 30 (seconds from an answer to the next question).",
            )
        if self.target_rps is not None and self.target_rps <= 0:
            raise InvalidOptionError("--target-rps must be above 0.", hint="For example --target-rps 2.5.")
        if self.users is not None and (self.users < 1 or (self.think_time_s or 0) < 0):
            raise InvalidOptionError(
                "--users must be at least 1 and --think-time at least 0.", hint="--users 200 --think-time 30."
            )

    @property
    def given(self) -> bool:
        return self.target_rps is not None or self.users is not None


@dataclass(frozen=True)
class ScaleOut:
    """The replicas a load needs, with the arithmetic that led there."""

    rps: float
    per_replica_rps: float
    needed: int
    replicas: Replicas  # the range to deploy: the asked one, its maximum raised to ``needed``
    raised: bool
    lines: tuple[str, ...]  # the load and the replicas it needs (a replica's own: Throughput.lines)


def scale_out(load: Load, tp: Throughput, asked: Replicas) -> ScaleOut:
    """Replicas = ceil(rate / one replica's rate); the range's maximum is raised to that, its
    minimum stays (keeping warm replicas is the user's call, not the load's)."""
    lines: list[str] = []
    if load.users is not None and load.think_time_s is not None:
        rps = load.users / (load.think_time_s + tp.response_s)
        lines.append(
            f"load: {load.users} users / (think {load.think_time_s:g} s + response {tp.response_s:.1f} s) = "
            f"{rps:.2f} requests/s (Little's law)"
        )
    elif load.target_rps is not None:
        rps = load.target_rps
        lines.append(f"load: {rps:g} requests/s")
    else:
        return ScaleOut(0.0, tp.rps, 0, asked, False, tuple(lines))
    # a hair under an integer is that integer: 4.0000001 replicas of float noise is still 4
    needed = at_least_one(rps / tp.rps)
    lines.append(f"replicas = ceil({rps:.2f} / {tp.rps:.2f}) = {needed}")
    replicas = asked
    if needed > asked.max:
        replicas = Replicas(asked.min, needed)
        lines.append(f"the range {asked} is raised to {replicas}: its maximum could not carry the load")
    else:
        lines.append(f"the range {asked} carries it")
    return ScaleOut(rps, tp.rps, needed, replicas, replicas != asked, tuple(lines))
