"""An answer's pieces as content blocks (Anthropic's blocks, the Responses API's output items):
opened, added to and closed in order, the same streamed as whole."""

from __future__ import annotations

from kennel.engines.base import Answer, Delta, ToolCall, ToolCallDelta
from kennel.server.blocks import Added, Block, Blocks, Closed, Opened, answer_blocks, arguments_object


def test_a_streamed_answer_in_blocks() -> None:
    b = Blocks("toolu_")
    events = [
        *b.feed(Delta(reasoning="think")),
        *b.feed(Delta(reasoning="ing", text="Hi")),
        *b.feed(Delta(text=" there")),
        *b.feed(Delta(tool_calls=(ToolCallDelta(0, id="c1", name="f", arguments='{"a":'),))),
        *b.feed(Delta(tool_calls=(ToolCallDelta(0, arguments=" 1}"),))),
        *b.feed(Delta(tool_calls=(ToolCallDelta(1, name="g"),))),
        *b.close(),
    ]
    think, text, f = Block(0, "reasoning"), Block(1, "text"), Block(2, "tool", "c1", "f")
    g = events[-2].block  # the engine gave no id: one is made
    assert g.kind == "tool" and g.index == 3 and g.name == "g" and g.call_id.startswith("toolu_")
    assert events == [
        Opened(think),
        Added(think, "think"),
        Added(think, "ing"),
        Closed(think, "thinking"),
        Opened(text),
        Added(text, "Hi"),
        Added(text, " there"),
        Closed(text, "Hi there"),
        Opened(f),
        Added(f, '{"a":'),
        Added(f, " 1}"),
        Closed(f, '{"a": 1}'),
        Opened(g),
        Closed(g, ""),
    ]
    assert b.close() == []  # closed once


def test_a_whole_answer_in_the_same_order() -> None:
    a = Answer(text="Hi", reasoning="hm", tool_calls=[ToolCall("c1", "f", '{"a": 1}'), ToolCall("", "g", "")])
    blocks = answer_blocks(a, "call_")
    assert [(b.index, b.kind, b.name) for b, _ in blocks] == [
        (0, "reasoning", ""),
        (1, "text", ""),
        (2, "tool", "f"),
        (3, "tool", "g"),
    ]
    assert blocks[2][0].call_id == "c1" and blocks[3][0].call_id.startswith("call_")
    assert [t for _, t in blocks] == ["hm", "Hi", '{"a": 1}', ""]


def test_arguments_as_an_object() -> None:
    assert arguments_object('{"a": 1}') == {"a": 1}
    assert arguments_object("") == {} and arguments_object('{"a": ') == {} and arguments_object("[1]") == {}
