"""The labelled sets: their shape, the targets on the development set, a floor on the held-out set,
and the honesty checks (the phrase tables describe injections, they do not contain the examples)."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from kennel.guard.evaluate import Example, Report, evaluate, load_examples
from kennel.guard.normalize import normalize
from kennel.guard.phrases import CONCEPTS, RULES
from kennel.guard.policy import Guard

_CJK = re.compile(r"[\u3400-\u9fff]")


@pytest.fixture(scope="module")
def dev() -> list[Example]:
    return load_examples("eval")


@pytest.fixture(scope="module")
def holdout() -> list[Example]:
    return load_examples("holdout")


@pytest.fixture(scope="module")
def dev_report(dev: list[Example]) -> Report:
    return evaluate(Guard("flag"), dev)


def test_sets_are_well_formed(dev: list[Example], holdout: list[Example]) -> None:
    assert len(dev) >= 240
    for examples in (dev, holdout):
        assert {e.label for e in examples} == {"injection", "benign"}
        assert {e.lang for e in examples} == {"en", "vi", "zh"}
        assert all(e.text.strip() and e.style for e in examples)
        counts = Counter((e.lang, e.label) for e in examples)
        for lang in ("en", "vi", "zh"):
            total = counts[(lang, "injection")] + counts[(lang, "benign")]
            assert 0.4 <= counts[(lang, "injection")] / total <= 0.6, (lang, counts)
    texts = [e.text for e in dev + holdout]
    assert len(texts) == len(set(texts)), "an example appears twice"


def test_dev_set_meets_targets(dev_report: Report) -> None:
    """Recall >= 90 % at FPR <= 3 %, overall and per language, under 2 ms a request."""
    for lang in (None, "en", "vi", "zh"):
        m = dev_report.metrics(lang)
        assert m.recall >= 0.90, (lang, m)
        assert m.fpr <= 0.03, (lang, m)
    assert dev_report.mean_micros < 2000


def test_holdout_floor(holdout: list[Example]) -> None:
    """The held-out set is not tuned on; these are floors against regressions, not targets.
    Heuristics catch under half of the phrasings nobody anticipated (see benchmarks/guard.py):
    that is what the optional classifier is for."""
    m = evaluate(Guard("flag"), holdout, rounds=1).metrics()
    assert m.recall >= 0.40, m
    assert m.fpr <= 0.05, m


def _entries() -> list[str]:
    return [entry for entries in CONCEPTS.values() for entry in entries]


def test_tables_do_not_contain_eval_text(dev: list[Example], holdout: list[Example]) -> None:
    entries = {normalize(e).folded for e in _entries()}
    joined = "\n".join(entries)
    for example in dev + holdout:
        folded = normalize(example.text).folded
        assert folded not in entries
        assert folded not in joined, f"an example is quoted in the phrase tables: {example.text!r}"


def test_table_entries_are_short_concepts() -> None:
    """Five words or syllables, eight CJK characters at most: patterns, not memorized sentences."""
    for entry in _entries():
        if _CJK.search(entry):
            assert len(entry) <= 8, entry
        else:
            assert len(normalize(entry).tokens) <= 5, entry


def test_rules_name_existing_concepts() -> None:
    for rule in RULES:
        for name in (*rule.slots, rule.boost, rule.veto, rule.inner_veto):
            if name is not None:
                assert f"{rule.lang}.{name}" in CONCEPTS, (rule, name)
        assert 0.0 < rule.score < 1.0
        assert len(rule.gaps) >= 1
