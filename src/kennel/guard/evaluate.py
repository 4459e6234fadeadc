"""Measuring the guard against the labelled sets in ``guard/data``.

``eval.jsonl`` is the development set: the heuristics were tuned while looking at it, so its
figures are optimistic. ``holdout.jsonl`` was written after the tables were settled and is not
tuned on. Each of their lines is ``{"text", "label": "injection"|"benign", "lang", "style"}``, one
user message.

``frozen.jsonl`` was written by someone who never saw the detectors and frozen (its sha256 in
``frozen.sha256``) before any detector ran on it: conversations, a third of them indirect (the
attack inside a pasted document or a tool result). Each line is ``{"id", "label", "lang", "kind":
"direct"|"document"|"tool", "style", "messages": [{"role", "content"}], "where"}``, ``where`` the
index of the message holding the injection. Nothing is tuned on it; its figures are reported as
they come.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

from kennel.guard.policy import Guard, Verdict

Label = Literal["injection", "benign"]
SETS = ("eval", "holdout", "frozen")
KINDS = ("direct", "document", "tool")


@dataclass(frozen=True)
class Example:
    text: str  # the message that matters (the injected one, or the last untrusted one)
    label: Label
    lang: str
    style: str
    messages: tuple[tuple[str, str], ...] = ()  # (role, content); one user message when empty
    kind: str = "direct"
    where: int | None = None  # index of the message holding the injection
    id: str = ""

    @property
    def turns(self) -> tuple[tuple[str, str], ...]:
        return self.messages or (("user", self.text),)


@dataclass(frozen=True)
class Metrics:
    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def fpr(self) -> float:
        return self.fp / (self.fp + self.tn) if self.fp + self.tn else 0.0


@dataclass(frozen=True)
class Outcome:
    example: Example
    verdict: Verdict

    @property
    def correct(self) -> bool:
        return self.verdict.suspicious == (self.example.label == "injection")


@dataclass(frozen=True)
class Report:
    outcomes: tuple[Outcome, ...]
    micros: tuple[float, ...]  # per request, best of the timing rounds

    def metrics(self, lang: str | None = None, kind: str | None = None) -> Metrics:
        tp = fp = tn = fn = 0
        for o in self.outcomes:
            if (lang is not None and o.example.lang != lang) or (kind is not None and o.example.kind != kind):
                continue
            positive = o.example.label == "injection"
            if o.verdict.suspicious:
                tp, fp = tp + positive, fp + (not positive)
            else:
                fn, tn = fn + positive, tn + (not positive)
        return Metrics(tp, fp, tn, fn)

    def located(self) -> tuple[int, int]:
        """(caught injections whose verdict named the injected message, caught injections with a
        known ``where``)."""
        caught = [
            o
            for o in self.outcomes
            if o.example.label == "injection" and o.verdict.suspicious and o.example.where is not None
        ]
        return sum(o.verdict.message == o.example.where for o in caught), len(caught)

    def decided_by(self) -> dict[str, int]:
        """How many suspicious verdicts each stage made."""
        out: dict[str, int] = {}
        for o in self.outcomes:
            if o.verdict.suspicious:
                out[o.verdict.stage] = out.get(o.verdict.stage, 0) + 1
        return out

    def failures(self) -> dict[str, int]:
        """Second-stage timeouts and errors."""
        out: dict[str, int] = {}
        for o in self.outcomes:
            if o.verdict.outcome is not None and o.verdict.outcome.decision in ("timeout", "error"):
                out[o.verdict.outcome.decision] = out.get(o.verdict.outcome.decision, 0) + 1
        return out

    @property
    def mean_micros(self) -> float:
        return sum(self.micros) / len(self.micros) if self.micros else 0.0

    @property
    def p95_micros(self) -> float:
        if not self.micros:
            return 0.0
        ordered = sorted(self.micros)
        return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]

    @property
    def errors(self) -> tuple[Outcome, ...]:
        return tuple(o for o in self.outcomes if not o.correct)


def load_examples(name: str = "eval") -> list[Example]:
    if name not in SETS:
        raise ValueError(f"unknown set {name!r}; expected one of {SETS}")
    text = _data(f"{name}.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    if name == "frozen":
        return [_conversation(r) for r in rows]
    return [Example(**r, where=0 if r["label"] == "injection" else None) for r in rows]


def frozen_digest() -> tuple[str, str]:
    """(the sha256 of frozen.jsonl, the one recorded when it was frozen)."""
    actual = hashlib.sha256(_data("frozen.jsonl").read_bytes()).hexdigest()
    recorded = _data("frozen.sha256").read_text(encoding="utf-8").split()[0].lower()
    return actual, recorded


def is_frozen() -> bool:
    return bool(_data("frozen.sha256").is_file() and _data("frozen.jsonl").is_file())


def _data(name: str) -> Any:
    return resources.files("kennel.guard").joinpath("data", name)


def _conversation(row: dict[str, Any]) -> Example:
    messages = tuple((str(m["role"]), str(m.get("content") or "")) for m in row["messages"])
    where = row.get("where")
    untrusted = [
        i for i, (role, _) in enumerate(messages) if role not in ("system", "developer", "assistant")
    ]
    focus = where if where is not None else (untrusted[-1] if untrusted else len(messages) - 1)
    return Example(
        text=messages[focus][1],
        label=row["label"],
        lang=row["lang"],
        style=str(row.get("style", "")),
        messages=messages,
        kind=row.get("kind", "direct"),
        where=where,
        id=str(row.get("id", "")),
    )


def evaluate(guard: Guard, examples: Sequence[Example], *, rounds: int = 3) -> Report:
    """Scan every example; timings are the best of ``rounds`` passes (the first also warms the
    detector's word cache, as a running server's would be). A guard with a second stage is run
    through ``check`` (heuristics, then the stage under its budget), as the server runs it."""
    if guard.stage is not None:
        return asyncio.run(evaluate_staged(guard, examples, rounds=rounds))
    outcomes = tuple(Outcome(e, guard.scan_messages(e.turns)) for e in examples)
    best = [float("inf")] * len(examples)
    for _ in range(rounds):
        for i, e in enumerate(examples):
            started = time.perf_counter()
            guard.scan_messages(e.turns)
            best[i] = min(best[i], (time.perf_counter() - started) * 1e6)
    return Report(outcomes, tuple(best))


async def evaluate_staged(guard: Guard, examples: Sequence[Example], *, rounds: int = 1) -> Report:
    """``evaluate`` inside a running event loop (one the stage's models are bound to)."""
    outcomes: list[Outcome] = []
    best = [float("inf")] * len(examples)
    for r in range(max(1, rounds)):
        for i, e in enumerate(examples):
            started = time.perf_counter()
            v = await guard.check(e.turns)
            best[i] = min(best[i], (time.perf_counter() - started) * 1e6)
            if r == 0:
                outcomes.append(Outcome(e, v))
    return Report(tuple(outcomes), tuple(best))
