"""Prometheus metrics, named kennel_* in the spirit of vLLM's (vllm:time_to_first_token_seconds...).

One registry per app (no module-level state). Counters and histograms are updated by the
request handlers; the pool's state (queue depth, running requests, loaded models and their
memory) is read at scrape time by a collector, so it can never drift from the truth.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from kennel.server.pool import Pool

if TYPE_CHECKING:
    from kennel.checkup.runner import RunResult

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320)
_ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)


@dataclass(frozen=True)
class CheckupOutcome:
    """What the metrics keep of one checkup run (the CSV and SQLite history keep the rest)."""

    model: str
    suite: str
    passed: int  # prompts that passed
    total: int  # prompts answered or failed; 0 when the run could not start
    mean_latency_s: float | None
    ended_at: float  # Unix time

    @classmethod
    def of(cls, model: str, suite: str, run: RunResult | None) -> CheckupOutcome:
        if run is None:
            return cls(model, suite, 0, 0, None, time.time())
        times = [r.response.latency_ms for r in run.results if r.response.latency_ms is not None]
        return cls(
            model=model,
            suite=suite,
            passed=sum(1 for r in run.results if r.passed),
            total=len(run.results),
            mean_latency_s=sum(times) / len(times) / 1000 if times else None,
            ended_at=time.time(),
        )


class Metrics:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "kennel_requests",
            "Requests by model, endpoint and HTTP status.",
            ["model", "endpoint", "status"],
            registry=r,
        )
        self.prompt_tokens = Counter(
            "kennel_prompt_tokens", "Prompt tokens processed.", ["model"], registry=r
        )
        self.generation_tokens = Counter(
            "kennel_generation_tokens", "Tokens generated.", ["model"], registry=r
        )
        self.ttft = Histogram(
            "kennel_time_to_first_token_seconds",
            "Time from request to first token.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "kennel_inter_token_latency_seconds",
            "Time between streamed tokens.",
            ["model"],
            buckets=_ITL_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            "kennel_request_duration_seconds",
            "End-to-end request time.",
            ["model", "endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_time = Histogram(
            "kennel_request_queue_time_seconds",
            "Time waiting for the model's turn.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.guard = Counter(
            "kennel_guard_decisions",
            "Prompt-injection guard decisions by model and by the stage that made them (heuristics, "
            "classifier, llm, similarity; canary for leaks): clean, suspicious, flagged, blocked, or "
            "the second stage's timeout or error.",
            ["model", "stage", "decision"],
            registry=r,
        )
        # scheduled checkups (`checkups:` in the serve config): the dashboard's pass rate and the
        # "checkups failing" alert read these, so a quality drift shows next to the traffic
        self.checkup_runs = Counter(
            "kennel_checkup_runs",
            "Scheduled checkup runs by model, suite and result (passed, failed, error).",
            ["model", "suite", "result"],
            registry=r,
        )
        self.checkup_pass_ratio = Gauge(
            "kennel_checkup_pass_ratio",
            "Share of the last checkup run's prompts that passed.",
            ["model", "suite"],
            registry=r,
        )
        self.checkup_latency = Gauge(
            "kennel_checkup_latency_seconds",
            "Mean answer time of the last checkup run's prompts.",
            ["model", "suite"],
            registry=r,
        )
        self.checkup_last_run = Gauge(
            "kennel_checkup_last_run_timestamp_seconds",
            "When the last checkup run ended (Unix time).",
            ["model", "suite"],
            registry=r,
        )
        r.register(_PoolCollector(pool))

    def model_label(self, name: str) -> str:
        """Only served models become label values: any other name a client sends is "unknown",
        so made-up names cannot grow /metrics (and the server's memory) without bound."""
        return name if name in self.pool.slots else "unknown"

    def record_checkup(self, outcome: CheckupOutcome) -> None:
        model = self.model_label(outcome.model)
        result = "error" if outcome.total == 0 else "passed" if outcome.passed == outcome.total else "failed"
        self.checkup_runs.labels(model, outcome.suite, result).inc()
        if outcome.total:
            self.checkup_pass_ratio.labels(model, outcome.suite).set(outcome.passed / outcome.total)
        if outcome.mean_latency_s is not None:
            self.checkup_latency.labels(model, outcome.suite).set(outcome.mean_latency_s)
        self.checkup_last_run.labels(model, outcome.suite).set(outcome.ended_at)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _PoolCollector(Collector):
    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    def collect(self) -> Iterator[GaugeMetricFamily]:
        waiting = GaugeMetricFamily(
            "kennel_requests_waiting", "Requests queued for a model.", labels=["model"]
        )
        running = GaugeMetricFamily("kennel_requests_running", "Requests being generated.", labels=["model"])
        loaded = GaugeMetricFamily(
            "kennel_model_loaded", "1 when the model is loaded and warm.", labels=["model"]
        )
        memory = GaugeMetricFamily(
            "kennel_model_memory_bytes",
            "Memory a loaded model holds (as its engine reports it, else the fit estimate).",
            labels=["model", "kind"],
        )
        parallel = GaugeMetricFamily(
            "kennel_model_parallel", "Requests the model decodes together; more wait.", labels=["model"]
        )
        loads = GaugeMetricFamily(
            "kennel_model_loads", "Times the model was loaded since start.", labels=["model"]
        )
        pinned = GaugeMetricFamily(
            "kennel_model_pinned", "1 when the model is pinned: it should always be loaded.", labels=["model"]
        )
        limit = GaugeMetricFamily(
            "kennel_model_queue_limit",
            "Requests queued or running for the model before new ones get 429.",
            labels=["model"],
        )
        for name, s in self.pool.slots.items():
            waiting.add_metric([name], s.waiting)
            running.add_metric([name], s.running)
            ready = s.state == "ready"
            loaded.add_metric([name], 1.0 if ready else 0.0)
            memory.add_metric([name, "ram"], s.memory.ram if ready else 0)
            memory.add_metric([name, "vram"], sum(s.memory.vram) if ready else 0)
            loads.add_metric([name], s.loads)
            parallel.add_metric([name], s.spec.plan.parallel)
            pinned.add_metric([name], 1.0 if s.spec.pinned else 0.0)
            limit.add_metric([name], self.pool.max_queue)
        yield from (waiting, running, loaded, memory, loads, parallel, pinned, limit)
