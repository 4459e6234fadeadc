"""A LoadPlan in llama.cpp's own terms: xllamacpp's ``CommonParams``, the struct llama-server
fills from its command line. Shared by the serving engine and by the measuring runs of
``kennel fit --measure`` and the fit tests, so all three load a model the same way."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from kennel.engines.base import LoadPlan
from kennel.errors import InvalidOptionError

# llama.cpp's log verbosity: buffer sizes are logged at "trace" (4); warnings are 2
VERBOSITY_BUFFERS = 4
VERBOSITY_QUIET = 2


def xllamacpp() -> Any:
    """xllamacpp, imported on first use: loading llama.cpp costs ~0.3 s that sizing-only commands
    (and what-if hardware) should not pay."""
    return importlib.import_module("xllamacpp")


def physical_cores() -> int:
    """llama.cpp's own default thread count (``cpu_get_num_math``): the physical cores."""
    import psutil

    return psutil.cpu_count(logical=False) or psutil.cpu_count() or 1


def common_params(plan: LoadPlan, *, socket: Path, api_key: str, verbosity: int = VERBOSITY_BUFFERS) -> Any:
    """CommonParams for ``plan``. ``socket`` and ``api_key`` close llama.cpp's built-in HTTP
    listener, which xllamacpp always starts: kennel never uses it, so it listens on a unix socket
    in a private folder and wants a key nobody knows."""
    x = xllamacpp()
    p = x.CommonParams()
    p.model.path = str(plan.model)
    # context * parallel cells: a cache of `context` per sequence (or one shared cache, each
    # capped at `context`, when the plan unifies it), as `kennel fit --parallel` sizes it
    p.n_parallel = plan.parallel
    p.n_ctx = plan.context * plan.parallel
    p.kv_unified = plan.kv_unified
    if plan.kv_unified and plan.parallel > 1:
        p.kv_unified_per_slot = plan.context
    p.n_batch, p.n_ubatch = plan.batch, plan.ubatch
    p.swa_full = plan.swa_full
    p.fit_params = False  # kennel planned the placement; llama.cpp must not re-plan it
    p.n_gpu_layers = plan.gpu_layers
    if plan.gpu_split:
        split = list(p.tensor_split)
        for i, share in enumerate(plan.gpu_split[: len(split)]):
            split[i] = float(share)
        p.tensor_split = split
    threads = plan.threads or physical_cores()
    p.cpuparams.n_threads = threads
    p.cpuparams_batch.n_threads = threads
    flash = x.llama_flash_attn_type
    p.flash_attn_type = (
        flash.LLAMA_FLASH_ATTN_TYPE_ENABLED if plan.flash_attn else flash.LLAMA_FLASH_ATTN_TYPE_DISABLED
    )
    kv = getattr(x.ggml_type, f"GGML_TYPE_{plan.kv_cache_type.upper()}", None)
    if kv is None:
        raise InvalidOptionError(
            f"llama.cpp has no KV cache type {plan.kv_cache_type!r}.", hint="Use f16, q8_0 or q4_0."
        )
    p.cache_type_k = p.cache_type_v = kv
    if plan.adapters:
        p.lora_adapters = [x.CommonAdapterLoraInfo(str(a.path), a.scale) for a in plan.adapters]
    if plan.chat_template:
        p.chat_template = plan.chat_template
    if plan.task != "generate":
        p.embedding = True
        pooling = x.llama_pooling_type
        p.pooling_type = {
            "model": pooling.LLAMA_POOLING_TYPE_UNSPECIFIED,
            "mean": pooling.LLAMA_POOLING_TYPE_MEAN,
            "cls": pooling.LLAMA_POOLING_TYPE_CLS,
            "last": pooling.LLAMA_POOLING_TYPE_LAST,
            "rank": pooling.LLAMA_POOLING_TYPE_RANK,
        }["rank" if plan.task == "rerank" and plan.pooling == "model" else plan.pooling]
    p.cache_ram_mib = plan.prompt_cache_bytes >> 20
    p.warmup = plan.warmup
    p.ctx_shift = False  # a full context ends the answer (finish_reason "length"), never drops the prompt
    p.endpoint_metrics = True
    p.verbosity = verbosity
    p.hostnames = [str(socket)]
    p.api_keys = [api_key]
    p.n_threads_http = 1
    return p
