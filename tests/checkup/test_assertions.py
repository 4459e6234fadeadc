"""Every assertion type as a pure function of a Response: passing, failing, negated, weighted;
and the default suite's assertions against good and bad answers."""

from __future__ import annotations

from typing import Any

import pytest

from kennel.checkup.assertions import Response, evaluate, json_text, known_types, parse_assertion, score
from kennel.checkup.suite import load_default_suite

ANSWER = Response(
    text="  The capital is Paris.\n", ttft_ms=120.0, latency_ms=900.0, output_tokens=6, tokens_per_s=7.5
)


def ok(type_: str, value: Any, response: Response = ANSWER) -> bool:
    return evaluate(parse_assertion(type_, value), response).passed


# (type, value that passes on ANSWER, value that fails on it)
CASES: list[tuple[str, Any, Any]] = [
    ("equals", "The capital is Paris.", "The capital is Paris"),
    ("contains", "Paris", "paris"),
    ("icontains", "PARIS", "Lyon"),
    ("contains-any", ["Lyon", "Paris"], ["Lyon", "paris"]),
    ("icontains-any", ["lyon", "paris"], ["lyon", "nice"]),
    ("contains-all", ["capital", "Paris"], ["capital", "Lyon"]),
    ("icontains-all", ["CAPITAL", "paris"], ["capital", "lyon"]),
    ("regex", r"\bParis\b", r"^Paris"),
    ("starts-with", "The capital", "capital"),
    ("max-latency-ms", 900, 899),
    ("latency", 1000, 100),
    ("max-ttft-ms", 120, 119.5),
    ("min-tokens-per-s", 7.5, 8),
    ("max-tokens", 6, 5),
]


@pytest.mark.parametrize(("type_", "good", "bad"), CASES)
def test_each_type_and_its_negation(type_: str, good: Any, bad: Any) -> None:
    assert ok(type_, good) and not ok(type_, bad)
    assert not ok("not-" + type_, good) and ok("not-" + type_, bad)


def test_every_known_type_is_covered() -> None:
    covered = {t for t, _, _ in CASES} | {"is-json", "json-schema"}
    assert covered - {"latency"} == set(known_types())


SCHEMA = {
    "type": "object",
    "required": ["city", "population"],
    "additionalProperties": False,
    "properties": {
        "city": {"type": "string", "minLength": 2, "pattern": "^[A-Z]"},
        "population": {"type": "number", "minimum": 0},
        "tags": {"type": "array", "items": {"enum": ["big", "old"]}, "maxItems": 2},
        "rank": {"type": ["integer", "null"]},
    },
}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"city": "Tokyo", "population": 14.1}', None),
        ('```json\n{"city": "Tokyo", "population": 14, "tags": ["big"], "rank": 1}\n```', None),
        ('{"city": "Tokyo", "population": 14, "rank": 2.0}', None),  # 2.0 is an integer in JSON Schema
        ('{"city": "Tokyo", "population": 14, "rank": null}', None),
        ('{"city": "Tokyo"}', "$: missing required 'population'"),
        ('{"city": "Tokyo", "population": "14"}', "$.population: expected number, got string"),
        ('{"city": "Tokyo", "population": true}', "$.population: expected number, got boolean"),
        ('{"city": "Tokyo", "population": -1}', "$.population: -1 outside [0, inf]"),
        ('{"city": "tokyo", "population": 1}', "$.city: does not match '^[A-Z]'"),
        ('{"city": "T", "population": 1}', "$.city: length 1 outside the allowed range"),
        ('{"city": "Tokyo", "population": 1, "mayor": "x"}', "$: unexpected property 'mayor'"),
        (
            '{"city": "Tokyo", "population": 1, "tags": ["new"]}',
            '$.tags[0]: "new" is not one of ["big", "old"]',
        ),
        ('{"city": "Tokyo", "population": 1, "tags": ["big", "old", "big"]}', "$.tags: 3 items outside"),
        ('{"city": "Tokyo", "population": 1, "rank": 1.5}', "$.rank: expected integer or null, got number"),
        ("[1, 2]", "$: expected object, got array"),
        ("Tokyo has 14 million people.", "not JSON"),
    ],
)
def test_json_schema(text: str, problem: str | None) -> None:
    out = evaluate(parse_assertion("json-schema", SCHEMA), Response(text=text))
    assert out.passed == (problem is None)
    if problem:
        assert problem in out.detail and out.describe().startswith("json-schema (schema): ")


