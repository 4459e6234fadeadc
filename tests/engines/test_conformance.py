"""What every engine kind must do, through the engine contract only (``conftest.ENGINES``):
streaming with token counts, stop strings, seeds, JSON schemas, tool calls, logprobs, reasoning,
cancellation, concurrent streams equal to solo ones, prompt-cache reuse, reported memory,
embeddings and reranking."""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest

from kennel.checkup.assertions import schema_error
from kennel.engines.base import Message, Request, Sampling, Tool
from kennel.errors import ContextLengthError, InvalidRequestError
from kennel.fit.estimate import size_option
from kennel.fit.memory import RunConfig
from kennel.model.gguf_header import read_header
from kennel.model.gguf_shape import shape_from_gguf
from kennel.model.sources import FileSource
from tests.engines.conftest import EOS, THINK_END, TOOL_CALL, Loaded

pytestmark = [pytest.mark.llama, pytest.mark.timeout(300)]

GREEDY = Sampling(temperature=0.0, max_tokens=16)
WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "enum": ["Hanoi", "Saigon", "Da Nang"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "days"],
}
CLOCK = {"type": "object", "properties": {"zone": {"enum": ["UTC", "ICT"]}}, "required": ["zone"]}


def chat_request(text: str, sampling: Sampling = GREEDY, **kw: object) -> Request:
    return Request(sampling=sampling, messages=(Message("user", text),), **kw)  # type: ignore[arg-type]


def test_streams_pieces_then_one_final_with_token_counts(chat: Loaded) -> None:
    pieces, answer = chat.ask(chat_request("hello"))
    assert len(pieces) > 2 and all(d.finish_reason is None for d in pieces[:-1])
    last = pieces[-1]
    assert last.finish_reason == "length" and last.completion_tokens == 16 and last.prompt_tokens > 0
    assert answer.text == "".join(d.text for d in pieces) and answer.text
    _, plain = chat.ask(Request(sampling=GREEDY, prompt="Once upon a time"), "plain")
    assert plain.text and plain.completion_tokens == 16 and plain.finish_reason == "length"


