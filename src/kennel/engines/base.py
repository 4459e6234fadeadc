"""The engine contract: what the server needs from anything that runs a model.

Modelled on vLLM's ``AsyncLLM`` and Ollama's runner:

* ``generate(request, request_id)`` is an async generator of ``Delta`` pieces. Leaving it early
  (the client went away, the task was cancelled, the caller closed it) aborts that request in the
  engine, so its sequence is freed at the next decode step; ``abort(request_id)`` does the same
  from outside.
* An engine declares how many sequences it decodes together (``parallel``); the pool admits that
  many requests at once and queues the rest. Requests never take turns inside an engine.
* After ``load`` an engine reports the memory it actually holds (``memory()``); the pool believes
  that over the fit estimate it planned with.
* Nothing an engine does blocks the event loop: tokenizing, template rendering and decoding run in
  the engine's own threads (or process).

Values are frozen dataclasses. Protocol layers (OpenAI today, Ollama and Anthropic later) turn
their HTTP bodies into one ``Request`` and render ``Delta`` pieces back; an engine never sees a
pydantic model or an HTTP body.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from kennel.units import fmt_bytes

Task = Literal["generate", "embed", "rerank"]
FailureHook = Callable[[str], None]  # told, with a one-line reason, when an engine's process dies
FinishReason = Literal["stop", "length", "content_filter", "tool_calls"]


@dataclass(frozen=True)
class Memory:
    """Bytes of RAM, and of VRAM per GPU (in the order of the hardware profile)."""

    ram: int = 0
    vram: tuple[int, ...] = ()

    def __add__(self, other: Memory) -> Memory:
        n = max(len(self.vram), len(other.vram))
        a = self.vram + (0,) * (n - len(self.vram))
        b = other.vram + (0,) * (n - len(other.vram))
        return Memory(self.ram + other.ram, tuple(x + y for x, y in zip(a, b, strict=True)))

    def fits_in(self, budget: Memory) -> bool:
        if self.ram > budget.ram:
            return False
        return all(not v or (i < len(budget.vram) and v <= budget.vram[i]) for i, v in enumerate(self.vram))

    @property
    def total(self) -> int:
        return self.ram + sum(self.vram)

    def describe(self) -> str:
        gpu = ", ".join(fmt_bytes(v) for v in self.vram if v)
        return f"{fmt_bytes(self.ram)} RAM" + (f" + {gpu} VRAM" if gpu else "")


@dataclass(frozen=True)
class Capabilities:
    chat: bool = True
    completion: bool = True
    embeddings: bool = False
    rerank: bool = False


def capabilities_for(task: Task) -> Capabilities:
    gen = task == "generate"
    return Capabilities(chat=gen, completion=gen, embeddings=task == "embed", rerank=task == "rerank")


@dataclass(frozen=True)
class Adapter:
    path: Path  # a LoRA adapter (GGUF for llama.cpp)
    scale: float = 1.0


@dataclass(frozen=True)
class LoadPlan:
    """How to load one model, in terms of the model and the run rather than one engine's flags.

    ``context`` is the most tokens one request may use (prompt and answer); ``parallel`` requests
    are decoded together, each with a cache of ``context`` tokens. ``gpu_layers`` and
    ``gpu_split`` are the placement `kennel fit` chose (an engine that places whole models ignores
    a partial offload it cannot do and says so at load).
    """

    model: Path  # the GGUF (first shard of a split one) or a model folder
    task: Task = "generate"
    context: int = 4096
    parallel: int = 1
    threads: int | None = None  # None: every physical core
    gpu_layers: int = 0
    gpu_split: tuple[float, ...] = ()
    kv_cache_type: str = "f16"
    # False: a cache of ``context`` cells per sequence, each attending over its own cells only.
    # True: one cache shared by all, each capped at ``context``; every sequence's attention then
    # reads the cells of all of them (8 users got 0.90x the tokens/s here, 0.79x with long chats:
    # benchmarks/kv_layout.py), for no extra room
    kv_unified: bool = False
    swa_full: bool = False
    flash_attn: bool = True
    batch: int = 2048  # tokens per logical batch (prompt chunks)
    ubatch: int = 512  # tokens per physical batch
    adapters: tuple[Adapter, ...] = ()
    chat_template: str | None = None  # overrides the model's own
    pooling: Literal["model", "mean", "cls", "last", "rank"] = "model"  # embeddings and rerank
    prompt_cache_bytes: int = 0  # host memory for prompts saved between requests (0: none)
    kv_cache_bytes: int = 0  # the KV cache `kennel fit` sized, for engines that take it in bytes (vLLM)
    pipeline_parallel: int = 1  # machines one model spans (vLLM over Ray; engines/cluster.py)
    warmup: bool = True


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    max_tokens: int | None = None  # None: until the context is full
    logit_bias: tuple[tuple[int, float], ...] = ()
    json_schema: str | None = None  # a JSON schema (as JSON text) the output must follow
    json_mode: bool = False  # any JSON object
    logprobs: bool = False
    top_logprobs: int = 0  # alternatives per token, with logprobs


@dataclass(frozen=True)
class Tool:
    """A function the model may call; ``parameters`` is its JSON schema as JSON text."""

    name: str
    description: str = ""
    parameters: str = '{"type": "object", "properties": {}}'


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text


@dataclass(frozen=True)
class Message:
    role: str  # system | user | assistant | tool
    content: str | None = ""
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant turn that called tools
    tool_call_id: str | None = None  # a tool turn: which call this answers
    name: str | None = None
    reasoning: str | None = None  # an assistant turn's reasoning, sent back by some clients


@dataclass(frozen=True)
class Request:
    """One generation, whatever protocol it came in by: a chat (``messages``) or a plain-text
    completion (``prompt``)."""

    sampling: Sampling = field(default_factory=Sampling)
    messages: tuple[Message, ...] = ()
    prompt: str | None = None
    tools: tuple[Tool, ...] = ()
    tool_choice: str = "auto"  # auto | none | required | the name of one function
    parallel_tool_calls: bool = True

    @property
    def is_chat(self) -> bool:
        return self.prompt is None


@dataclass(frozen=True)
class TopLogprob:
    token: str
    logprob: float
    bytes: tuple[int, ...] | None = None


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    bytes: tuple[int, ...] | None = None
    top: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a tool call: the first piece of a call carries its id and name, later pieces
    more of its arguments (OpenAI's streaming shape)."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True)
class Delta:
    """A piece of an answer; the last one carries finish_reason and the token counts (an earlier
    one may carry the prompt's token count as soon as the engine knows it)."""

    text: str = ""
    reasoning: str = ""
    tool_calls: tuple[ToolCallDelta, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens reused from the cache

    @property
    def empty(self) -> bool:
        return not (self.text or self.reasoning or self.tool_calls or self.logprobs or self.finish_reason)


@dataclass
class Answer:
    """A whole answer put together from its pieces: for clients that want one JSON document, for
    `kennel run`, and for every protocol layer alike."""

    text: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    pieces: int = 0  # pieces that carried something: tokens sent, for an answer cut short

    def add(self, d: Delta) -> None:
        self.text += d.text
        self.reasoning += d.reasoning
        for c in d.tool_calls:
            while len(self.tool_calls) <= c.index:
                self.tool_calls.append(ToolCall(id="", name="", arguments=""))
            old = self.tool_calls[c.index]
            self.tool_calls[c.index] = ToolCall(
                id=c.id or old.id, name=c.name or old.name, arguments=old.arguments + c.arguments
            )
        self.logprobs.extend(d.logprobs)
        self.pieces += bool(d.text or d.reasoning or d.tool_calls)
        # counts only from pieces that carry them: a cut (timeout, canary) has none of its own
        if d.finish_reason:
            self.finish_reason = d.finish_reason
        self.prompt_tokens = d.prompt_tokens or self.prompt_tokens
        self.completion_tokens = d.completion_tokens or self.completion_tokens
        self.cached_tokens = d.cached_tokens or self.cached_tokens


@dataclass(frozen=True)
class Embeddings:
    vectors: tuple[tuple[float, ...], ...]
    prompt_tokens: int


@dataclass(frozen=True)
class Ranked:
    index: int  # position of the document in the request
    score: float


@dataclass(frozen=True)
class Ranking:
    results: tuple[Ranked, ...]  # best first
    prompt_tokens: int


class Engine(Protocol):
    """One loaded model. Methods are called from the server's event loop."""

    capabilities: Capabilities
    context: int  # tokens one request may use
    parallel: int  # requests decoded together

    async def load(self) -> None: ...

    async def unload(self) -> None: ...

    def healthy(self) -> bool: ...

    def on_failure(self, hook: FailureHook) -> None:
        """Who to tell when the engine fails on its own (a process engine's process died; it is
        restarted). The pool passes the server's model-failure alert."""
        ...

    def memory(self) -> Memory | None:
        """What the loaded model holds, as the engine measured it (None: it cannot tell)."""
        ...

    def generate(self, request: Request, request_id: str) -> AsyncIterator[Delta]: ...

    async def abort(self, request_id: str) -> None: ...

    async def busy(self) -> int:
        """Sequences the engine is decoding now, by its own count (not the server's)."""
        ...

    async def native_metrics(self) -> str:
        """The engine's own metrics in Prometheus text format ("" if it has none)."""
        ...

    async def embed(self, texts: Sequence[str]) -> Embeddings: ...

    async def rerank(self, query: str, documents: Sequence[str]) -> Ranking: ...
