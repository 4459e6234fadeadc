"""Training data for `kennel finetune`: JSONL files, one conversation per line, in either shape
OpenAI's fine-tuning API and most trainers accept:

    {"messages": [{"role": "system" | "user" | "assistant", "content": "...", "weight": 0 | 1}, ...]}
    {"prompt": "...", "completion": "..."}

Every line is checked and the problems of all malformed lines are reported together, each with
its line number, so one pass fixes a file. Blank lines are skipped. The model learns only from
the assistant's turns (``weight: 0`` keeps one as context), never from the user's or the system's.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kennel.errors import TrainingDataError

Role = Literal["system", "user", "assistant"]
MIN_FOR_SPLIT = 10  # fewer distinct examples than this: nothing is held out, all of it trains
MAX_EVAL = 200  # a held-out split larger than this only slows every evaluation down
SHOWN_PROBLEMS = 20  # lines listed in an error; the rest are counted


@dataclass(frozen=True)
class Turn:
    role: Role
    content: str
    weight: int = 1  # assistant turns: 1 learned, 0 kept as context only


@dataclass(frozen=True)
class Example:
    line: int  # 1-based line number in its file
    turns: tuple[Turn, ...]

    @property
    def key(self) -> str:
        """The conversation as canonical JSON: equal keys are duplicates, whatever the line's shape."""
        return json.dumps([(t.role, t.content, t.weight) for t in self.turns], ensure_ascii=False)

    @property
    def chars(self) -> int:
        return sum(len(t.content) for t in self.turns)

    @property
    def learned(self) -> tuple[int, ...]:
        """Indexes of the assistant turns the model learns from."""
        return tuple(i for i, t in enumerate(self.turns) if t.role == "assistant" and t.weight)


