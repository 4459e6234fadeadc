"""Measured speeds from a running `kennel serve` (`kennel cost --from URL`): its /metrics, read twice.

Between two scrapes ``window`` seconds apart (or, on an idle server, over everything since it
started), from kennel's own metric names:

- decode tokens a second per request = inter-token latency count / its sum;
- prefill tokens a second = prompt tokens / (time to first token - queue time), summed;
- requests in flight on average (Little's law) = the sum of request durations / the window;
- TTFT p95 from the histogram's buckets, interpolated as Prometheus' histogram_quantile does.

Divided by the speed model's figures for the same request sizes and concurrency, they give a
calibration, used as `kennel fit --measure`'s is.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

from kennel.errors import RemoteError
from kennel.fit.speed import Calibration
from kennel.fit.throughput import Throughput


@dataclass(frozen=True)
class Sample:
    """kennel's counters at one scrape, summed over the chosen model(s)."""

    requests: float = 0.0
    prompt_tokens: float = 0.0
    generation_tokens: float = 0.0
    ttft_sum: float = 0.0
    ttft_count: float = 0.0
    ttft_buckets: tuple[tuple[float, float], ...] = ()  # (upper bound, cumulative count)
    queue_sum: float = 0.0
    duration_sum: float = 0.0
    itl_sum: float = 0.0
    itl_count: float = 0.0
    parallel: int | None = None
    models: tuple[str, ...] = ()

    def minus(self, earlier: Sample) -> Sample:
        before = dict(earlier.ttft_buckets)
        return Sample(
            requests=self.requests - earlier.requests,
            prompt_tokens=self.prompt_tokens - earlier.prompt_tokens,
            generation_tokens=self.generation_tokens - earlier.generation_tokens,
            ttft_sum=self.ttft_sum - earlier.ttft_sum,
            ttft_count=self.ttft_count - earlier.ttft_count,
            ttft_buckets=tuple((le, n - before.get(le, 0.0)) for le, n in self.ttft_buckets),
            queue_sum=self.queue_sum - earlier.queue_sum,
            duration_sum=self.duration_sum - earlier.duration_sum,
            itl_sum=self.itl_sum - earlier.itl_sum,
            itl_count=self.itl_count - earlier.itl_count,
            parallel=self.parallel,
            models=self.models,
        )


def parse_metrics(text: str, model: str | None = None) -> Sample:
    """kennel's series in a /metrics page; only ``model``'s when the server serves one by that name."""
    values: dict[str, float] = {}
    buckets: dict[float, float] = {}
    parallel: list[float] = []
    models: set[str] = set()
    rows = [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples]
    served = {labels.get("model", "") for name, labels, _ in rows if name.startswith("kennel_")}
    only = model if model in served else None
    for name, labels, value in rows:
        if not name.startswith("kennel_") or (only is not None and labels.get("model") != only):
            continue
        if name == "kennel_requests_total" and labels.get("status") != "200":
            continue  # refused and failed requests carry no tokens: per-request figures are of answers
        if labels.get("model") not in (None, "unknown"):  # "unknown": names a client made up
            models.add(labels["model"])
        if name == "kennel_time_to_first_token_seconds_bucket":
            le = float(labels["le"])
            buckets[le] = buckets.get(le, 0.0) + value
        elif name == "kennel_model_parallel":
            parallel.append(value)
        else:
            values[name] = values.get(name, 0.0) + value
    return Sample(
        requests=values.get("kennel_requests_total", 0.0),
        prompt_tokens=values.get("kennel_prompt_tokens_total", 0.0),
        generation_tokens=values.get("kennel_generation_tokens_total", 0.0),
        ttft_sum=values.get("kennel_time_to_first_token_seconds_sum", 0.0),
        ttft_count=values.get("kennel_time_to_first_token_seconds_count", 0.0),
        ttft_buckets=tuple(sorted(buckets.items())),
        queue_sum=values.get("kennel_request_queue_time_seconds_sum", 0.0),
        duration_sum=values.get("kennel_request_duration_seconds_sum", 0.0),
        itl_sum=values.get("kennel_inter_token_latency_seconds_sum", 0.0),
        itl_count=values.get("kennel_inter_token_latency_seconds_count", 0.0),
        parallel=int(max(parallel)) if parallel else None,
        models=tuple(sorted(models)),
    )


