"""The overview's numbers: the sampler reads the same counters as /metrics, rates come from
neighbouring samples, 5xx answers become "recent errors"; the page shows each model's state."""

from __future__ import annotations

import re
from pathlib import Path

from kennel.console.sampler import Samples, read
from kennel.engines.base import Memory
from kennel.server.metrics import Metrics
from kennel.server.pool import Pool
from tests.console.apptest import WordsEngine, console_client, fake_spec


def test_rates_and_errors_from_the_metrics_counters() -> None:
    pool = Pool([fake_spec("a"), fake_spec("b")], budget=Memory(ram=1 << 30), engine_factory=WordsEngine)
    metrics = Metrics(pool)
    samples = Samples()
    samples.add(read(metrics, 1000.0))
    metrics.generation_tokens.labels("a").inc(100)
    metrics.ttft.labels("a").observe(0.2)
    metrics.ttft.labels("a").observe(0.4)
    metrics.requests.labels("a", "chat", "200").inc(2)
    metrics.requests.labels("a", "chat", "500").inc(3)
    samples.add(read(metrics, 1010.0))
    metrics.requests.labels("b", "embeddings", "503").inc()
    samples.add(read(metrics, 1020.0))
    assert samples.tokens_per_s("a") == [(1010.0, 10.0), (1020.0, 0.0)]
    ttft = samples.ttft_ms("a")
    assert ttft[0][0] == 1010.0 and round(ttft[0][1] or 0) == 300 and ttft[1] == (1020.0, None)
    assert [(e.t, e.model, e.endpoint, e.status, e.count) for e in samples.errors] == [
        (1010.0, "a", "chat", "500", 3),
        (1020.0, "b", "embeddings", "503", 1),
    ]
    assert samples.tokens_per_s("b") == [(1010.0, 0.0), (1020.0, 0.0)]


def test_the_window_is_bounded() -> None:
    pool = Pool([fake_spec("a")], budget=Memory(ram=1 << 30), engine_factory=WordsEngine)
    metrics = Metrics(pool)
    samples = Samples()
    for i in range(1000):
        samples.add(read(metrics, 1000.0 + 10 * i))
    assert len(samples.points) == 361 and samples.points[0].t == 1000.0 + 10 * (1000 - 361)


def test_the_page_shows_idle_then_warm_with_its_unload_time(tmp_path: Path) -> None:
    with console_client(tmp_path / "home") as client:
        page = client.get("/ui/").text
        assert re.search(r'data-state="idle">Idle \(not loaded\)<', page) and "not loaded" in page
        r = client.post(
            "/v1/chat/completions", json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
        )
        assert r.status_code == 200
        live = client.get("/ui/overview/live").text
        assert 'data-state="warm">Warm<' in live and "<html" not in live  # the fragment alone
        assert re.search(r"[45] min \d+ s", live)  # keep_alive 300 s
        assert "Failure alerts are off" in live and "No server errors in the last hour." in live
        assert live.count('role="img"') == 2
