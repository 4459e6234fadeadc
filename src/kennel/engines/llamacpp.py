"""The embedded engine: llama.cpp in process through llama-cpp-python.

One worker thread per loaded model runs every llama.cpp call, so requests to a model run one
after another and never interrupt or corrupt each other (llama-cpp-python's own server cuts a
running stream when a new request arrives). The token loop is ours, over ``Llama.generate``:
exact token counts, stop sequences that never leak half-way, a stop flag checked per token so
a client that goes away frees the model at once, and the prompt prefix cached in the KV cache
is reused by the next request that shares it.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from kennel.engines.base import Capabilities, Delta, Embeddings, LoadPlan, Message, Sampling
from kennel.engines.llamacpp_bench import llama
from kennel.engines.textstream import TextStream
from kennel.errors import ContextLengthError, InvalidRequestError, ModelLoadError

_KV_TYPES = {"f16": 1, "q8_0": 8, "q4_0": 2}  # ggml type ids


class LlamaCppEngine:
    def __init__(self, plan: LoadPlan, *, name: str) -> None:
        self.plan = plan
        self.name = name
        self.n_ctx = plan.n_ctx
        self.capabilities = Capabilities(chat=not plan.embedding, completion=not plan.embedding,
                                         embeddings=plan.embedding)  # fmt: skip
        self._llm: Any = None
        self._formatter: Any = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"llama-{name}")

    # ---- lifecycle ------------------------------------------------------------------------
    async def load(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._load)

    def _load(self) -> None:
        p = self.plan
        lib = llama()
        kv = _KV_TYPES.get(p.kv_type, 1)
        try:
            self._llm = lib.Llama(
                str(p.path), n_ctx=p.n_ctx, n_gpu_layers=p.n_gpu_layers, tensor_split=list(p.tensor_split) or None,
                flash_attn=p.flash_attn, n_threads=p.n_threads, n_batch=p.n_batch, n_ubatch=min(p.n_batch, 512),
                lora_path=str(p.lora_path) if p.lora_path else None, lora_scale=p.lora_scale,
                embedding=p.embedding, pooling_type=p.pooling, type_k=kv, type_v=kv, verbose=False,
            )  # fmt: skip
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelLoadError(
                f"llama.cpp could not load {self.name} ({p.path.name}): {exc}.",
                hint="Check the file with `kennel fit PATH`; a GPU build may need `kennel doctor`.",
            ) from exc
        if not p.embedding:
            self._formatter = self._make_formatter(p.chat_template)
        if p.warmup:
            self._warmup()

    def _make_formatter(self, override: str | None) -> Any:
        llm = self._llm
        template = override or llm.metadata.get("tokenizer.chat_template")
        if not template:
            return None
        fmt = llama().llama_chat_format
        eos_id, bos_id = llm.token_eos(), llm.token_bos()
        eos = llm._model.token_get_text(eos_id) if eos_id != -1 else ""
        bos = llm._model.token_get_text(bos_id) if bos_id != -1 else ""
        return fmt.Jinja2ChatFormatter(
            template=template, eos_token=eos, bos_token=bos, stop_token_ids=[eos_id]
        )

    def _warmup(self) -> None:
        """A real one-token decode, so the first user request does not pay for lazy init."""
        if self.plan.embedding:
            self._llm.embed("warm up")
            return
        tokens = self._llm.tokenize(b"Hello", add_bos=True, special=False)
        for _ in self._llm.generate(tokens, temp=0.0):
            break

    async def unload(self) -> None:
        def close() -> None:
            if self._llm is not None:
                self._llm.close()
                self._llm = None

        await asyncio.get_running_loop().run_in_executor(self._executor, close)
        self._executor.shutdown(wait=True)

    def healthy(self) -> bool:
        return self._llm is not None

    # ---- requests -------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode(), add_bos=False, special=False))

    def chat_prompt(self, messages: Sequence[Message]) -> tuple[list[int], tuple[str, ...]]:
        """The chat template applied: prompt tokens and the template's stop strings."""
        if self._formatter is None:
            raise InvalidRequestError(
                f"{self.name} has no chat template.",
                hint="Use /v1/completions, or set `template` in the model's profile (`kennel create`).",
            )
        try:
            r = self._formatter(messages=[{"role": m.role, "content": m.content} for m in messages])
        except Exception as exc:  # jinja2 raises its own tree (e.g. "roles must alternate")
            raise InvalidRequestError(
                f"The chat template of {self.name} rejected the messages: {exc}."
            ) from exc
        tokens = self._llm.tokenize(r.prompt.encode(), add_bos=not r.added_special, special=True)
        stop = r.stop if isinstance(r.stop, list) else ([r.stop] if r.stop else [])
        return tokens, tuple(stop)

    def chat(self, messages: Sequence[Message], sampling: Sampling) -> AsyncIterator[Delta]:
        tokens, stop = self.chat_prompt(messages)
        return self._stream(tokens, sampling, extra_stop=stop)

    def complete(self, prompt: str, sampling: Sampling) -> AsyncIterator[Delta]:
        tokens = self._llm.tokenize(prompt.encode(), add_bos=True, special=False)
        return self._stream(tokens, sampling, extra_stop=())

    async def _stream(
        self, tokens: list[int], sampling: Sampling, *, extra_stop: tuple[str, ...]
    ) -> AsyncIterator[Delta]:
        room = self.n_ctx - len(tokens)
        if room < 1:
            raise ContextLengthError(
                f"The prompt is {len(tokens)} tokens; {self.name} holds at most {self.n_ctx - 1} "
                f"(its context is {self.n_ctx} tokens, prompt and answer together).",
                hint="Shorten the prompt or the history, or serve the model with a larger context.",
            )
        grammar = self._grammar(sampling)
        max_new = min(sampling.max_tokens or room, room)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Delta | BaseException | None] = asyncio.Queue()

        def put(item: Delta | BaseException | None) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        cancel = threading.Event()
        job: Future[None] = self._executor.submit(
            self._generate, tokens, sampling, max_new, (*sampling.stop, *extra_stop), grammar, put, cancel
        )
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            cancel.set()  # a client that left stops the decode at the next token
            await asyncio.wrap_future(job)

    def _grammar(self, s: Sampling) -> Any:
        if not (s.json_schema or s.json_mode):
            return None
        g = llama().llama_grammar
        try:
            if s.json_schema:
                json.loads(s.json_schema)
                return g.LlamaGrammar.from_json_schema(s.json_schema, verbose=False)
            return g.LlamaGrammar.from_string(g.JSON_GBNF, verbose=False)
        except Exception as exc:  # llama.cpp's schema converter raises plain exceptions
            raise InvalidRequestError(f"The JSON schema cannot be turned into a grammar: {exc}.",
                                      hint="Use a simpler schema (objects, arrays, enums, basic types).") from exc  # fmt: skip

    def _generate(self, tokens: list[int], s: Sampling, max_new: int, stop: tuple[str, ...], grammar: Any,
                  put: Callable[[Delta | BaseException | None], None], cancel: threading.Event) -> None:  # fmt: skip
        try:
            self._decode(tokens, s, max_new, stop, grammar, put, cancel)
        except BaseException as exc:  # handed to the event loop, raised there
            put(exc)
        finally:
            put(None)

    def _decode(self, tokens: list[int], s: Sampling, max_new: int, stop: tuple[str, ...], grammar: Any,
                put: Callable[[Delta | BaseException | None], None], cancel: threading.Event) -> None:  # fmt: skip
        llm = self._llm
        if s.seed is not None:
            llm.set_seed(s.seed)
        processors = None
        if s.logit_bias:
            bias = dict(s.logit_bias)

            def apply_bias(_ids: Any, scores: Any) -> Any:
                for tok, b in bias.items():
                    scores[tok] += b
                return scores

            processors = llama().LogitsProcessorList([apply_bias])
        text = TextStream(stop)
        vocab = llm._model.vocab
        is_eog = llama().llama_vocab_is_eog
        n, finish, prev = 0, "length", list(tokens)
        gen = llm.generate(tokens, top_k=s.top_k, top_p=s.top_p, min_p=s.min_p, temp=s.temperature,
                           repeat_penalty=s.repeat_penalty, frequency_penalty=s.frequency_penalty,
                           presence_penalty=s.presence_penalty, logits_processor=processors, grammar=grammar)  # fmt: skip
        try:
            for tok in gen:
                if cancel.is_set():
                    finish = "stop"
                    break
                if is_eog(vocab, tok):
                    finish = "stop"
                    break
                n += 1
                out = text.feed(llm.detokenize([tok], prev_tokens=prev))
                prev.append(tok)
                if out:
                    put(Delta(out))
                if text.stopped:
                    finish = "stop"
                    break
                if n >= max_new:
                    break
        finally:
            gen.close()
        if rest := text.flush():
            put(Delta(rest))
        put(Delta(finish_reason=finish, prompt_tokens=len(tokens), completion_tokens=n))  # type: ignore[arg-type]

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        if not self.plan.embedding:
            raise InvalidRequestError(f"{self.name} is not an embedding model.",
                                      hint="Serve an embedding model (e.g. `kennel recommend --task embedding`).")  # fmt: skip
        for t in texts:
            if (n := self.count_tokens(t)) >= self.n_ctx:
                raise ContextLengthError(
                    f"An input is {n} tokens; {self.name} embeds at most {self.n_ctx - 1}."
                )

        def run() -> Any:
            return self._llm.create_embedding(list(texts))

        r = await asyncio.get_running_loop().run_in_executor(self._executor, run)
        vectors = tuple(tuple(float(x) for x in d["embedding"]) for d in r["data"])
        return Embeddings(vectors=vectors, prompt_tokens=int(r["usage"]["prompt_tokens"]))
