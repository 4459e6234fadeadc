"""Deterministic assertions over one answer, in promptfoo's vocabulary.

Each assertion type is a pure function of a ``Response`` (the text and what the runner measured)
and the value the suite gives it; any type is negated by a ``not-`` prefix. Values are checked
once, when the suite is loaded (``parse_assertion``), so a bad regex or schema is a load error,
never a failure in the middle of a run.

    text        equals, contains, icontains, contains-any, icontains-any, contains-all,
                icontains-all, regex, starts-with
    structure   is-json (optionally against a schema), json-schema
    measured    max-latency-ms (alias: latency), max-ttft-ms, min-tokens-per-s, max-tokens

``is-json`` and ``json-schema`` first remove one markdown code fence wrapping the whole answer
(chat models add one by habit); forbid it with ``not-contains: "```"`` where it matters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

ValueKind = Literal["text", "texts", "regex", "schema", "optional-schema", "number"]


@dataclass(frozen=True)
class Response:
    """One answer and what was measured getting it; ``error`` is set when no answer came."""

    text: str = ""
    ttft_ms: float | None = None
    latency_ms: float | None = None
    output_tokens: int | None = None
    tokens_per_s: float | None = None
    error: str | None = None


# a check returns (passed, detail): the detail says what was seen, for a failure's description
Check = Callable[[Response, Any], tuple[bool, str]]


@dataclass(frozen=True)
class AssertionType:
    name: str
    value: ValueKind
    check: Check
    doc: str


@dataclass(frozen=True)
class Assertion:
    """One validated assertion of a suite (``type`` without its ``not-`` prefix)."""

    type: str
    value: Any
    negate: bool = False
    weight: float = 1.0

    @property
    def name(self) -> str:
        return f"not-{self.type}" if self.negate else self.type

    def describe(self) -> str:
        v = self.value
        if v is None:
            return self.name
        if isinstance(v, dict):
            return f"{self.name} (schema)"
        if isinstance(v, tuple):
            return f"{self.name} [{', '.join(repr(x) for x in v)}]"
        return f"{self.name} {v!r}" if isinstance(v, str) else f"{self.name} {_num(v)}"


@dataclass(frozen=True)
class Outcome:
    assertion: Assertion
    passed: bool
    detail: str = ""

    def describe(self) -> str:
        text = self.assertion.describe()
        return f"{text}: {self.detail}" if self.detail else text


@dataclass(frozen=True)
class Score:
    """All assertions of a prompt: passed when the weighted share that passed reaches the threshold."""

    outcomes: tuple[Outcome, ...]
    ratio: float
    passed: bool

    @property
    def failed(self) -> tuple[Outcome, ...]:
        return tuple(o for o in self.outcomes if not o.passed)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


# ---- a small JSON Schema validator ---------------------------------------------------------
# The `jsonschema` package is not a kennel dependency (nor installed), so this implements the
# subset golden prompts need: type, properties, required, additionalProperties, items, enum,
# const, minItems/maxItems, minLength/maxLength, minimum/maximum, pattern. Any other keyword is
# refused when the suite loads, so a schema never passes by being half understood.
_KEYWORDS = {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "const",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "pattern",
}
_ANNOTATIONS = {"$schema", "$id", "title", "description", "default", "examples"}
_JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda x: isinstance(x, dict),
    "array": lambda x: isinstance(x, list),
    "string": lambda x: isinstance(x, str),
    "integer": lambda x: (
        (isinstance(x, int) and not isinstance(x, bool)) or (isinstance(x, float) and x.is_integer())
    ),
    "number": lambda x: isinstance(x, int | float) and not isinstance(x, bool),
    "boolean": lambda x: isinstance(x, bool),
    "null": lambda x: x is None,
}


def check_schema(s: Any, at: str = "schema") -> str | None:
    """What is wrong with a schema for this validator, or None."""
    if not isinstance(s, dict):
        return f"{at} must be a mapping"
    unknown = set(s) - _KEYWORDS - _ANNOTATIONS
    if unknown:
        return (
            f"{at} uses {', '.join(sorted(unknown))}, which kennel's JSON Schema subset does not support "
            f"(supported: {', '.join(sorted(_KEYWORDS))})"
        )
    types = s.get("type", [])
    for t in [types] if isinstance(types, str) else types:
        if t not in _JSON_TYPES:
            return f"{at}.type {t!r} is not one of {', '.join(_JSON_TYPES)}"
    for key in ("minItems", "maxItems", "minLength", "maxLength", "minimum", "maximum"):
        if key in s and (isinstance(s[key], bool) or not isinstance(s[key], int | float)):
            return f"{at}.{key} must be a number"
    if "pattern" in s:
        try:
            re.compile(s["pattern"])
        except (re.error, TypeError) as exc:
            return f"{at}.pattern is not a regular expression: {exc}"
    if "enum" in s and not isinstance(s["enum"], list):
        return f"{at}.enum must be a list"
    req = s.get("required", [])
    if not isinstance(req, list) or not all(isinstance(r, str) for r in req):
        return f"{at}.required must be a list of property names"
    props = s.get("properties", {})
    if not isinstance(props, dict):
        return f"{at}.properties must be a mapping"
    subs = [(f"{at}.properties.{k}", v) for k, v in props.items()]
    if "items" in s:
        subs.append((f"{at}.items", s["items"]))
    if not isinstance(s.get("additionalProperties", True), bool):
        subs.append((f"{at}.additionalProperties", s["additionalProperties"]))
    for where, sub in subs:
        problem = check_schema(sub, where)
        if problem:
            return problem
    return None


def schema_error(doc: Any, s: dict[str, Any], at: str = "$") -> str | None:
    """The first place ``doc`` breaks schema ``s`` (already checked by check_schema), or None."""
    if "type" in s:
        types = [s["type"]] if isinstance(s["type"], str) else s["type"]
        if not any(_JSON_TYPES[t](doc) for t in types):
            return f"{at}: expected {' or '.join(types)}, got {_json_type(doc)}"
    if "enum" in s and not any(_same(doc, e) for e in s["enum"]):
        return f"{at}: {json.dumps(doc)[:60]} is not one of {json.dumps(s['enum'])[:80]}"
    if "const" in s and not _same(doc, s["const"]):
        return f"{at}: expected {json.dumps(s['const'])[:60]}"
    if isinstance(doc, str):
        if len(doc) < s.get("minLength", 0) or len(doc) > s.get("maxLength", float("inf")):
            return f"{at}: length {len(doc)} outside the allowed range"
        if "pattern" in s and re.search(s["pattern"], doc) is None:
            return f"{at}: does not match {s['pattern']!r}"
    low, high = s.get("minimum", -float("inf")), s.get("maximum", float("inf"))
    if _JSON_TYPES["number"](doc) and not low <= doc <= high:
        return f"{at}: {doc} outside [{s.get('minimum', '-inf')}, {s.get('maximum', 'inf')}]"
    if isinstance(doc, list):
        if len(doc) < s.get("minItems", 0) or len(doc) > s.get("maxItems", float("inf")):
            return f"{at}: {len(doc)} items outside the allowed range"
        for i, item in enumerate(doc):
            if "items" in s and (problem := schema_error(item, s["items"], f"{at}[{i}]")):
                return problem
    if isinstance(doc, dict):
        missing = [k for k in s.get("required", []) if k not in doc]
        if missing:
            return f"{at}: missing required {', '.join(map(repr, missing))}"
        props: dict[str, Any] = s.get("properties", {})
        extra = s.get("additionalProperties", True)
        for k, v in doc.items():
            if k in props:
                problem = schema_error(v, props[k], f"{at}.{k}")
            elif extra is False:
                problem = f"{at}: unexpected property {k!r}"
            elif isinstance(extra, dict):
                problem = schema_error(v, extra, f"{at}.{k}")
            else:
                problem = None
            if problem:
                return problem
    return None


def _json_type(x: Any) -> str:
    return next(
        t for t in ("null", "boolean", "integer", "number", "string", "array", "object") if _JSON_TYPES[t](x)
    )


def _same(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but True is not 1."""
    return bool(
        json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
        or (_JSON_TYPES["number"](a) and _JSON_TYPES["number"](b) and a == b)
    )


