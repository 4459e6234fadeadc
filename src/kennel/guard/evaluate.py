"""Measuring the guard against the labelled sets in ``guard/data``.

``eval.jsonl`` is the development set: the heuristics were tuned while looking at it, so its
figures are optimistic. ``holdout.jsonl`` was written after the tables were settled and is not
tuned on; its figures are the honest estimate for phrasings nobody anticipated. Each line is
``{"text", "label": "injection"|"benign", "lang": "en"|"vi"|"zh", "style"}``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Literal

from kennel.guard.policy import Guard, Verdict

Label = Literal["injection", "benign"]
SETS = ("eval", "holdout")


@dataclass(frozen=True)
class Example:
    text: str
    label: Label
    lang: str
    style: str


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

    def metrics(self, lang: str | None = None) -> Metrics:
        tp = fp = tn = fn = 0
        for o in self.outcomes:
            if lang is not None and o.example.lang != lang:
                continue
            positive = o.example.label == "injection"
            if o.verdict.suspicious:
                tp, fp = tp + positive, fp + (not positive)
            else:
                fn, tn = fn + positive, tn + (not positive)
        return Metrics(tp, fp, tn, fn)

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
    text = resources.files("kennel.guard").joinpath("data", f"{name}.jsonl").read_text(encoding="utf-8")
    return [Example(**json.loads(line)) for line in text.splitlines() if line.strip()]


def evaluate(guard: Guard, examples: Sequence[Example], *, rounds: int = 3) -> Report:
    """Scan every example; timings are the best of ``rounds`` passes (the first also warms the
    detector's word cache, as a running server's would be)."""
    outcomes = tuple(Outcome(e, guard.scan(e.text)) for e in examples)
    best = [float("inf")] * len(examples)
    for _ in range(rounds):
        for i, e in enumerate(examples):
            started = time.perf_counter()
            guard.scan(e.text)
            best[i] = min(best[i], (time.perf_counter() - started) * 1e6)
    return Report(outcomes, tuple(best))