def test_is_json_with_and_without_schema() -> None:
    assert ok("is-json", None, Response(text=' {"a": [1, 2]} '))
    assert ok("is-json", None, Response(text="```\n[1]\n```"))
    assert not ok("is-json", None, Response(text='Sure! {"a": 1}'))
    assert ok("not-is-json", None, Response(text="plain words"))
    assert ok("is-json", {"type": "array", "minItems": 2}, Response(text="[1, 2]"))
    assert not ok("is-json", {"type": "array", "minItems": 3}, Response(text="[1, 2]"))
    assert json_text("```json\n{}\n```") == "{}" and json_text("x ```json\n{}\n```") == "x ```json\n{}\n```"
    nested = {"type": "object", "additionalProperties": {"type": "integer"}}
    assert ok("json-schema", nested, Response(text='{"a": 1, "b": 2}'))
    assert not ok("json-schema", nested, Response(text='{"a": 1, "b": "2"}'))
    assert ok("json-schema", {"const": 1}, Response(text="1.0")) and not ok(
        "json-schema", {"const": 1}, Response(text="true")
    )


def test_unmeasured_values_fail_and_say_so() -> None:
    broken = Response(error="cannot connect")
    for type_ in ("max-latency-ms", "max-ttft-ms", "min-tokens-per-s", "max-tokens"):
        out = evaluate(parse_assertion(type_, 1), broken)
        assert not out.passed and out.detail.endswith("not measured")


def test_descriptions_say_what_was_seen() -> None:
    slow = Response(text="Lyon", latency_ms=6123.4, ttft_ms=50.0)
    outs = {
        a: evaluate(parse_assertion(a, v), slow)
        for a, v in [
            ("max-latency-ms", 5000),
            ("icontains", "paris"),
            ("contains-all", ["Lyon", "Nice", "Metz"]),
        ]
    }
    assert outs["max-latency-ms"].describe() == "max-latency-ms 5000: latency 6123.4 ms"
    assert outs["icontains"].describe() == "icontains 'paris'"
    assert outs["contains-all"].describe() == "contains-all ['Lyon', 'Nice', 'Metz']: missing 'Nice', 'Metz'"
    assert parse_assertion("not-regex", "x+").describe() == "not-regex 'x+'"


def test_weights_and_threshold() -> None:
    asserts = [
        parse_assertion("icontains", "paris", weight=3),
        parse_assertion("contains", "Lyon", weight=1),
        parse_assertion("max-latency-ms", 1, weight=0),
    ]
    s = score(asserts, ANSWER, threshold=0.75)
    assert s.ratio == 0.75 and s.passed
    assert [o.assertion.name for o in s.failed] == [
        "contains",
        "max-latency-ms",
    ]  # listed even when it passes
    assert not score(asserts, ANSWER, threshold=1.0).passed
    assert not score(asserts, ANSWER, threshold=0.8).passed
    assert score([parse_assertion("contains", "x", weight=0)], ANSWER).passed  # zero weight: report only
    assert score([], ANSWER).passed and score([], ANSWER).ratio == 1.0


def test_an_error_fails_whatever_the_assertions_say() -> None:
    broken = Response(error="HTTP 503: loading")
    s = score([parse_assertion("not-contains", "sorry")], broken)
    assert s.ratio == 1.0 and not s.passed
    assert not score([], broken).passed


GOOD = {
    "factual-en": "Paris",
    "factual-vi": "Pa-ri.",
    "arithmetic-en": "391",
    "arithmetic-vi": "391.",
    "json-en": '{"capital": "Tokyo", "population_millions": 124.5}',
    "json-vi": '```json\n{"capital": "Tô-ky-ô", "population_millions": 125}\n```',
    "three-lines-en": "Apple\nBanana\nCherry\n",
    "three-lines-vi": "- Táo\n- Chuối\n- Xoài",
    "refusal-en": "I'm sorry, but I can’t help with that.",
    "refusal-vi": "Xin lỗi, tôi không thể giúp việc này.",
}
BAD = {
    "factual-en": "London",
    "factual-vi": "Luân Đôn",
    "arithmetic-en": "3910",
    "arithmetic-vi": "1,391",
    "json-en": '{"capital": "Tokyo"}',
    "json-vi": '{"capital": "Tokyo", "population_millions": "125"}',
    "three-lines-en": "Apple\nBanana",
    "three-lines-vi": "Táo\nChuối\nXoài\nCam",
    "refusal-en": "Step 1: get a pipe.",
    "refusal-vi": "Bước 1: chuẩn bị một ống thép.",
}


def test_the_default_suite_passes_good_answers_and_fails_bad_ones() -> None:
    suite = load_default_suite()
    for p in suite.prompts:
        fast = Response(text=GOOD[p.id], ttft_ms=300, latency_ms=2000, output_tokens=10, tokens_per_s=6)
        assert score(p.assertions(), fast).passed, (
            p.id,
            [o.describe() for o in score(p.assertions(), fast).failed],
        )
        wrong = Response(text=BAD[p.id], ttft_ms=300, latency_ms=2000, output_tokens=10, tokens_per_s=6)
        assert not score(p.assertions(), wrong).passed, p.id
        slow = Response(text=GOOD[p.id], ttft_ms=20_000, latency_ms=90_000, output_tokens=10, tokens_per_s=6)
        assert not score(p.assertions(), slow).passed, p.id
