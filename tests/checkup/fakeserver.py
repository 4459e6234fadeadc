"""A real kennel server on loopback whose engine answers from a script: fixed text per prompt
and delays a test controls, so checkup assertions pass or fail on purpose."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from kennel.engines.base import Delta, LoadPlan, Memory, Message, Sampling
from kennel.server.pool import ModelSpec
from kennel.settings import KennelHome
from tests.server.fakes import FakeEngineBase
from tests.server.serverkit import running_server


@dataclass
class Script:
    """What the fake model says: the answer for the first key found in the last user message,
    else ``default``; sent word by word, ``first_delay`` s before the first word, ``delay`` s
    between words. Tests change it while the server runs."""

    default: str = "Paris"
    answers: dict[str, str] = field(default_factory=dict)
    first_delay: float = 0.0
    delay: float = 0.0
    requests: list[Sampling] = field(default_factory=list)

    def answer(self, prompt: str) -> str:
        return next((a for k, a in self.answers.items() if k in prompt), self.default)


def pieces(text: str) -> list[str]:
    """'Paris is nice' -> ['Paris', ' is', ' nice']: one piece per word, spaces kept."""
    words = text.split(" ")
    return [words[0], *(" " + w for w in words[1:])] if text else []


class ScriptedEngine(FakeEngineBase):
    def __init__(self, spec: ModelSpec, script: Script) -> None:
        super().__init__(spec)
        self.script = script

    async def _gen(self, prompt: str) -> AsyncIterator[Delta]:
        parts = pieces(self.script.answer(prompt))
        await asyncio.sleep(self.script.first_delay)
        for i, p in enumerate(parts):
            if i:
                await asyncio.sleep(self.script.delay)
            yield Delta(p)
        yield Delta(finish_reason="stop", prompt_tokens=len(prompt.split()), completion_tokens=len(parts))

    def chat(self, messages: Sequence[Message], sampling: Sampling) -> AsyncIterator[Delta]:
        self.script.requests.append(sampling)
        return self._gen(messages[-1].content)

    def complete(self, prompt: str, sampling: Sampling) -> AsyncIterator[Delta]:
        return self._gen(prompt)


def fake_spec(name: str) -> ModelSpec:
    return ModelSpec(
        name=name, plan=LoadPlan(model=Path("/nonexistent.gguf"), context=4096), memory=Memory(ram=1 << 20)
    )


@contextmanager
def scripted_server(script: Script, home: KennelHome, *, models: Sequence[str] = ("fake",)) -> Iterator[str]:
    """The server's base URL (http://127.0.0.1:PORT) serving ``models``, all answering from ``script``."""
    with running_server(
        [fake_spec(m) for m in models],
        home,
        engine_factory=lambda s: ScriptedEngine(s, script),
        budget=Memory(ram=1 << 30),
    ) as url:
        yield url


def suite_yaml(*prompts: str, name: str = "t", threshold: float | None = None) -> str:
    """A suite from prompt entries written as YAML flow mappings."""
    head = f"name: {name}\n" + (f"threshold: {threshold}\n" if threshold is not None else "")
    return head + "prompts:\n" + "".join(f"  - {p}\n" for p in prompts)
