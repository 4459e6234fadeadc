from __future__ import annotations

import pytest

from kennel.catalog.entries import get
from kennel.errors import InvalidOptionError
from kennel.fit.compute_graph import compute_buffer_bytes
from kennel.fit.memory import (
    RunConfig,
    compute_buffer,
    cparams,
    graph_params,
    kv_cache_per_layer,
    representative_layers,
)
from kennel.model.synthetic import synthetic_shape


def test_context_padding_and_streams() -> None:
    s = synthetic_shape()
    assert cparams(s, RunConfig(ctx=1000)).n_ctx == 1024
    cp = cparams(s, RunConfig(ctx=1000, parallel=3))  # kennel's default: a stream per sequence
    assert (cp.n_ctx_seq, cp.n_stream, cp.n_ctx) == (1024, 3, 3072)
    cp = cparams(s, RunConfig(ctx=1000, parallel=3, kv_unified=True))
    assert (cp.n_ctx_seq, cp.n_stream, cp.n_ctx) == (3072, 1, 3072)
    # the batch is capped by the context asked for, not the padded one (llama.cpp logs n_batch = 100)
    assert cparams(s, RunConfig(ctx=100)).reserve_tokens == 100


def test_llama_8b_kv_cache() -> None:
    s = get("llama-3.1-8b").shape()
    kv = sum(kv_cache_per_layer(s, RunConfig(ctx=8192)))
    assert kv == 32 * 2 * 1024 * 8192 * 2  # layers x (K+V) x n_embd_gqa x cells x f16
    q8 = sum(kv_cache_per_layer(s, RunConfig(ctx=8192, kv_type="q8_0")))
    assert q8 == kv * 34 // 64  # q8_0: 34 bytes per 32 values, not one byte


def test_sliding_window_cache_is_small() -> None:
    s = get("gemma-3-4b").shape()
    full = sum(kv_cache_per_layer(s, RunConfig(ctx=32768, swa_full=True)))
    swa = sum(kv_cache_per_layer(s, RunConfig(ctx=32768)))
    n_global = sum(1 for il in range(s.n_layer) if not s.is_swa(il))
    assert n_global == 5
    per_cell = 2 * s.n_head_kv[0] * s.head_dim_k * 2
    assert swa == per_cell * (32768 * n_global + 1536 * (s.n_layer - n_global))  # window 1024 + ubatch 512
    assert full == per_cell * 32768 * s.n_layer


def test_transposed_v_uses_widest_layer() -> None:
    s = synthetic_shape(n_layer=2, n_head_kv=2)
    s = s.__class__(**{**s.__dict__, "n_head_kv": (2, 4)})
    fa = kv_cache_per_layer(s, RunConfig(ctx=256))
    no_fa = kv_cache_per_layer(s, RunConfig(ctx=256, flash_attn=False))
    assert fa[0] < no_fa[0] and fa[1] == no_fa[1]


@pytest.mark.parametrize(
    ("run", "match"),
    [
        (RunConfig(ctx=0), "not possible"),
        (RunConfig(ctx=1_000_000_000), "not possible"),
        (RunConfig(kv_type="q4_0", flash_attn=False), "flash attention"),
        (RunConfig(kv_type="int3"), "Unknown KV"),
        (RunConfig(parallel=0), "parallel"),
        (RunConfig(parallel=8, n_batch=4), "cannot serve"),
    ],
)
def test_impossible_runs(run: RunConfig, match: str) -> None:
    with pytest.raises(InvalidOptionError, match=match):
        run.validated(synthetic_shape())


def test_worst_case_graph_has_one_output_per_sequence() -> None:
    s = synthetic_shape()
    gp = graph_params(s, RunConfig(ctx=4096))
    assert (gp.n_tokens, gp.n_outputs) == (512, 1)  # llama-server: n_outputs_max = min(n_batch, parallel)
    gp = graph_params(s, RunConfig(ctx=1000, parallel=3))
    assert (gp.n_tokens, gp.n_outputs) == (513, 3)  # tokens split evenly over the sequences
    gp = graph_params(s, RunConfig(ctx=4096, n_batch=2048, embedding=True))
    assert (gp.n_tokens, gp.n_outputs) == (512, 512)  # embeddings: every token is an output


def test_generation_graph_can_outgrow_the_prompt_graph() -> None:
    # 16 sequences in ubatches of 8: the one-token-per-sequence graph has twice the outputs
    s = synthetic_shape(n_vocab=50000)
    size = compute_buffer(s, RunConfig(ctx=2048, parallel=16, n_ubatch=8, n_batch=16))[0]
    gp = graph_params(s, RunConfig(ctx=2048, parallel=16, n_ubatch=8, n_batch=16))
    assert (gp.n_tokens, gp.n_outputs) == (16, 8)
    assert size > compute_buffer_bytes(s, gp)


@pytest.mark.parametrize("name", ["llama-3.1-8b", "gemma-3-4b"])
@pytest.mark.parametrize(
    "run",
    [
        RunConfig(ctx=8192),
        RunConfig(ctx=4096, parallel=4, kv_type="q8_0"),
        RunConfig(ctx=2048, flash_attn=False),
    ],
)
def test_representative_layers_reach_the_same_peak(name: str, run: RunConfig) -> None:
    s = get(name).shape()
    rep = representative_layers(s)
    assert rep.n_layer < s.n_layer
    gp = graph_params(s, run)
    assert compute_buffer_bytes(rep, gp) == compute_buffer_bytes(s, gp)
