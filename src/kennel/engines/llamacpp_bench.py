"""Load a GGUF in llama.cpp exactly as kennel's engine would, and report what llama.cpp says.

Two uses: the buffer sizes llama.cpp logs while loading (model, KV cache, compute and output
buffers, per backend), which is the ground truth the fit estimate is tested against; and timed
prompt processing and generation, for ``kennel fit --measure``.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import random
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from kennel.errors import MeasureError
from kennel.fit.memory import RunConfig, cparams
from kennel.model.shape import ModelShape

_BUFFERS = {
    "model": re.compile(r"(\S+) model buffer size =\s+([\d.]+) MiB"),
    "kv": re.compile(r"(\S+) KV buffer size =\s+([\d.]+) MiB"),
    "compute": re.compile(r"(\S+) compute buffer size =\s+([\d.]+) MiB"),
    "output": re.compile(r"(\S+)\s+output buffer size =\s+([\d.]+) MiB"),
}


def llama() -> Any:
    """llama_cpp, imported on first use: loading libllama costs ~0.3 s that sizing-only commands
    (and what-if hardware) should not pay."""
    return importlib.import_module("llama_cpp")


_GGML_TYPES = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q5_0": 6, "Q5_1": 7, "Q8_0": 8, "BF16": 30}


@dataclass(frozen=True)
class LlamaBuffers:
    """Buffer sizes in bytes as llama.cpp logged them (printed in MiB with two decimals)."""

    model: dict[str, int] = field(default_factory=dict)
    kv: dict[str, int] = field(default_factory=dict)
    compute: dict[str, int] = field(default_factory=dict)
    output: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(sum(d.values()) for d in (self.model, self.kv, self.compute, self.output))

    @classmethod
    def from_log(cls, text: str) -> LlamaBuffers:
        found: dict[str, dict[str, int]] = {k: defaultdict(int) for k in _BUFFERS}
        for kind, pat in _BUFFERS.items():
            for name, mib in pat.findall(text):
                found[kind][name] += round(float(mib) * 2**20)
        return cls(**{k: dict(v) for k, v in found.items()})


@dataclass(frozen=True)
class BenchResult:
    buffers: LlamaBuffers
    prompt_tokens: int
    prompt_seconds: float
    gen_tokens: int
    gen_seconds: float
    load_seconds: float

    @property
    def prefill_tok_s(self) -> float:
        return self.prompt_tokens / self.prompt_seconds if self.prompt_seconds else 0.0

    @property
    def decode_tok_s(self) -> float:
        return self.gen_tokens / self.gen_seconds if self.gen_seconds else 0.0


class LlamaLogCapture:
    """Route llama.cpp's log into a buffer for the duration of a load, then restore quiet."""

    def __init__(self) -> None:
        llama_cpp = llama()

        self._llama = llama_cpp
        self.lines: list[str] = []

        def sink(level: int, text: bytes, user: ctypes.c_void_p) -> None:
            self.lines.append(text.decode("utf-8", errors="replace"))

        self._cb = llama_cpp.llama_log_callback(sink)

    def __enter__(self) -> LlamaLogCapture:
        self._llama.llama_log_set(self._cb, ctypes.c_void_p(0))
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        _logger = importlib.import_module("llama_cpp._logger")

        _logger.logger.setLevel(logging.ERROR)
        self._llama.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))

    @property
    def text(self) -> str:
        return "".join(self.lines)


def _context_params(shape: ModelShape, run: RunConfig, threads: int | None):  # type: ignore[no-untyped-def]
    llama_cpp = llama()

    cp = llama_cpp.llama_context_default_params()
    # llama.cpp pads n_ctx itself; give it the unpadded total so the padding is its own
    cp.n_ctx = run.ctx * run.parallel
    cp.n_batch = run.n_batch
    cp.n_ubatch = run.n_ubatch
    cp.n_seq_max = run.parallel
    cp.kv_unified = run.kv_unified
    cp.swa_full = run.swa_full
    cp.flash_attn_type = (
        llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
        if run.flash_attn
        else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
    )
    cp.type_k = cp.type_v = _GGML_TYPES.get(run.kv_type_ggml, 1)
    cp.no_perf = False
    if threads:
        cp.n_threads = cp.n_threads_batch = threads
    cparams(shape, run)  # validates the same rules kennel plans with
    return cp