# ---- checks -------------------------------------------------------------------------------
def _equals(r: Response, v: str) -> tuple[bool, str]:
    return r.text.strip() == v.strip(), ""


def _contains(r: Response, v: str) -> tuple[bool, str]:
    return v in r.text, ""


def _icontains(r: Response, v: str) -> tuple[bool, str]:
    return v.casefold() in r.text.casefold(), ""


def _contains_any(r: Response, v: Sequence[str]) -> tuple[bool, str]:
    return any(x in r.text for x in v), ""


def _icontains_any(r: Response, v: Sequence[str]) -> tuple[bool, str]:
    text = r.text.casefold()
    return any(x.casefold() in text for x in v), ""


def _contains_all(r: Response, v: Sequence[str]) -> tuple[bool, str]:
    missing = [x for x in v if x not in r.text]
    return not missing, f"missing {', '.join(map(repr, missing))}" if missing else ""


def _icontains_all(r: Response, v: Sequence[str]) -> tuple[bool, str]:
    text = r.text.casefold()
    missing = [x for x in v if x.casefold() not in text]
    return not missing, f"missing {', '.join(map(repr, missing))}" if missing else ""


def _regex(r: Response, v: str) -> tuple[bool, str]:
    return re.search(v, r.text) is not None, ""


def _starts_with(r: Response, v: str) -> tuple[bool, str]:
    return r.text.lstrip().startswith(v), ""


