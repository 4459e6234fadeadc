"""The request timeout against an engine that says nothing: the server tells the engine to stop
and answers with what it has (nothing, finish_reason "length"); an engine that ends a request
without its end (no finish reason) before the timeout is the engine's failure (500, or an error
event once a stream has started), not a timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from kennel.engines.base import Delta, LoadPlan, Memory, Request
from kennel.server.pool import ModelSpec
from kennel.settings import KennelHome
from tests.server.fakes import FakeEngineBase
from tests.server.serverkit import running_server

pytestmark = pytest.mark.timeout(60)

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


class SilentEngine(FakeEngineBase):
    """Thinks until told to stop, then ends without a word (as llama.cpp does on abort)."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self.stops: dict[str, asyncio.Event] = {}

    async def _silence(self, request_id: str) -> AsyncIterator[Delta]:
        await self.stops.setdefault(request_id, asyncio.Event()).wait()
        return
        yield  # an async generator that yields nothing

    def generate(self, request: Request, request_id: str) -> AsyncIterator[Delta]:
        return self._silence(request_id)

    async def abort(self, request_id: str) -> None:
        await super().abort(request_id)
        self.stops.setdefault(request_id, asyncio.Event()).set()


class MuteEngine(FakeEngineBase):
    """Ends every request at once, without a word and without a finish."""

    async def _nothing(self) -> AsyncIterator[Delta]:
        return
        yield

    def generate(self, request: Request, request_id: str) -> AsyncIterator[Delta]:
        return self._nothing()


class HalfEngine(FakeEngineBase):
    """Says a word, then ends the request without a finish reason (and without an error)."""

    async def _half(self) -> AsyncIterator[Delta]:
        yield Delta("Xin ", prompt_tokens=2)

    def generate(self, request: Request, request_id: str) -> AsyncIterator[Delta]:
        return self._half()


def _spec() -> ModelSpec:
    return ModelSpec(name="m", plan=LoadPlan(model=Path("/none.gguf"), context=256), memory=Memory(ram=1))


@pytest.mark.parametrize("stream", [False, True])
def test_a_silent_generation_ends_at_the_timeout_with_an_empty_answer(tmp_path: Path, stream: bool) -> None:
    engines: list[SilentEngine] = []

    def factory(spec: ModelSpec) -> SilentEngine:
        engines.append(SilentEngine(spec))
        return engines[-1]

    home = KennelHome(tmp_path / "h")
    with running_server([_spec()], home, engine_factory=factory, request_timeout=0.3) as url:
        r = httpx.post(url + "/v1/chat/completions", json={**BODY, "stream": stream}, timeout=30)
        assert r.status_code == 200
        if stream:
            assert '"finish_reason": "length"' in r.text and r.text.rstrip().endswith("data: [DONE]")
        else:
            choice = r.json()["choices"][0]
            assert choice["finish_reason"] == "length" and choice["message"]["content"] == ""
        assert len(engines[0].aborted) == 1  # the engine was told to stop that request


def test_an_engine_that_ends_a_request_without_a_word_is_a_server_error(tmp_path: Path) -> None:
    home = KennelHome(tmp_path / "h")
    with running_server([_spec()], home, engine_factory=MuteEngine, request_timeout=30) as url:
        r = httpx.post(url + "/v1/chat/completions", json=BODY, timeout=30)
        assert r.status_code == 500
        assert r.json()["error"]["message"] == "m ended the request before answering."


def test_an_engine_that_stops_mid_answer_is_a_server_error_not_a_short_answer(tmp_path: Path) -> None:
    home = KennelHome(tmp_path / "h")
    with running_server([_spec()], home, engine_factory=HalfEngine, request_timeout=30) as url:
        r = httpx.post(url + "/v1/chat/completions", json=BODY, timeout=30)
        assert r.status_code == 500
        assert r.json()["error"]["message"].startswith("m stopped in the middle of its answer. Retry;")
        streamed = httpx.post(url + "/v1/chat/completions", json={**BODY, "stream": True}, timeout=30)
        assert '"content": "Xin "' in streamed.text and "stopped in the middle of its answer" in streamed.text
        assert '"finish_reason": "length"' not in streamed.text
        assert 'status="500"' in httpx.get(url + "/metrics").text