@dataclass
class _Loaded:
    model: object
    ctx: object
    log: str
    seconds: float


def _load(path: Path, shape: ModelShape, run: RunConfig, n_gpu_layers: int, threads: int | None) -> _Loaded:
    llama_cpp = llama()

    if not path.exists():
        raise MeasureError(f"No model file at {path}.")
    llama_cpp.llama_backend_init()
    mp = llama_cpp.llama_model_default_params()
    mp.n_gpu_layers = n_gpu_layers
    t0 = time.perf_counter()
    with LlamaLogCapture() as cap:
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), mp)
        if not model:
            raise MeasureError(
                f"llama.cpp could not load {path}.", hint="The log said: " + cap.text[-400:].strip()
            )
        ctx = llama_cpp.llama_init_from_model(model, _context_params(shape, run, threads))
        if not ctx:
            llama_cpp.llama_model_free(model)
            raise MeasureError(
                "llama.cpp could not create a context for this model.",
                hint="The log said: " + cap.text[-400:].strip(),
            )
    return _Loaded(model, ctx, cap.text, time.perf_counter() - t0)


def _free(loaded: _Loaded) -> None:
    llama_cpp = llama()

    llama_cpp.llama_free(loaded.ctx)
    llama_cpp.llama_model_free(loaded.model)


def load_buffers(path: Path, shape: ModelShape, run: RunConfig, *, n_gpu_layers: int = 0) -> LlamaBuffers:
    """What llama.cpp allocates for ``path`` under ``run``: the sizes it logs."""
    loaded = _load(path, shape, run, n_gpu_layers, threads=None)
    try:
        return LlamaBuffers.from_log(loaded.log)
    finally:
        _free(loaded)


def bench(
    path: Path,
    shape: ModelShape,
    run: RunConfig,
    *,
    n_gpu_layers: int = 0,
    prompt_tokens: int = 512,
    gen_tokens: int = 64,
    threads: int | None = None,
    seed: int = 0,
) -> BenchResult:
    """Time one prompt of ``prompt_tokens`` and ``gen_tokens`` single-token decodes after it."""
    llama_cpp = llama()

    prompt_tokens = min(prompt_tokens, run.n_batch, run.ctx - gen_tokens - 1)
    if prompt_tokens < 1:
        raise MeasureError("The context is too short to measure; use --ctx 1024 or more.")
    loaded = _load(path, shape, run, n_gpu_layers, threads)
    rng = random.Random(seed)
    vocab = max(shape.n_vocab, 260)
    try:
        ctx = loaded.ctx

        def step(ids: list[int]) -> None:
            arr = (llama_cpp.llama_token * len(ids))(*ids)
            rc = llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(arr, len(ids)))
            if rc != 0:
                raise MeasureError(f"llama_decode failed with code {rc}.")
            llama_cpp.llama_synchronize(ctx)  # decode is asynchronous on GPU backends

        step([rng.randrange(3, vocab)])  # warm-up: first kernels, page faults of mmapped weights
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        t0 = time.perf_counter()
        step([rng.randrange(3, vocab) for _ in range(prompt_tokens)])
        t1 = time.perf_counter()
        for _ in range(gen_tokens):
            step([rng.randrange(3, vocab)])
        t2 = time.perf_counter()
        return BenchResult(
            buffers=LlamaBuffers.from_log(loaded.log),
            prompt_tokens=prompt_tokens,
            prompt_seconds=t1 - t0,
            gen_tokens=gen_tokens,
            gen_seconds=t2 - t1,
            load_seconds=loaded.seconds,
        )
    finally:
        _free(loaded)