@dataclass(frozen=True)
class LineProblem:
    line: int
    reason: str

    def describe(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(frozen=True)
class DataFile:
    path: Path
    sha256: str  # of the file's bytes: the lineage names the data by it
    lines: int  # non-blank lines
    blank: int
    examples: tuple[Example, ...]
    problems: tuple[LineProblem, ...]

    def require_clean(self) -> DataFile:
        """This file, or TrainingDataError listing every malformed line."""
        if self.problems:
            raise problems_error(self.path, self.problems)
        if not self.examples:
            raise TrainingDataError(
                f"{self.path} holds no examples.",
                hint='Write one JSON object per line: {"messages": [...]} or '
                '{"prompt": ..., "completion": ...}.',
            )
        return self

    def duplicates(self) -> list[tuple[int, ...]]:
        """Line numbers of each conversation that appears more than once."""
        return duplicate_groups(self.examples)


def problems_error(path: Path, problems: Sequence[LineProblem]) -> TrainingDataError:
    shown = "; ".join(p.describe() for p in problems[:SHOWN_PROBLEMS])
    more = f"; and {len(problems) - SHOWN_PROBLEMS} more" if len(problems) > SHOWN_PROBLEMS else ""
    return TrainingDataError(
        f"{path}: {len(problems)} malformed line{'s' if len(problems) != 1 else ''}: {shown}{more}.",
        hint=f"Fix or delete those lines; `kennel finetune check {path}` lists them all.",
    )


# ---- the edge: one JSON line -----------------------------------------------------------------
class _TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role
    content: str | list[_TextPart]
    weight: Literal[0, 1] | None = None
    name: str | None = None  # OpenAI allows a speaker name; templates mostly ignore it


class _ChatLine(BaseModel):
    model_config = ConfigDict(extra="forbid")
    messages: list[_Message] = Field(min_length=1)


class _PromptLine(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str
    completion: str


_M = TypeVar("_M", bound=BaseModel)


def parse_line(text: str, line: int) -> Example:
    """One non-blank line as an Example, or ValueError saying what is wrong with it."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"not a JSON object but {_json_kind(doc)}")
    chat, plain = "messages" in doc, "prompt" in doc or "completion" in doc
    if chat and plain:
        raise ValueError("has both messages and prompt/completion; give one shape per line")
    if not chat and not plain:
        keys = ", ".join(sorted(doc)) or "none"
        raise ValueError(f"needs messages, or prompt and completion (its keys: {keys})")
    if chat:
        if _has_tool_turns(doc["messages"]):
            raise ValueError("has tool or function turns; kennel trains on text conversations only")
        parsed = _validate(_ChatLine, doc)
        turns = tuple(_turn(m, i) for i, m in enumerate(parsed.messages))
    else:
        p = _validate(_PromptLine, doc)
        if not p.prompt.strip():
            raise ValueError("prompt is empty")
        turns = (Turn("user", p.prompt), Turn("assistant", p.completion))
    example = Example(line, turns)
    for i in example.learned:
        if not turns[i].content.strip():
            raise ValueError(
                "completion is empty" if plain else f"messages[{i}] is an empty assistant answer"
            )
    if not example.learned:
        raise ValueError("has no assistant turn to learn from (or every one has weight 0)")
    return example


def _has_tool_turns(messages: object) -> bool:
    if not isinstance(messages, list):
        return False
    return any(
        isinstance(m, dict)
        and (m.get("role") in ("tool", "function") or "tool_calls" in m or "function_call" in m)
        for m in messages
    )


def _turn(m: _Message, i: int) -> Turn:
    if m.weight is not None and m.role != "assistant":
        raise ValueError(f"messages[{i}]: weight is for assistant turns only")
    content = m.content if isinstance(m.content, str) else "".join(p.text for p in m.content)
    return Turn(m.role, content, 1 if m.weight is None else m.weight)


def _validate(model: type[_M], doc: dict[str, Any]) -> _M:
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        problems = [p for e in exc.errors() if (p := _pydantic_problem(e))]
        raise ValueError("; ".join(dict.fromkeys(problems[:4]))) from None


def _pydantic_problem(err: Any) -> str | None:
    loc = ""
    for part in err["loc"]:
        if part in ("str", "list[_TextPart]"):  # which branch of a union: noise to a user
            continue
        loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
    kind, value = err["type"], err["input"]
    if kind == "extra_forbidden":
        return f"{loc}: unknown field"
    if kind == "missing":
        return f"{loc}: missing"
    if kind == "too_short":
        return f"{loc}: is empty"
    if kind == "literal_error" and loc.endswith(".role"):
        return f"{loc}: {value!r} is not system, user or assistant"
    if kind == "literal_error" and loc.endswith(".type"):
        return f"{loc}: only text parts are supported, not {value!r}"
    if loc.endswith(".content") and kind in ("string_type", "list_type"):
        # content may be text or a list of text parts; a list's own errors say more than this
        return None if isinstance(value, list) else f"{loc}: must be text, not {_json_kind(value)}"
    if kind == "string_type":
        return f"{loc}: must be text, not {_json_kind(value)}"
    if kind == "list_type":
        return f"{loc}: must be a list, not {_json_kind(value)}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"{loc}: must be an object, not {_json_kind(value)}"
    return f"{loc}: {str(err['msg']).replace('Input should be', 'must be')}"


def _json_kind(value: object) -> str:
    kinds = {list: "a list", dict: "an object", str: "text", bool: "true/false", int: "a number"}
    return "null" if value is None else kinds.get(type(value), "a number")


# ---- a whole file ----------------------------------------------------------------------------
def read_data(path: Path) -> DataFile:
    """Every line of ``path`` parsed: its examples and the problems of its malformed lines."""
    path = path.expanduser()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TrainingDataError(
            f"Cannot read {path}: {exc.strerror}.", hint="Check the path to the JSONL file."
        ) from exc
    examples: list[Example] = []
    problems: list[LineProblem] = []
    blank = lines = 0
    for number, chunk in enumerate(raw.split(b"\n"), start=1):
        try:
            text = chunk.decode("utf-8").removesuffix("\r")
        except UnicodeDecodeError as exc:
            problems.append(LineProblem(number, f"not UTF-8 text (byte {exc.start + 1})"))
            lines += 1
            continue
        if not text.strip():
            blank += 1 if number <= raw.count(b"\n") else 0  # the empty piece after a final newline
            continue
        lines += 1
        try:
            examples.append(parse_line(text.removeprefix("\ufeff") if number == 1 else text, number))
        except ValueError as exc:
            problems.append(LineProblem(number, str(exc)))
    sha = hashlib.sha256(raw).hexdigest()
    return DataFile(path, sha, lines, blank, tuple(examples), tuple(problems))


def duplicate_groups(examples: Iterable[Example]) -> list[tuple[int, ...]]:
    seen: dict[str, list[int]] = {}
    for e in examples:
        seen.setdefault(e.key, []).append(e.line)
    return [tuple(lines) for lines in seen.values() if len(lines) > 1]


def hold_out(
    examples: Sequence[Example], *, fraction: float, seed: int
) -> tuple[tuple[Example, ...], tuple[Example, ...]]:
    """(train, eval): ``fraction`` of the distinct conversations held out, at least one and at most
    MAX_EVAL; copies of one conversation stay on one side, so the eval never scores what trained.
    Fewer than MIN_FOR_SPLIT distinct conversations: all train, none held out."""
    keys = list(dict.fromkeys(e.key for e in examples))
    if len(keys) < MIN_FOR_SPLIT or fraction <= 0:
        return tuple(examples), ()
    n_eval = max(1, min(MAX_EVAL, round(len(keys) * fraction)))
    random.Random(seed).shuffle(keys)  # seeded: the same file splits the same way on --resume
    held = set(keys[:n_eval])
    return (
        tuple(e for e in examples if e.key not in held),
        tuple(e for e in examples if e.key in held),
    )


def overlap(train: Iterable[Example], evaluation: Iterable[Example]) -> list[int]:
    """Lines of the eval set whose conversation is also in the training set."""
    keys = {e.key for e in train}
    return [e.line for e in evaluation if e.key in keys]