def test_a_stop_string_ends_the_answer_before_it(chat: Loaded) -> None:
    _, full = chat.ask(chat_request("tell me"))
    # a whole vocabulary word from the middle (a random model also writes stray bytes, which
    # come out as U+FFFD and never match the engine's bytes)
    words = [m.group() for m in re.finditer(r" t\d+", full.text) if m.start() > 0]
    stop = words[len(words) // 2]
    _, cut = chat.ask(chat_request("tell me", Sampling(temperature=0.0, max_tokens=16, stop=(stop,))), "stop")
    assert cut.finish_reason == "stop" and cut.text == full.text[: full.text.index(stop)]


def test_the_same_seed_gives_the_same_answer(chat: Loaded) -> None:
    warm = Sampling(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, max_tokens=24)
    a = chat.ask(chat_request("a poem", Sampling(**{**warm.__dict__, "seed": 11})), "s1")[1].text
    b = chat.ask(chat_request("a poem", Sampling(**{**warm.__dict__, "seed": 11})), "s2")[1].text
    others = {
        chat.ask(chat_request("a poem", Sampling(**{**warm.__dict__, "seed": s})), f"o{s}")[1].text
        for s in (1, 2, 3)
    }
    assert a == b and len(others | {a}) > 1  # seeded, and the seed does matter


def test_json_schema_output_parses_and_follows_the_schema(chat: Loaded) -> None:
    s = Sampling(temperature=0.8, seed=5, max_tokens=200, json_schema=json.dumps(WEATHER))
    _, answer = chat.ask(chat_request("weather as JSON", s), "json")
    doc = json.loads(answer.text)
    assert schema_error(doc, WEATHER) is None, doc


@pytest.mark.parametrize("choice", ["get_weather", "required"])
def test_a_forced_tool_call_has_arguments_that_follow_the_schema(chat: Loaded, choice: str) -> None:
    """A random model never decides to call a tool by itself: a logit bias on the <tool_call>
    token (and a stronger one on end-of-text, which the grammar forbids until a call is made)
    stands in for a model trained to call tools. The arguments are then the engine's work: the
    tool_choice grammar holds them to the function's schema."""
    tools = (
        Tool("get_weather", "Forecast", json.dumps(WEATHER)),
        Tool("get_time", "Clock", json.dumps(CLOCK)),
    )
    s = Sampling(temperature=0.8, seed=3, max_tokens=200, logit_bias=((EOS, 100.0), (TOOL_CALL, 50.0)))
    req = chat_request("weather in Hanoi?", s, tools=tools, tool_choice=choice, parallel_tool_calls=False)
    pieces, answer = chat.ask(req, f"tool-{choice}")
    assert answer.finish_reason == "tool_calls" and len(answer.tool_calls) == 1
    call = answer.tool_calls[0]
    assert call.id and call.name in (
        ("get_weather",) if choice == "get_weather" else ("get_weather", "get_time")
    )
    assert sum(1 for d in pieces for c in d.tool_calls if c.name) == 1  # the name comes once, then arguments
    schema = WEATHER if call.name == "get_weather" else CLOCK
    assert schema_error(json.loads(call.arguments), schema) is None, call.arguments
    # the call and its result go back in the conversation
    follow = Request(
        sampling=GREEDY,
        messages=(
            Message("user", "weather in Hanoi?"),
            Message("assistant", None, tool_calls=(call,)),
            Message("tool", '{"forecast": "sunny"}', tool_call_id=call.id),
        ),
        tools=tools,
    )
    assert chat.ask(follow, f"after-{choice}")[1].finish_reason in ("length", "stop")


def test_logprobs_with_alternatives(chat: Loaded) -> None:
    # whole-word tokens only: a byte token that ends half a UTF-8 character is held back by the
    # engine and reported with the next one, which would make the count a property of the model
    words = tuple((b, -100.0) for b in range(3, 259))
    s = Sampling(temperature=0.0, max_tokens=6, logprobs=True, top_logprobs=3, logit_bias=words)
    _, answer = chat.ask(chat_request("hi", s), "lp")
    assert len(answer.logprobs) == 6
    for t in answer.logprobs:
        assert t.logprob <= 0 and len(t.top) == 3 and t.top[0].logprob >= t.top[-1].logprob
        assert t.logprob == pytest.approx(t.top[0].logprob, abs=1e-4)  # greedy: the best is taken
    plain = Sampling(temperature=0.0, max_tokens=3, logprobs=True, logit_bias=words)
    _, none = chat.ask(chat_request("hi", plain), "lp0")
    assert len(none.logprobs) == 3 and all(t.top == () for t in none.logprobs)


def test_reasoning_comes_apart_from_the_answer(thinker: Loaded) -> None:
    _, thinking = thinker.ask(chat_request("hi", Sampling(temperature=0.8, seed=1, max_tokens=20)))
    assert thinking.reasoning and not thinking.text  # the template opened <think>; it never closed
    closes = Sampling(temperature=0.8, seed=1, max_tokens=30, logit_bias=((THINK_END, 3.0),))
    _, both = thinker.ask(chat_request("hi", closes), "closed")
    assert both.reasoning and both.text and "</think>" not in both.reasoning


def test_a_prompt_longer_than_the_context_is_refused(chat: Loaded) -> None:
    with pytest.raises(ContextLengthError, match=r"more than this model's context of 2048 tokens"):
        chat.ask(chat_request("word " * 5000), "long")


def test_leaving_or_aborting_frees_the_sequence(chat: Loaded) -> None:
    """A consumer that stops reading (a client that hung up) or an ``abort`` from outside ends
    the decode within a step, by the engine's own count of busy sequences."""
    # random weights sample the end token now and then; biased away, the decode runs until stopped
    endless = Sampling(temperature=0.8, max_tokens=None, logit_bias=((EOS, -100.0),))

    async def go() -> None:
        engine = chat.engine
        left = engine.generate(chat_request("go on", endless), "left")
        aborted = engine.generate(chat_request("and on", endless), "aborted")
        assert (await left.__anext__()) and (await aborted.__anext__())
        assert await engine.busy() == 2
        await left.aclose()  # type: ignore[attr-defined]
        await engine.abort("aborted")
        rest = [d async for d in aborted]  # ends without running to the context's end
        assert not any(d.finish_reason == "length" for d in rest)
        for _ in range(100):
            if await engine.busy() == 0:
                break
            await asyncio.sleep(0.05)
        assert await engine.busy() == 0

    chat.run(go())


def test_concurrent_streams_equal_their_solo_answers(chat: Loaded) -> None:
    n = chat.engine.parallel
    prompts = [f"story number {i}" for i in range(n)]
    solo = [chat.ask(chat_request(p), f"solo{i}")[1].text for i, p in enumerate(prompts)]

    async def one(p: str, rid: str) -> tuple[str, float]:
        out, first = [], 0.0
        async for d in chat.engine.generate(chat_request(p), rid):
            first = first or time.monotonic()
            out.append(d.text)
        return "".join(out), first

    async def together() -> list[tuple[str, float]]:
        return await asyncio.gather(*(one(p, f"c{i}") for i, p in enumerate(prompts)))

    results = chat.run(together())
    assert [r[0] for r in results] == solo
    # llama-server sends the last chunk before it releases the slot: the count follows shortly
    for _ in range(100):
        if chat.run(chat.engine.busy()) == 0:
            break
        time.sleep(0.05)
    assert chat.run(chat.engine.busy()) == 0


def test_a_shared_prefix_is_taken_from_the_cache(chat: Loaded) -> None:
    system = "You are the help desk of a clinic in Hanoi. " * 20
    first = Request(sampling=GREEDY, messages=(Message("system", system), Message("user", "opening hours?")))
    second = Request(sampling=GREEDY, messages=(Message("system", system), Message("user", "parking?")))
    a = chat.ask(first, "p1")[1]
    b = chat.ask(second, "p2")[1]
    assert a.cached_tokens < a.prompt_tokens // 2 and b.cached_tokens > b.prompt_tokens // 2


def test_memory_is_reported_and_matches_the_fit_estimate(chat: Loaded) -> None:
    held = chat.engine.memory()
    assert held is not None and held.vram == ()
    plan = chat.plan
    shape = shape_from_gguf(read_header(FileSource(plan.model)))
    run = RunConfig(ctx=plan.context, parallel=plan.parallel, flash_attn=plan.flash_attn)
    est = size_option(shape, _cpu_only(), run, None).memory
    engine_part = held.ram - plan.prompt_cache_bytes
    assert (
        abs(engine_part - (est.weights + est.kv_cache + est.compute + est.output_buffer)) <= 0.01 * est.total
    )


def test_embeddings(embedder: Loaded) -> None:
    out = embedder.run(embedder.engine.embed(["hello", "world", "hello"]))
    assert len(out.vectors) == 3 and len(out.vectors[0]) == 64 and out.prompt_tokens > 0
    assert out.vectors[0] == pytest.approx(out.vectors[2]) and out.vectors[0] != pytest.approx(out.vectors[1])
    with pytest.raises(InvalidRequestError, match="does not do"):
        embedder.ask(chat_request("hi"))


def test_rerank(reranker: Loaded) -> None:
    docs = ["the clinic opens at 8", "parking is behind the building", "the clinic opens at 8"]
    out = reranker.run(reranker.engine.rerank("when does it open?", docs))
    assert sorted(r.index for r in out.results) == [0, 1, 2] and out.prompt_tokens > 0
    scores = [r.score for r in out.results]
    assert scores == sorted(scores, reverse=True)
    by_index = {r.index: r.score for r in out.results}
    assert by_index[0] == pytest.approx(by_index[2])  # the same document scores the same
    # and as it does alone: a score does not depend on the other documents
    for i, doc in enumerate(docs[:2]):
        alone = reranker.run(reranker.engine.rerank("when does it open?", [doc]))
        assert alone.results[0].score == pytest.approx(by_index[i], rel=1e-4)


def _cpu_only():  # type: ignore[no-untyped-def]
    from kennel.hardware.whatif import what_if

    return what_if(ram=16 * 2**30, cpu_cores=2)
