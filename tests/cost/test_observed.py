"""`kennel cost --from URL`: a server's /metrics, read twice, as measured speeds."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from kennel.cost.observed import calibrate, parse_metrics, quantile, scrape
from kennel.errors import RemoteError
from kennel.fit.throughput import Throughput
from kennel.server.metrics import Metrics


def server_metrics(parallel: int = 4) -> Metrics:
    """The real server's metrics object (so the names cannot drift), over a pool of one model."""
    slot = SimpleNamespace(
        waiting=0,
        running=0,
        state="ready",
        memory=SimpleNamespace(ram=0, vram=()),
        loads=1,
        spec=SimpleNamespace(plan=SimpleNamespace(parallel=parallel), pinned=False),
    )
    pool: Any = SimpleNamespace(slots={"qwen": slot}, max_queue=64)
    return Metrics(pool)


def serve(
    m: Metrics, requests: int, *, prompt: int, output: int, ttft: float, queue: float, itl: float
) -> None:
    """What the server records for ``requests`` finished requests of the same shape."""
    for _ in range(requests):
        m.requests.labels("qwen", "chat", "200").inc()
        m.prompt_tokens.labels("qwen").inc(prompt)
        m.generation_tokens.labels("qwen").inc(output)
        m.queue_time.labels("qwen").observe(queue)
        m.ttft.labels("qwen").observe(ttft)
        for _ in range(output - 1):
            m.itl.labels("qwen").observe(itl)
        m.duration.labels("qwen", "chat").observe(ttft + (output - 1) * itl)


def test_parse_the_servers_own_metrics() -> None:
    m = server_metrics(parallel=4)
    serve(m, 10, prompt=500, output=101, ttft=0.6, queue=0.1, itl=0.05)
    m.requests.labels("unknown", "chat", "401").inc(7)  # refusals: no tokens, and no model
    m.requests.labels("qwen", "chat", "500").inc()
    s = parse_metrics(m.render().decode())
    assert s.requests == 10 and s.prompt_tokens == 5000 and s.generation_tokens == 1010
    assert s.ttft_count == 10 and s.ttft_sum == pytest.approx(6.0)
    assert s.itl_count == 1000 and s.itl_sum == pytest.approx(50.0)
    assert s.parallel == 4 and s.models == ("qwen",)
    # every TTFT was 0.6 s: the 95th percentile lies in the (0.5, 1] bucket
    p95 = quantile(0.95, s.ttft_buckets)
    assert p95 is not None and 0.5 < p95 <= 1.0


def test_quantile_interpolates_like_prometheus() -> None:
    buckets = ((1.0, 50.0), (2.0, 100.0), (float("inf"), 100.0))
    assert quantile(0.5, buckets) == pytest.approx(1.0)
    assert quantile(0.75, buckets) == pytest.approx(1.5)
    assert quantile(0.5, ((1.0, 0.0), (float("inf"), 0.0))) is None


def test_two_reads_give_rates_over_the_window() -> None:
    m = server_metrics()
    serve(m, 5, prompt=100, output=11, ttft=2.0, queue=1.0, itl=1.0)  # before the window: ignored
    pages = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/metrics"
        pages.append(1)
        return httpx.Response(200, text=m.render().decode())

    def sleep(seconds: float) -> None:  # the window: 20 requests of 500 + 101 tokens in 10 s
        assert seconds == 10.0
        serve(m, 20, prompt=500, output=101, ttft=0.6, queue=0.1, itl=0.05)

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        seen = scrape("http://kennel.test/", model="qwen", window_s=10.0, client=client, sleep=sleep)
    assert len(pages) == 2 and seen.window_s == 10.0
    assert seen.requests == 20 and seen.prompt_tokens == 500 and seen.output_tokens == 101
    assert seen.decode_tok_s == pytest.approx(20.0)  # 1 / 0.05 s between tokens
    assert seen.prefill_tok_s == pytest.approx(500 / 0.5)  # prompt over (TTFT - queue)
    # Little's law: 20 requests of 0.6 + 100 x 0.05 = 5.6 s each in 10 s = 11.2 at once
    assert seen.in_flight == pytest.approx(11.2)
    est = Throughput(11, 500, 101, prefill_tok_s=2000.0, step_per_s=25.0, calibrated=False)
    cal = calibrate(seen, est)
    assert cal.measured and cal.decode == pytest.approx(20 / 25) and cal.prefill == pytest.approx(0.5)


def test_an_idle_server_or_no_server_says_what_to_do() -> None:
    m = server_metrics()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=m.render().decode())

    with httpx.Client(transport=httpx.MockTransport(handler)) as client, pytest.raises(RemoteError) as err:
        scrape("http://kennel.test", window_s=0, client=client)
    assert "no request" in err.value.message and err.value.hint

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with httpx.Client(transport=httpx.MockTransport(refused)) as client, pytest.raises(RemoteError) as err:
        scrape("http://kennel.test", window_s=0, client=client)
    assert "Cannot read" in err.value.message

    def forbidden(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, text="no")

    with httpx.Client(transport=httpx.MockTransport(forbidden)) as client, pytest.raises(RemoteError) as err:
        scrape("http://kennel.test", window_s=0, client=client)
    assert "HTTP 401" in err.value.message
