"""The app in process (FastAPI's TestClient) with a fake engine, for the console's HTTP tests:
sessions, CSRF, roles, languages. The browser tests (conftest.py) drive a real `kennel serve`."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from fastapi.testclient import TestClient

from kennel.engines.base import Delta, LoadPlan, Memory, Message, Sampling
from kennel.server.app import create_app
from kennel.server.pool import ModelSpec
from kennel.server.settings import ServeSettings
from kennel.settings import KennelHome
from tests.server.fakes import FakeEngineBase

BASE = "http://127.0.0.1:8484"


class WordsEngine(FakeEngineBase):
    """Answers with a few words, one per delta, a little apart (the chat streams them)."""

    words = ("Hello", " from", " the", " fake", " engine.")

    async def _gen(self) -> AsyncIterator[Delta]:
        for word in self.words:
            await asyncio.sleep(0.01)
            yield Delta(word)
        yield Delta(finish_reason="stop", prompt_tokens=3, completion_tokens=len(self.words))

    def chat(self, messages: Sequence[Message], sampling: Sampling) -> AsyncIterator[Delta]:
        return self._gen()

    def complete(self, prompt: str, sampling: Sampling) -> AsyncIterator[Delta]:
        return self._gen()


def fake_spec(name: str = "tiny") -> ModelSpec:
    return ModelSpec(
        name=name, plan=LoadPlan(model=Path("/nonexistent.gguf"), context=256), memory=Memory(ram=1 << 20)
    )


@contextmanager
def console_client(home: Path, *, base_url: str = BASE, **settings: object) -> Iterator[TestClient]:
    cfg = ServeSettings(port=8484, **settings)  # type: ignore[arg-type]
    app = create_app(
        cfg, [fake_spec()], budget=Memory(ram=1 << 30), engine_factory=WordsEngine, home=KennelHome(home)
    )
    with TestClient(app, base_url=base_url) as client:
        yield client


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def sign_in(client: TestClient, secret: str) -> None:
    token = csrf_of(client.get("/ui/signin").text)
    r = client.post(
        "/ui/signin", data={"key": secret, "csrf_token": token, "next": "/ui/"}, follow_redirects=False
    )
    assert r.status_code == 303, r.text