_FENCE = re.compile(r"^```[A-Za-z0-9_-]*[ \t]*\n(.*)\n```$", re.DOTALL)


def json_text(text: str) -> str:
    """The answer without surrounding whitespace and one code fence wrapping all of it."""
    t = text.strip()
    m = _FENCE.match(t)
    return m.group(1).strip() if m else t


def _parse_json(r: Response) -> tuple[bool, Any, str]:
    try:
        return True, json.loads(json_text(r.text)), ""
    except ValueError as exc:
        return False, None, f"not JSON ({exc.args[0] if exc.args else exc})"


def _is_json(r: Response, v: dict[str, Any] | None) -> tuple[bool, str]:
    ok, doc, why = _parse_json(r)
    if not ok:
        return False, why
    if v is None:
        return True, ""
    problem = schema_error(doc, v)
    return problem is None, problem or ""


def _json_schema(r: Response, v: dict[str, Any]) -> tuple[bool, str]:
    return _is_json(r, v)


def _measured(what: str, unit: str, get: Callable[[Response], float | None], upper: bool) -> Check:
    def check(r: Response, v: float) -> tuple[bool, str]:
        x = get(r)
        if x is None:
            return False, f"{what} not measured"
        return (x <= v if upper else x >= v), f"{what} {_num(round(x, 1))}{unit}"

    return check


