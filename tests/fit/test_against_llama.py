"""The estimate against llama.cpp itself: generated models of many shapes, loaded for real.

llama.cpp logs its buffer sizes in MiB with two decimals, so "equal" means within 0.005 MiB
(plus 32-byte alignment padding per tensor for the mapped weights). Quantized weights that the CPU
repacks are compared in test_repack.py.
"""

from __future__ import annotations

import pytest
from gguf import GGMLQuantizationType as T
from gguf import LlamaFileType

from kennel.fit.memory import RunConfig
from kennel.fit.quant import tensor_types
from kennel.fit.validate import compare
from kennel.model.synthetic import synthetic_shape

pytestmark = pytest.mark.llama

LOG_PRECISION = int(0.0051 * 2**20)
BASE = dict(n_layer=2, n_embd=256, n_head=8, n_head_kv=2, n_ff=512, n_vocab=2000)

CASES = [
    ("MHA, no flash attention", dict(BASE, n_head_kv=8), RunConfig(ctx=512, flash_attn=False)),
    ("GQA 4:1, flash attention", BASE, RunConfig(ctx=2048)),
    ("odd context 1000 (padded)", BASE, RunConfig(ctx=1000)),
    ("large vocab 32000", dict(BASE, n_vocab=32000), RunConfig(ctx=1024, flash_attn=False)),
    ("head_dim 64 != n_embd/n_head", dict(BASE, head_dim=64), RunConfig(ctx=2048, flash_attn=False)),
    ("MQA (1 KV head), 4 layers", dict(BASE, n_layer=4, n_head_kv=1), RunConfig(ctx=4096)),
    ("KV q8_0", BASE, RunConfig(ctx=4096, kv_type="q8_0")),
    ("KV q4_0, head_dim 64", dict(BASE, n_embd=512), RunConfig(ctx=2048, kv_type="q4_0")),
    ("ubatch 128, ctx 8192", BASE, RunConfig(ctx=8192, n_ubatch=128)),
    ("4 sequences, unified cache", BASE, RunConfig(ctx=1024, parallel=4, kv_unified=True)),
    ("4 sequences, one stream each", BASE, RunConfig(ctx=1024, parallel=4, flash_attn=False)),
    ("8 sequences, one stream each, odd context", BASE, RunConfig(ctx=1000, parallel=8)),
    ("tied embeddings", dict(BASE, tied=True), RunConfig(ctx=1024)),
    ("qwen2 (q/k/v bias)", dict(BASE, arch="qwen2"), RunConfig(ctx=1024, flash_attn=False)),
    ("qwen3 (q/k norm)", dict(BASE, arch="qwen3", head_dim=64), RunConfig(ctx=2048)),
    (
        "gemma3, sliding window 256",
        dict(BASE, arch="gemma3", n_layer=6, n_swa=256, swa_every=3, tied=True),
        RunConfig(ctx=4096),
    ),
    (
        "gemma3, sliding window, no FA",
        dict(BASE, arch="gemma3", n_layer=6, n_swa=256, swa_every=3, tied=True),
        RunConfig(ctx=4096, flash_attn=False),
    ),
    (
        "gemma3, sliding window, 4 streams",
        dict(BASE, arch="gemma3", n_layer=6, n_swa=256, swa_every=3, tied=True),
        RunConfig(ctx=2048, parallel=4),
    ),
    (
        "gemma3, full-size SWA cache",
        dict(BASE, arch="gemma3", n_layer=4, n_swa=256, swa_every=2, tied=True),
        RunConfig(ctx=2048, swa_full=True),
    ),
    ("MoE 8 experts, top 2", dict(BASE, n_expert=8, n_expert_used=2), RunConfig(ctx=1024)),
    (
        "qwen3moe 16 experts, top 4",
        dict(BASE, arch="qwen3moe", n_expert=16, n_expert_used=4),
        RunConfig(ctx=1024, flash_attn=False),
    ),
]


@pytest.mark.parametrize(("label", "shape_kw", "run"), CASES, ids=[c[0] for c in CASES])
def test_memory_matches_llama(make_model, label: str, shape_kw: dict, run: RunConfig) -> None:
    path, _ = make_model(**shape_kw)
    c = compare(path, run, label=label)
    n_tensors = 9 * shape_kw.get("n_layer", 2) + 3
    assert c.weights_est == c.weights_file, "weights must equal the header's tensor bytes"
    assert abs(c.weights_llama - c.weights_est) <= LOG_PRECISION + 32 * n_tensors
    assert abs(c.weights_llama - c.mapped_est) <= LOG_PRECISION
    assert c.repack_est == c.repack_llama == 0  # F16 weights: never repacked
    assert Comparison_rel(c.kv_est, c.kv_llama) <= 0.01 or abs(c.kv_est - c.kv_llama) <= LOG_PRECISION
    assert abs(c.compute_est - c.compute_llama) <= LOG_PRECISION, (c.compute_est, c.compute_llama)
    assert abs(c.total_est - c.total_llama) / c.total_llama <= 0.05


def Comparison_rel(a: int, b: int) -> float:
    return abs(a - b) / b if b else float(a != 0)


@pytest.mark.parametrize(
    "ftype", [LlamaFileType.MOSTLY_Q4_K_M, LlamaFileType.MOSTLY_Q8_0, LlamaFileType.MOSTLY_Q5_K_S]
)
def test_quantized_weights_exact(make_model, ftype: LlamaFileType) -> None:
    """A model written with the per-tensor types kennel predicts for a quantization loads in
    llama.cpp with exactly the bytes kennel says."""
    shape = synthetic_shape(**dict(BASE, n_layer=4))
    types = tensor_types(shape, ftype)
    assert any(t == int(T.Q6_K) for t in types.values()) or ftype == LlamaFileType.MOSTLY_Q8_0
    path, _ = make_model(tensor_types=types, file_type=int(ftype), **dict(BASE, n_layer=4))
    c = compare(path, RunConfig(ctx=1024))
    assert c.weights_est == c.weights_file
    assert abs(c.weights_llama - c.mapped_est) <= LOG_PRECISION  # the span llama.cpp maps
    assert (
        abs(c.repack_est - c.repack_llama) <= LOG_PRECISION
    )  # the CPU's repacked copies (tests/fit/test_repack.py)
    assert abs(c.compute_est - c.compute_llama) <= LOG_PRECISION
