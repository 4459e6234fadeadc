"""The frozen held-out set: written without sight of the detectors and frozen before any ran on
it. These tests check the freeze and the shape, never the guard's figures on it (nothing may be
tuned to it; benchmarks/guard.py reports them as they come)."""

from __future__ import annotations

from collections import Counter

import pytest

from kennel.guard.evaluate import KINDS, evaluate, frozen_digest, is_frozen, load_examples
from kennel.guard.policy import Guard

pytestmark = pytest.mark.skipif(not is_frozen(), reason="the frozen set is not frozen yet")


def test_the_frozen_set_is_unchanged() -> None:
    actual, recorded = frozen_digest()
    assert actual == recorded, "frozen.jsonl changed after it was frozen"


def test_the_frozen_set_is_well_formed() -> None:
    examples = load_examples("frozen")
    assert len(examples) >= 150
    assert {e.label for e in examples} == {"injection", "benign"}
    assert {e.lang for e in examples} <= {"en", "vi", "zh"} and {e.kind for e in examples} <= set(KINDS)
    assert len({e.id for e in examples}) == len(examples)
    for e in examples:
        assert e.messages and all(role in ("user", "assistant", "tool", "system") for role, _ in e.messages)
        if e.label == "injection" and e.where is not None:
            assert 0 <= e.where < len(e.messages)
    indirect = Counter(e.kind != "direct" for e in examples)
    assert indirect[True] >= len(examples) // 4  # about a third are indirect


def test_every_frozen_example_runs_through_the_guard() -> None:
    examples = load_examples("frozen")
    report = evaluate(Guard("flag"), examples, rounds=1)
    assert report.metrics().n == len(examples)
    located, caught = report.located()
    assert 0 <= located <= caught