TYPES: dict[str, AssertionType] = {
    t.name: t
    for t in (
        AssertionType("equals", "text", _equals, "the whole answer, trimmed, equals the value"),
        AssertionType("contains", "text", _contains, "the answer contains the value"),
        AssertionType("icontains", "text", _icontains, "contains the value, ignoring case"),
        AssertionType("contains-any", "texts", _contains_any, "contains at least one of the values"),
        AssertionType("icontains-any", "texts", _icontains_any, "contains-any, ignoring case"),
        AssertionType("contains-all", "texts", _contains_all, "contains every one of the values"),
        AssertionType("icontains-all", "texts", _icontains_all, "contains-all, ignoring case"),
        AssertionType("regex", "regex", _regex, "a Python regular expression matches somewhere"),
        AssertionType(
            "starts-with", "text", _starts_with, "the answer (leading space ignored) starts with it"
        ),
        AssertionType(
            "is-json", "optional-schema", _is_json, "the answer is JSON (and follows the schema if given)"
        ),
        AssertionType("json-schema", "schema", _json_schema, "the answer is JSON following the schema"),
        AssertionType(
            "max-latency-ms",
            "number",
            _measured("latency", " ms", lambda r: r.latency_ms, True),
            "the whole answer took at most this many ms",
        ),
        AssertionType(
            "max-ttft-ms",
            "number",
            _measured("ttft", " ms", lambda r: r.ttft_ms, True),
            "the first token came within this many ms",
        ),
        AssertionType(
            "min-tokens-per-s",
            "number",
            _measured("speed", " tok/s", lambda r: r.tokens_per_s, False),
            "output tokens per second were at least this",
        ),
        AssertionType(
            "max-tokens",
            "number",
            _measured(
                "output",
                " tokens",
                lambda r: None if r.output_tokens is None else float(r.output_tokens),
                True,
            ),
            "at most this many output tokens",
        ),
    )
}
ALIASES = {"latency": "max-latency-ms"}  # promptfoo's name


def known_types() -> list[str]:
    return sorted(TYPES)


def parse_assertion(type_: str, value: Any = None, *, weight: float = 1.0) -> Assertion:
    """A validated Assertion, or ValueError saying what is wrong with the type or value."""
    name = type_.strip()
    negate = name.startswith("not-")
    base = ALIASES.get(name.removeprefix("not-"), name.removeprefix("not-"))
    kind = TYPES.get(base)
    if kind is None:
        raise ValueError(
            f"unknown assertion type {type_!r}; known: {', '.join(known_types())} "
            "(each also with a not- prefix)"
        )
    if weight < 0:
        raise ValueError(f"{type_}: weight must be 0 or more, not {weight}")
    return Assertion(
        type=base, value=_check_value(type_, kind.value, value), negate=negate, weight=float(weight)
    )


def _check_value(type_: str, kind: ValueKind, value: Any) -> Any:
    if value is None and kind != "optional-schema":
        raise ValueError(f"{type_} needs a value")
    if kind == "text":
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError(f"{type_} needs a text value, not {type(value).__name__}")
        return str(value)
    if kind == "texts":
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(x, str | int | float) for x in value)
        ):
            raise ValueError(f"{type_} needs a non-empty list of texts")
        return tuple(str(x) for x in value)
    if kind == "regex":
        if not isinstance(value, str):
            raise ValueError(f"{type_} needs a regular expression as text")
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"{type_}: bad regular expression {value!r}: {exc}") from exc
        return value
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"{type_} needs a number of 0 or more, not {value!r}")
        return float(value)
    if value is None:  # optional-schema
        return None
    if not isinstance(value, dict):
        raise ValueError(f"{type_} needs a JSON schema (a mapping), not {type(value).__name__}")
    problem = check_schema(value)
    if problem:
        raise ValueError(f"{type_}: {problem}")
    return value


def evaluate(assertion: Assertion, response: Response) -> Outcome:
    ok, detail = TYPES[assertion.type].check(response, assertion.value)
    return Outcome(assertion, ok != assertion.negate, detail)


def score(assertions: Sequence[Assertion], response: Response, *, threshold: float = 1.0) -> Score:
    """Evaluate every assertion. A response with an error fails whatever its assertions say
    (a ``not-contains`` must not pass on an answer that never came)."""
    outcomes = tuple(evaluate(a, response) for a in assertions)
    total = sum(o.assertion.weight for o in outcomes)
    ratio = 1.0 if total == 0 else sum(o.assertion.weight for o in outcomes if o.passed) / total
    return Score(outcomes, ratio, response.error is None and ratio >= threshold - 1e-9)
