"""Back-pressure over HTTP with a fake engine that holds requests as long as a test wants:
full queues (429 + Retry-After), not waiting for a load (503), memory refusals (503), and a
queued client that disconnects giving its place back at once."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from kennel.engines.base import Delta, LoadPlan, Memory, Message, Sampling
from kennel.server.pool import ModelSpec
from kennel.settings import KennelHome
from tests.server.fakes import FakeEngineBase
from tests.server.serverkit import running_server

pytestmark = pytest.mark.timeout(120)


class Gate:
    """Lets a test open the fake engine's generations from outside the server's thread."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.load_delay = 0.0


class FakeEngine(FakeEngineBase):
    def __init__(self, spec: ModelSpec, gate: Gate) -> None:
        super().__init__(spec)
        self.gate = gate

    async def load(self) -> None:
        await asyncio.sleep(self.gate.load_delay)

    async def _gen(self) -> AsyncIterator[Delta]:
        while not self.gate.open.is_set():
            await asyncio.sleep(0.01)
        yield Delta("ok")
        yield Delta(finish_reason="stop", prompt_tokens=1, completion_tokens=1)

    def chat(self, messages: Sequence[Message], sampling: Sampling) -> AsyncIterator[Delta]:
        return self._gen()

    def complete(self, prompt: str, sampling: Sampling) -> AsyncIterator[Delta]:
        return self._gen()


def _spec(name: str, ram: int = 1 << 20) -> ModelSpec:
    return ModelSpec(
        name=name, plan=LoadPlan(model=Path("/nonexistent.gguf"), context=128), memory=Memory(ram=ram)
    )


@pytest.fixture
def gate() -> Gate:
    return Gate()


@pytest.fixture
def server(gate: Gate, tmp_path: Path) -> Iterator[str]:
    specs = [_spec("a"), _spec("huge", ram=1 << 40)]
    with running_server(
        specs,
        KennelHome(tmp_path / "h"),
        engine_factory=lambda s: FakeEngine(s, gate),
        budget=Memory(ram=1 << 30),
        max_queue=2,
    ) as url:
        yield url


BODY = {"model": "a", "messages": [{"role": "user", "content": "x"}]}


def _ps(url: str) -> dict[str, int]:
    m = httpx.get(url + "/kennel/ps").json()["models"][0]
    return {"waiting": m["waiting"], "running": m["running"]}


def _in_thread(url: str, results: list[int], timeout: float = 60) -> threading.Thread:
    def go() -> None:
        try:
            results.append(httpx.post(url + "/v1/chat/completions", json=BODY, timeout=timeout).status_code)
        except httpx.TimeoutException:
            results.append(-1)

    t = threading.Thread(target=go)
    t.start()
    return t


def _wait_for(cond, seconds: float = 10) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.02)


def test_full_queue_is_429_with_retry_after(server: str, gate: Gate) -> None:
    results: list[int] = []
    threads = [_in_thread(server, results) for _ in range(2)]
    _wait_for(lambda: sum(_ps(server).values()) == 2)
    r = httpx.post(server + "/v1/chat/completions", json=BODY, timeout=10)
    assert (
        r.status_code == 429
        and int(r.headers["Retry-After"]) >= 1
        and r.json()["error"]["type"] == "rate_limit_error"
    )
    gate.open.set()
    for t in threads:
        t.join()
    assert results == [200, 200]


def test_queued_client_that_leaves_frees_its_place(server: str, gate: Gate) -> None:
    holder: list[int] = []
    t = _in_thread(server, holder)
    _wait_for(lambda: _ps(server)["running"] == 1)
    left: list[int] = []
    _in_thread(server, left, timeout=0.5).join()  # gives up while queued
    assert left == [-1]
    _wait_for(lambda: _ps(server)["waiting"] == 0, seconds=5)
    gate.open.set()
    t.join()
    assert holder == [200] and _ps(server) == {"waiting": 0, "running": 0}


def test_no_wait_while_loading_and_memory_refusal(server: str, gate: Gate) -> None:
    gate.load_delay = 1.0
    gate.open.set()
    results: list[int] = []
    t = _in_thread(server, results)  # starts the slow load
    time.sleep(0.2)
    r = httpx.post(server + "/v1/chat/completions", json=BODY, headers={"X-Kennel-Wait": "0"}, timeout=10)
    assert r.status_code == 503 and "loading" in r.json()["error"]["message"] and "Retry-After" in r.headers
    t.join()
    assert results == [200]
    big = httpx.post(server + "/v1/chat/completions", json={**BODY, "model": "huge"}, timeout=10)
    assert big.status_code == 503 and "needs" in big.json()["error"]["message"]
