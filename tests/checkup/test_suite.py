"""Suites as people write them: promptfoo-like YAML, the prompt shorthand, defaults, and one
clear InvalidOptionError naming the place for every kind of mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from kennel.checkup.assertions import Assertion
from kennel.checkup.suite import ChatMessage, load_default_suite, load_suite, parse_suite
from kennel.errors import InvalidOptionError

SMOKE = """
name: smoke
prompts:
  - id: capital
    messages: [{role: user, content: "What is the capital of France?"}]
    max_tokens: 32
    assert:
      - {type: icontains, value: paris}
      - {type: max-latency-ms, value: 5000}
"""


def test_the_smoke_suite_loads(tmp_path: Path) -> None:
    path = tmp_path / "smoke.yaml"
    path.write_text(SMOKE)
    suite = load_suite(path)
    assert (suite.name, suite.threshold, len(suite.prompts)) == ("smoke", 1.0, 1)
    p = suite.prompts[0]
    assert p.id == "capital" and p.messages == (
        ChatMessage(role="user", content="What is the capital of France?"),
    )
    assert (p.max_tokens, p.temperature, p.seed, p.threshold) == (32, 0.0, None, None)
    assert p.assertions() == (
        Assertion("icontains", "paris", negate=False, weight=1.0),
        Assertion("max-latency-ms", 5000.0, negate=False, weight=1.0),
    )
    assert suite.threshold_for(p) == 1.0


def test_shorthand_options_weights_and_thresholds() -> None:
    suite = parse_suite("""
name: opts
threshold: 0.5
prompts:
  - id: a
    prompt: "Hi there"
    temperature: 0.7
    seed: 7
    threshold: 0.9
    assert:
      - {type: not-contains, value: "as an AI", weight: 2}
      - {type: latency, value: 100, weight: 0}
      - {type: is-json}
  - id: b.2_x
    messages:
      - {role: system, content: "Be brief."}
      - {role: user, content: "Hello"}
