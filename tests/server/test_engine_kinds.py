"""One server, models on different engine kinds: both answer within one memory budget, both
report their engine's metrics, and an engine process that dies alerts once and comes back."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kennel.engines.select import engine_factory
from kennel.settings import KennelHome
from tests.loopback import webhook_receiver
from tests.server.serverkit import running_server, spec_for

pytestmark = [pytest.mark.llama, pytest.mark.timeout(300)]


def _chat(url: str, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=60)


def _llama_server_pid(model: Path) -> int:
    for child in psutil.Process().children(recursive=True):
        try:
            cmd = child.cmdline()
        except psutil.Error:
            continue
        if cmd and cmd[0].endswith("llama-server") and str(model) in cmd:
            return int(child.pid)
    raise AssertionError("no llama-server process for the model")


def test_two_engine_kinds_serve_together_and_a_dead_engine_alerts_once(make_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    home = KennelHome(tmp_path / "home")
    inproc, _ = make_model(n_vocab=512)
    external, _ = make_model(n_vocab=512, n_layer=3)
    specs = [
        spec_for(inproc, home, name="inproc"),
        spec_for(external, home, name="external", engine="llama-server"),
    ]
    assert [s.engine for s in specs] == ["llamacpp", "llama-server"]
    make = engine_factory(ready_timeout=60)
    with (
        webhook_receiver() as (hook, got),
        running_server(
            specs,
            home,
            engine_factory=lambda s: make(s.engine, s.plan, s.name),
            alerts={"notify": [f"webhook:{hook}"], "threshold": 3},
        ) as url,
    ):
        for name in ("inproc", "external"):
            r = _chat(url, name)
            assert r.status_code == 200, r.text
            assert r.json()["usage"]["completion_tokens"] >= 1
        ps = httpx.get(url + "/kennel/ps").json()
        assert {m["model"]: m["state"] for m in ps["models"]} == {"inproc": "ready", "external": "ready"}
        held = sum(m["ram_bytes"] for m in ps["models"])
        assert 0 < held <= ps["budget"]["ram_bytes"]
        families = text_string_to_metric_families(httpx.get(url + "/metrics").text)
        labelled = {
            s.labels.get("model") for f in families if f.name.startswith("llamacpp:") for s in f.samples
        }
        assert labelled == {"inproc", "external"}

        os.kill(_llama_server_pid(external), signal.SIGKILL)
        deadline = time.monotonic() + 90
        answered = None
        while time.monotonic() < deadline:
            r = _chat(url, "external")
            if r.status_code == 200:
                answered = r
                break
            # while it restarts: 503 with Retry-After
            assert r.status_code == 503 and r.headers.get("retry-after"), r.text
            time.sleep(0.5)
        assert answered is not None, "the engine never came back"
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # a second alert, if there were one, would have arrived by now
        assert _chat(url, "inproc").status_code == 200  # the other model never noticed
    stopped = [a for a in got if "engine stopped" in str(a)]
    assert len(stopped) == 1 and "external" in str(stopped[0])
