"""The overview's last hour: every ``INTERVAL`` seconds a sample of the same counters ``/metrics``
exposes (generated tokens and time to first token per model, requests by status), read from the
app's Prometheus registry and kept in a bounded deque on the console state. Rates are the
difference between neighbouring samples, so a restart of the sampler never invents a spike.

Server errors (a 5xx answer) are found the same way: a ``kennel_requests`` counter with a 5xx
status that grew between two samples is one line of "recent errors"."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from kennel.server.metrics import Metrics

INTERVAL = 10.0
WINDOW = 3600.0
MAX_ERRORS = 50


@dataclass(frozen=True)
class Sample:
    t: float  # unix seconds
    tokens: dict[str, float]  # model -> tokens generated so far
    ttft_sum: dict[str, float]  # model -> seconds to first token, summed over requests
    ttft_count: dict[str, float]  # model -> requests that got a first token
    failed: dict[tuple[str, str, str], float]  # (model, endpoint, status) -> 5xx answers so far


@dataclass(frozen=True)
class ErrorEvent:
    t: float  # unix seconds of the sample that saw it
    model: str
    endpoint: str
    status: str
    count: int


@dataclass
class Samples:
    points: deque[Sample] = field(default_factory=lambda: deque(maxlen=int(WINDOW / INTERVAL) + 1))
    errors: deque[ErrorEvent] = field(default_factory=lambda: deque(maxlen=MAX_ERRORS))

    def add(self, sample: Sample) -> None:
        if self.points:
            before = self.points[-1]
            for key, n in sample.failed.items():
                grew = n - before.failed.get(key, 0.0)
                if grew > 0:
                    self.errors.append(ErrorEvent(sample.t, *key, int(grew)))
        self.points.append(sample)

    def tokens_per_s(self, model: str) -> list[tuple[float, float | None]]:
        """(t, generated tokens/s over the interval ending at t) for each pair of samples."""
        out: list[tuple[float, float | None]] = []
        for a, b in _pairs(self.points):
            dt = b.t - a.t
            n = b.tokens.get(model, 0.0) - a.tokens.get(model, 0.0)
            out.append((b.t, n / dt if dt > 0 and n >= 0 else None))
        return out

    def ttft_ms(self, model: str) -> list[tuple[float, float | None]]:
        """(t, mean time to first token in ms of the requests that started in the interval);
        None (a gap) when none did."""
        out: list[tuple[float, float | None]] = []
        for a, b in _pairs(self.points):
            count = b.ttft_count.get(model, 0.0) - a.ttft_count.get(model, 0.0)
            total = b.ttft_sum.get(model, 0.0) - a.ttft_sum.get(model, 0.0)
            out.append((b.t, total / count * 1000 if count > 0 else None))
        return out


def _pairs(points: Iterable[Sample]) -> Iterable[tuple[Sample, Sample]]:
    return itertools.pairwise(points)


def read(metrics: Metrics, now: float) -> Sample:
    """One sample from the app's registry: the numbers a /metrics scrape would show now."""
    tokens: dict[str, float] = {}
    ttft_sum: dict[str, float] = {}
    ttft_count: dict[str, float] = {}
    failed: dict[tuple[str, str, str], float] = {}
    for family in metrics.generation_tokens.collect():
        for s in family.samples:
            if s.name.endswith("_total"):
                tokens[s.labels["model"]] = s.value
    for family in metrics.ttft.collect():
        for s in family.samples:
            if s.name.endswith("_sum"):
                ttft_sum[s.labels["model"]] = s.value
            elif s.name.endswith("_count"):
                ttft_count[s.labels["model"]] = s.value
    for family in metrics.requests.collect():
        for s in family.samples:
            if s.name.endswith("_total") and s.labels["status"].startswith("5"):
                failed[(s.labels["model"], s.labels["endpoint"], s.labels["status"])] = s.value
    return Sample(now, tokens, ttft_sum, ttft_count, failed)


async def run(
    metrics: Metrics, samples: Samples, *, interval: float = INTERVAL, clock: Callable[[], float] = time.time
) -> None:
    """Sample now, then every ``interval`` seconds until cancelled (the app's lifespan ends)."""
    while True:
        samples.add(read(metrics, clock()))
        await asyncio.sleep(interval)
