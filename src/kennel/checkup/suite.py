"""Golden-prompt suites: YAML files close to promptfoo's, validated when loaded.

    name: smoke
    threshold: 1.0                # weighted share of a prompt's assertions that must pass
    prompts:
      - id: capital
        messages: [{role: user, content: "What is the capital of France?"}]
        # or, for one user message:  prompt: "What is the capital of France?"
        max_tokens: 32
        temperature: 0            # the default: checkups compare like with like
        seed: 42
        assert:
          - {type: icontains, value: paris}
          - {type: max-latency-ms, value: 5000, weight: 0.5}

A file that cannot be used is an InvalidOptionError naming the file, the place in it and the
problem (unknown assertion type, missing value, bad regex, duplicate prompt id…).
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kennel.checkup.assertions import Assertion, parse_assertion
from kennel.errors import InvalidOptionError, validation_text

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}$")


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["system", "user", "assistant"]
    content: str


class AssertionSpec(BaseModel):
    """One entry of a prompt's ``assert`` list; ``assertion()`` is its validated form."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = Field(description="An assertion type, optionally with a not- prefix.")
    value: Any = None
    weight: float = Field(default=1.0, ge=0, description="Share of the prompt's score (0: report only).")

    @model_validator(mode="after")
    def _valid(self) -> AssertionSpec:
        parse_assertion(self.type, self.value, weight=self.weight)  # ValueError -> a load error
        return self

    def assertion(self) -> Assertion:
        return parse_assertion(self.type, self.value, weight=self.weight)


class PromptCase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    id: str = Field(description="Stable id: results are compared across runs by it.")
    description: str = ""
    messages: tuple[ChatMessage, ...]
    max_tokens: int | None = Field(default=None, ge=1, le=1 << 20)
    temperature: float = Field(default=0.0, ge=0, le=2)
    seed: int | None = None
    threshold: float | None = Field(default=None, ge=0, le=1, description="Overrides the suite's.")
    asserts: tuple[AssertionSpec, ...] = Field(default=(), alias="assert")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("prompt") and not data.get("messages"):
            raise ValueError("give the prompt as prompt: TEXT or as messages: [{role, content}, ...]")
        if isinstance(data, dict) and "prompt" in data:
            if "messages" in data:
                raise ValueError("give either prompt or messages, not both")
            if not isinstance(data["prompt"], str):
                raise ValueError("prompt must be text (one user message); use messages for more")
            rest = {k: v for k, v in data.items() if k != "prompt"}
            return {**rest, "messages": [{"role": "user", "content": data["prompt"]}]}
        return data

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError(f"prompt id {v!r} must be letters, digits, '.', '-' or '_' (at most 128)")
        return v

    def assertions(self) -> tuple[Assertion, ...]:
        return tuple(a.assertion() for a in self.asserts)


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    threshold: float = Field(default=1.0, ge=0, le=1)
    prompts: tuple[PromptCase, ...]

    @model_validator(mode="after")
    def _unique(self) -> Suite:
        if not self.prompts:  # here, not min_length: that would also fire when one prompt is invalid
            raise ValueError("a suite needs at least one prompt")
        seen: set[str] = set()
        for p in self.prompts:
            if p.id in seen:
                raise ValueError(f"prompt id {p.id!r} is used twice")
            seen.add(p.id)
        return self

    def threshold_for(self, prompt: PromptCase) -> float:
        return self.threshold if prompt.threshold is None else prompt.threshold


def parse_suite(text: str, *, source: str = "suite", name: str | None = None) -> Suite:
    """A Suite from YAML text; ``source`` names it in error messages, ``name`` is the suite's
    name where the text gives none (a file's stem)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidOptionError(
            f"{source} is not valid YAML: {exc}",
            hint="Check the indentation and quoting near the line shown.",
        ) from exc
    if not isinstance(doc, dict):
        raise InvalidOptionError(f"{source} must be a YAML mapping with name and prompts.", hint=_HINT)
    if name and "name" not in doc:
        doc = {"name": name, **doc}
    try:
        return Suite.model_validate(doc)
    except ValidationError as exc:
        raise InvalidOptionError(f"{source}: {_problems(exc)}.", hint=_HINT) from exc


_HINT = (
    "A suite looks like: prompts: [{id: capital, prompt: 'Capital of France?', assert: "
    "[{type: icontains, value: paris}]}] (the README lists every assertion)."
)


def _problems(exc: ValidationError) -> str:
    out = []
    for e in exc.errors()[:5]:
        out.append(validation_text(e))
    more = len(exc.errors()) - 5
    return "; ".join(out) + (f" (and {more} more)" if more > 0 else "")


def load_suite(path: Path) -> Suite:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidOptionError(
            f"Cannot read the suite {path}: {exc}.",
            hint="Give a YAML file with --suite, or leave it out for the default suite.",
        ) from exc
    return parse_suite(text, source=str(path), name=path.stem)


def default_suite_text() -> str:
    return resources.files("kennel.checkup").joinpath("data/default.yaml").read_text(encoding="utf-8")


def load_default_suite() -> Suite:
    """The suite kennel ships: five standard questions, each in English and Vietnamese."""
    return parse_suite(default_suite_text(), source="the default suite")
