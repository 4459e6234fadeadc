"""The engine contract: what the server needs from anything that runs a model.

Small on purpose, so an engine in another process (llama.cpp's llama-server, vLLM, both speaking
OpenAI over HTTP) can sit behind it later: load with a placement plan, stream generated text,
embed, unload, report health and what it can do. Values are frozen dataclasses; the server
translates HTTP requests into them and never hands an engine a pydantic model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol


@dataclass(frozen=True)
class Capabilities:
    chat: bool = True
    completion: bool = True
    embeddings: bool = False
    json_schema: bool = True  # constrained decoding (JSON mode, json_schema)
    logit_bias: bool = True


@dataclass(frozen=True)
class LoadPlan:
    """How to load one model: the GGUF and the placement `kennel fit` chose."""

    path: Path  # the GGUF (first shard of a split one)
    n_ctx: int = 4096
    n_gpu_layers: int = 0
    tensor_split: tuple[float, ...] = ()
    kv_type: str = "f16"
    flash_attn: bool = True
    n_threads: int | None = None
    n_batch: int = 512
    lora_path: Path | None = None
    lora_scale: float = 1.0
    chat_template: str | None = None  # overrides the GGUF's
    embedding: bool = False  # an embedding model: pooled vectors, no generation
    pooling: int = -1  # llama.cpp's pooling type for embeddings: -1 the model's own, 1 mean
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


@dataclass(frozen=True)
class Delta:
    """A piece of a streamed answer; the last one carries finish_reason and the token counts."""

    text: str = ""
    finish_reason: Literal["stop", "length", "content_filter"] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class Embeddings:
    vectors: tuple[tuple[float, ...], ...]
    prompt_tokens: int


@dataclass(frozen=True)
class Message:
    role: str
    content: str
    extra: dict[str, Any] = field(default_factory=dict)


class Engine(Protocol):
    """One loaded model. Methods may be called from the server's event loop only."""

    capabilities: Capabilities
    n_ctx: int

    async def load(self) -> None: ...

    async def unload(self) -> None: ...

    def healthy(self) -> bool: ...

    def count_tokens(self, text: str) -> int: ...

    def chat(self, messages: Sequence[Message], sampling: Sampling) -> AsyncIterator[Delta]: ...

    def complete(self, prompt: str, sampling: Sampling) -> AsyncIterator[Delta]: ...

    async def embed(self, texts: Sequence[str]) -> Embeddings: ...