""")
    a, b = suite.prompts
    assert a.messages == (ChatMessage(role="user", content="Hi there"),)
    assert (a.temperature, a.seed) == (0.7, 7)
    assert [(x.name, x.weight) for x in a.assertions()] == [
        ("not-contains", 2.0),
        ("max-latency-ms", 0.0),
        ("is-json", 1.0),
    ]
    assert (suite.threshold_for(a), suite.threshold_for(b)) == (0.9, 0.5)
    assert [m.role for m in b.messages] == ["system", "user"] and b.assertions() == ()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "  - {id: a, prompt: hi, assert: [{type: foo, value: 1}]}",
            "prompts[0].assert[0]: unknown assertion type 'foo'; known: contains,",
        ),
        (
            "  - {id: a, prompt: hi, assert: [{type: not-bogus, value: 1}]}",
            "unknown assertion type 'not-bogus'",
        ),
        (
            "  - {id: a, prompt: hi, assert: [{type: icontains}]}",
            "prompts[0].assert[0]: icontains needs a value",
        ),
        (
            "  - {id: a, prompt: hi, assert: [{type: contains-any, value: []}]}",
            "contains-any needs a non-empty list",
        ),
        (
            "  - {id: a, prompt: hi, assert: [{type: regex, value: '([a'}]}",
            "prompts[0].assert[0]: regex: bad regular expression '([a'",
        ),
        ("  - {id: a, prompt: hi, assert: [{type: max-ttft-ms, value: fast}]}", "max-ttft-ms needs a number"),
        ("  - {id: a, prompt: hi, assert: [{type: contains, value: x, weight: -1}]}", "assert[0].weight"),
        (
            "  - {id: a, prompt: hi, assert: [{type: contains, value: x, threshold: 1}]}",
            "assert[0].threshold: Extra inputs are not permitted",
        ),
        (
            "  - {id: a, prompt: hi, assert: [{type: json-schema, value: {oneOf: []}}]}",
            "json-schema: schema uses oneOf, which kennel's JSON Schema subset does not support",
        ),
        (
            "  - {id: a, prompt: hi, assert: [{type: json-schema, value: {type: strin}}]}",
            "schema.type 'strin'",
        ),
        (
            "  - {id: a, prompt: hi, assert: [{type: json-schema, "
            "value: {properties: {x: {pattern: '('}}}}]}",
            "schema.properties.x.pattern is not a regular expression",
        ),
        (
            "  - {id: a, prompt: hi, assert: [{type: json-schema, value: [1]}]}",
            "needs a JSON schema (a mapping)",
        ),
        (
            "  - {id: a, prompt: hi, messages: [{role: user, content: x}]}",
            "give either prompt or messages, not both",
        ),
        ("  - {id: a}", "prompts[0]: give the prompt as prompt: TEXT or as messages"),
        ("  - {id: a, messages: [{role: bot, content: x}]}", "prompts[0].messages[0].role"),
        ("  - {id: 'a b', prompt: hi}", "prompts[0].id: prompt id 'a b' must be"),
        ("  - {id: a, prompt: hi}\n  - {id: a, prompt: ho}", "prompt id 'a' is used twice"),
        ("  - {id: a, prompt: hi, temperature: 3}", "prompts[0].temperature"),
        ("  - {id: a, prompt: hi, asert: []}", "prompts[0].asert: Extra inputs are not permitted"),
    ],
)
def test_bad_suites_say_where_and_what(body: str, expected: str) -> None:
    with pytest.raises(InvalidOptionError) as info:
        parse_suite("name: bad\nprompts:\n" + body + "\n", source="bad.yaml")
    assert info.value.message.startswith("bad.yaml") and expected in info.value.message, info.value.message
    assert info.value.hint and "prompts: [{id: capital" in info.value.hint
    assert "Tuple should have at least" not in info.value.message  # no noise next to the real problem


def test_bad_files(tmp_path: Path) -> None:
    cases = {
        "name: x\nprompts: [\n": "is not valid YAML",
        "- a\n- b\n": "must be a YAML mapping",
        "name: x\nprompts: []\n": "a suite needs at least one prompt",
        "prompts:\n  - {id: a, prompt: hi}\n": "name: Field required",
    }
    for text, expected in cases.items():
        with pytest.raises(InvalidOptionError, match=expected):
            parse_suite(text)
    with pytest.raises(InvalidOptionError, match="Cannot read the suite") as info:
        load_suite(tmp_path / "missing.yaml")
    assert info.value.exit_code == 2


def test_the_default_suite_has_five_questions_in_english_and_vietnamese() -> None:
    suite = load_default_suite()
    ids = [p.id for p in suite.prompts]
    assert len(ids) == 10 and suite.threshold == 1.0
    en = sorted(i.removesuffix("-en") for i in ids if i.endswith("-en"))
    vi = sorted(i.removesuffix("-vi") for i in ids if i.endswith("-vi"))
    assert en == vi == ["arithmetic", "factual", "json", "refusal", "three-lines"]
    by_id = {p.id: p for p in suite.prompts}
    for topic in en:
        e, v = by_id[f"{topic}-en"], by_id[f"{topic}-vi"]
        # the same checks of time; the content check may differ (Paris is also spelt Pa-ri)
        assert [a.type for a in e.assertions()][1:] == [a.type for a in v.assertions()][1:]
        assert e.messages[0].content != v.messages[0].content
        assert e.temperature == 0 and e.seed is not None and e.max_tokens is not None
        types = {a.type for a in e.assertions()}
        assert {"max-ttft-ms", "max-latency-ms"} <= types  # every prompt is bounded in time
    assert any(ord(c) > 0x1EA0 for c in by_id["factual-vi"].messages[0].content)  # Vietnamese letters (ủ, ố…)
    assert "json-schema" in {a.type for a in by_id["json-en"].assertions()}
    assert "regex" in {a.type for a in by_id["three-lines-en"].assertions()}


def test_a_suite_file_without_a_name_is_named_after_the_file(tmp_path: Path) -> None:
    path = tmp_path / "front-desk.yaml"
    path.write_text("prompts:\n  - {id: hi, prompt: 'Xin chào', assert: [{type: icontains, value: chào}]}\n")
    assert load_suite(path).name == "front-desk"
    path.write_text("name: Front desk\n" + path.read_text())
    assert load_suite(path).name == "Front desk"
