"""An answer as a run of content blocks: reasoning, text, and one block per tool call, each opened,
added to and closed in turn. Anthropic's content blocks and the Responses API's output items are
both this shape; one state machine serves both, and knows nothing of either's JSON.

A streamed answer is fed piece by piece (``Blocks.feed``) and yields ``Opened``, ``Added`` and
``Closed`` events; a whole answer is split at once (``answer_blocks``), in the same order.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from kennel.engines.base import Answer, Delta

BlockKind = Literal["reasoning", "text", "tool"]


def new_call_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True)
class Block:
    index: int  # position in the answer: 0, 1, ...
    kind: BlockKind
    call_id: str = ""  # a tool call's id
    name: str = ""  # a tool call's function name


@dataclass(frozen=True)
class Opened:
    block: Block


@dataclass(frozen=True)
class Added:
    block: Block
    text: str  # reasoning or text, or a piece of a tool call's arguments (JSON text)


@dataclass(frozen=True)
class Closed:
    block: Block
    text: str  # the whole block: its text, or a tool call's arguments


BlockEvent = Opened | Added | Closed


class Blocks:
    """One streamed answer's blocks. A block stays open while pieces of its kind (for a tool
    call: of its call) keep coming; a piece of another kind closes it and opens the next."""

    def __init__(self, call_prefix: str) -> None:
        self.call_prefix = call_prefix  # for tool calls the engine gave no id
        self.current: Block | None = None
        self.text = ""
        self.count = 0
        self.calls: dict[int, Block] = {}  # the engine's tool-call index -> its block

    def feed(self, d: Delta) -> list[BlockEvent]:
        out: list[BlockEvent] = []
        if d.reasoning:
            out += self._add("reasoning", d.reasoning)
        if d.text:
            out += self._add("text", d.text)
        for c in d.tool_calls:
            block = self.calls.get(c.index)
            if block is None:
                out += self._close()
                block = Block(self.count, "tool", c.id or new_call_id(self.call_prefix), c.name or "")
                self.calls[c.index], self.count, self.current = block, self.count + 1, block
                out.append(Opened(block))
            if c.arguments:
                if block is self.current:
                    self.text += c.arguments
                out.append(Added(block, c.arguments))
        return out

    def close(self) -> list[BlockEvent]:
        """The end of the answer: the open block closes."""
        return self._close()

    def _add(self, kind: BlockKind, text: str) -> list[BlockEvent]:
        out: list[BlockEvent] = []
        if self.current is None or self.current.kind != kind:
            out += self._close()
            self.current, self.count = Block(self.count, kind), self.count + 1
            out.append(Opened(self.current))
        self.text += text
        out.append(Added(self.current, text))
        return out

    def _close(self) -> list[BlockEvent]:
        if self.current is None:
            return []
        closed = Closed(self.current, self.text)
        self.current, self.text = None, ""
        return [closed]


def answer_blocks(a: Answer, call_prefix: str) -> list[tuple[Block, str]]:
    """A whole answer's blocks, in the order a stream would have them: reasoning, text, calls."""
    out: list[tuple[Block, str]] = []
    if a.reasoning:
        out.append((Block(len(out), "reasoning"), a.reasoning))
    if a.text:
        out.append((Block(len(out), "text"), a.text))
    for c in a.tool_calls:
        out.append((Block(len(out), "tool", c.id or new_call_id(call_prefix), c.name), c.arguments))
    return out


def arguments_object(text: str) -> dict[str, Any]:
    """A tool call's arguments as the object Anthropic and Ollama send. Arguments cut short by
    the token limit are not JSON: they become {} (the answer's stop reason says it was cut)."""
    try:
        value = json.loads(text) if text.strip() else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