def quantile(q: float, buckets: tuple[tuple[float, float], ...]) -> float | None:
    """Prometheus' histogram_quantile: linear within the bucket the rank falls in."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_le, lower_n = 0.0, 0.0
    for le, n in buckets:
        if n >= rank:
            if math.isinf(le):
                return lower_le  # beyond the last finite bound: that bound is all one can say
            width = n - lower_n
            return lower_le + (le - lower_le) * ((rank - lower_n) / width if width else 1.0)
        lower_le, lower_n = le, n
    return None


@dataclass(frozen=True)
class Observed:
    """What the server did over the window (``None``: since it started)."""

    url: str
    window_s: float | None
    requests: float
    prompt_tokens: float  # per request
    output_tokens: float  # per request
    decode_tok_s: float  # per request, while it streams
    prefill_tok_s: float
    ttft_p95_s: float | None
    in_flight: float  # requests at once on average (1 when the window is unknown)
    parallel: int | None
    models: tuple[str, ...]

    def lines(self) -> list[str]:
        span = f"over {self.window_s:g} s" if self.window_s else "since the server started"
        ttft = f", TTFT p95 {self.ttft_p95_s:.2f} s" if self.ttft_p95_s is not None else ""
        return [
            f"{self.url} {span}: {self.requests:.0f} requests of {self.prompt_tokens:.0f} prompt + "
            f"{self.output_tokens:.0f} output tokens, {self.in_flight:.1f} at once on average; "
            f"decode {self.decode_tok_s:.1f} tok/s per request, prefill {self.prefill_tok_s:.0f} tok/s{ttft}"
        ]


def observe(url: str, before: Sample | None, after: Sample, window_s: float | None) -> Observed:
    """The figures between two samples, or over ``after`` alone when the window saw no request."""
    d = after.minus(before) if before is not None else after
    span: float | None = window_s
    if d.requests < 1 or d.itl_count < 1:
        d, span = after, None  # an idle window: fall back on the totals since start
    if d.requests < 1 or d.itl_count < 1 or d.itl_sum <= 0:
        raise RemoteError(
            f"{url} has served no request yet, so there is nothing to measure.",
            hint="Send it some traffic (or run benchmarks/serve_load.py against it), then try again.",
        )
    prefill_s = d.ttft_sum - d.queue_sum
    return Observed(
        url=url,
        window_s=span,
        requests=d.requests,
        prompt_tokens=d.prompt_tokens / d.requests,
        output_tokens=d.generation_tokens / d.requests,
        decode_tok_s=d.itl_count / d.itl_sum,
        prefill_tok_s=d.prompt_tokens / prefill_s if prefill_s > 0 else 0.0,
        ttft_p95_s=quantile(0.95, d.ttft_buckets),
        in_flight=d.duration_sum / span if span else 1.0,
        parallel=after.parallel,
        models=after.models,
    )


def scrape(
    url: str,
    *,
    model: str | None = None,
    window_s: float = 10.0,
    client: httpx.Client | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Observed:
    """Read ``url``/metrics, wait ``window_s``, read it again."""
    base = url.rstrip("/").removesuffix("/metrics")
    own = client is None
    http = client or httpx.Client(timeout=10.0)
    try:
        first = _get(http, base, model)
        if window_s > 0:
            sleep(window_s)
            second = _get(http, base, model)
            return observe(base, first, second, window_s)
        return observe(base, None, first, None)
    finally:
        if own:
            http.close()


def _get(http: httpx.Client, base: str, model: str | None) -> Sample:
    try:
        r = http.get(base + "/metrics")
    except httpx.HTTPError as exc:
        raise RemoteError(
            f"Cannot read {base}/metrics: {exc}.",
            hint="Give the URL of a running `kennel serve` (e.g. http://127.0.0.1:8484).",
        ) from exc
    if r.status_code != 200:
        raise RemoteError(
            f"{base}/metrics answered HTTP {r.status_code}.",
            hint="Set metrics_public: true in the server's settings, or scrape it from where it allows.",
        )
    sample = parse_metrics(r.text, model)
    if not sample.models and not sample.requests:
        raise RemoteError(
            f"{base}/metrics has no kennel_* series: is it a kennel server?",
            hint="Give the URL of a running `kennel serve`.",
        )
    return sample


def calibrate(observed: Observed, estimated: Throughput) -> Calibration:
    """Measured over estimated, for the same request sizes and requests at once."""
    decode = observed.decode_tok_s / estimated.per_request_tok_s if estimated.per_request_tok_s else 1.0
    prefill = observed.prefill_tok_s / estimated.prefill_tok_s if observed.prefill_tok_s else 1.0
    return Calibration(decode=decode, prefill=prefill, measured=True)
