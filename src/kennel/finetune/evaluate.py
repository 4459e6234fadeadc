"""The proof before a fine-tuned version is tagged: the held-out conversations (and, when given,
a checkup suite) answered by the base and by the candidate, both in llama.cpp exactly as
`kennel serve` would load them, greedy, one after the other.

Exact match compares whitespace-normalized text: the answer must be the assistant's turn, word
for word. The candidate wins when it gets more exact matches, or as many with a lower eval loss,
and passes no fewer suite prompts.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from kennel.checkup.assertions import Response, score
from kennel.checkup.suite import Suite
from kennel.engines.base import Adapter, Answer, Engine, Message, Request, Sampling
from kennel.finetune.data import Example, Turn
from kennel.finetune.encode import with_system

if TYPE_CHECKING:
    from kennel.server.pool import ModelSpec

SUITE_MAX_TOKENS = 256  # a suite prompt that sets no max_tokens


@dataclass(frozen=True)
class EvalCase:
    line: int
    turns: tuple[Turn, ...]  # the conversation before the assistant's turn
    expected: str
    max_tokens: int


@dataclass(frozen=True)
class Scores:
    exact: int
    cases: int
    answers: tuple[str, ...]
    loss: float | None = None
    suite_passed: int | None = None
    suite_total: int | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "exact_match": self.exact,
            "cases": self.cases,
            "loss": self.loss,
            "suite_passed": self.suite_passed,
            "suite_total": self.suite_total,
        }


def eval_cases(examples: Sequence[Example], *, max_tokens: int = 256) -> list[EvalCase]:
    """One case per learned assistant turn of each held-out conversation."""
    return [
        EvalCase(e.line, e.turns[:i], e.turns[i].content, max_tokens) for e in examples for i in e.learned
    ]


def normalize(text: str) -> str:
    return " ".join(text.split())


def wins(base: Scores, candidate: Scores) -> bool:
    if (candidate.suite_passed or 0) < (base.suite_passed or 0):
        return False
    if candidate.exact != base.exact:
        return candidate.exact > base.exact
    if base.loss is not None and candidate.loss is not None:
        return candidate.loss < base.loss
    return (candidate.suite_passed or 0) > (base.suite_passed or 0)


async def _answer(engine: Engine, messages: Sequence[Message], sampling: Sampling) -> Answer:
    out = Answer()
    deltas = engine.generate(
        Request(sampling=sampling, messages=tuple(messages)), f"ft-{uuid.uuid4().hex[:12]}"
    )
    async for d in deltas:
        out.add(d)
    return out


def _messages(turns: Sequence[Turn], system: str | None) -> list[Message]:
    return [Message(t.role, t.content) for t in with_system(turns, system)]


async def _score(
    engine: Engine, cases: Sequence[EvalCase], suite: Suite | None, system: str | None
) -> tuple[int, list[str], int | None]:
    await engine.load()  # an adapter llama.cpp refuses fails here, before anything is tagged
    try:
        answers = []
        for c in cases:
            greedy = Sampling(temperature=0.0, top_k=1, max_tokens=c.max_tokens, seed=0)
            answers.append((await _answer(engine, _messages(c.turns, system), greedy)).text)
        exact = sum(normalize(a) == normalize(c.expected) for a, c in zip(answers, cases, strict=True))
        passed = None
        if suite is not None:
            passed = 0
            for p in suite.prompts:
                sampling = Sampling(
                    temperature=p.temperature, seed=p.seed, max_tokens=p.max_tokens or SUITE_MAX_TOKENS
                )
                msgs = [Message(m.role, m.content) for m in p.messages]
                if system and not any(m.role == "system" for m in msgs):
                    msgs.insert(0, Message("system", system))
                text = (await _answer(engine, msgs, sampling)).text
                passed += score(p.assertions(), Response(text=text), threshold=suite.threshold_for(p)).passed
        return exact, answers, passed
    finally:
        await engine.unload()


def evaluate(
    spec: ModelSpec,
    cases: Sequence[EvalCase],
    *,
    suite: Suite | None,
    loss: float | None,
    adapter: Path | None = None,
    log_dir: Path | None = None,
) -> Scores:
    """``spec`` (the served base; with ``adapter``, the candidate) answering every case and prompt."""
    from kennel.engines.llamacpp import LlamaCppEngine
    from kennel.engines.llamacpp_log import LoadLog

    plan = replace(spec.plan, adapters=(Adapter(adapter, 1.0),)) if adapter else spec.plan
    plan = replace(plan, parallel=1)
    engine = LlamaCppEngine(plan, name=spec.name, load_log=LoadLog(log_dir) if log_dir else None)
    system = spec.profile.system if spec.profile else None
    exact, answers, passed = asyncio.run(_score(engine, cases, suite, system))
    return Scores(
        exact=exact,
        cases=len(cases),
        answers=tuple(answers),
        loss=loss,
        suite_passed=passed,
        suite_total=len(suite.prompts) if suite is not None else None,
    )
