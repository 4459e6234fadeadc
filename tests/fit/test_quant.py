"""kennel's per-tensor quantization rules against llama.cpp's quantizer."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from gguf import GGMLQuantizationType as T
from gguf import LlamaFileType as FT

from kennel.engines.llamacpp_tools import quantize
from kennel.errors import InvalidOptionError
from kennel.fit.quant import GGUF_SCHEMES, scheme, tensor_types, weights_bytes
from kennel.model.gguf_header import read_header
from kennel.model.sources import FileSource
from kennel.model.synthetic import synthetic_shape, write_synthetic_gguf

SHAPES = {
    "dense-gqa": dict(n_layer=8, n_embd=256, n_head=8, n_head_kv=2, n_ff=768, n_vocab=1000),
    "mha-tied": dict(n_layer=5, n_embd=512, n_head=8, n_head_kv=8, n_ff=1024, n_vocab=1000, tied=True),
    "odd-rows": dict(n_layer=3, n_embd=320, n_head=5, n_head_kv=5, n_ff=864, n_vocab=700),
    "moe-8": dict(
        n_layer=4, n_embd=256, n_head=8, n_head_kv=2, n_ff=256, n_vocab=600, n_expert=8, n_expert_used=2
    ),
    "qwen3": dict(
        arch="qwen3", n_layer=4, n_embd=256, n_head=4, n_head_kv=2, head_dim=64, n_ff=512, n_vocab=800
    ),
}
FTYPES = [
    FT.MOSTLY_Q2_K,
    FT.MOSTLY_Q3_K_S,
    FT.MOSTLY_Q3_K_M,
    FT.MOSTLY_Q3_K_L,
    FT.MOSTLY_Q4_0,
    FT.MOSTLY_Q4_K_S,
    FT.MOSTLY_Q4_K_M,
    FT.MOSTLY_Q5_K_S,
    FT.MOSTLY_Q5_K_M,
    FT.MOSTLY_Q6_K,
    FT.MOSTLY_Q8_0,
    FT.MOSTLY_F16,
    FT.MOSTLY_IQ4_XS,
    FT.MOSTLY_IQ3_M,
]


@pytest.fixture(scope="module")
def f32_sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, object]]:
    root = tmp_path_factory.mktemp("q")
    out = {}
    for name, kw in SHAPES.items():
        s = synthetic_shape(**kw)
        s = s.with_tensors(tuple(replace(t, ggml_type=int(T.F32)) for t in s.tensors), "F32")
        out[name] = (write_synthetic_gguf(root / f"{name}.gguf", s, file_type=int(FT.ALL_F32)), s)
    return out


@pytest.mark.llama
@pytest.mark.parametrize("shape_name", list(SHAPES))
@pytest.mark.parametrize("ftype", FTYPES, ids=[f.name.removeprefix("MOSTLY_") for f in FTYPES])
def test_types_match_llama_quantize(f32_sources, tmp_path: Path, shape_name: str, ftype: FT) -> None:
    src, shape = f32_sources[shape_name]
    dst = tmp_path / "out.gguf"
    quantize(src, dst, ftype.name.removeprefix("MOSTLY_"), threads=2)
    real = read_header(FileSource(dst))
    predicted = tensor_types(shape, ftype)  # type: ignore[arg-type]
    assert {t.name: T(t.ggml_type).name for t in real.tensors} == {n: T(v).name for n, v in predicted.items()}
    assert weights_bytes(shape, predicted) == real.tensor_bytes  # type: ignore[arg-type]


def test_q4_k_m_mix_on_a_real_shape() -> None:
    """Llama-3.1-8B at Q4_K_M: 4.58 GiB, as the published files (4.92 GB) are."""
    from kennel.catalog.entries import get

    shape = get("llama-3.1-8b").shape()
    types = tensor_types(shape, FT.MOSTLY_Q4_K_M)
    assert types["output.weight"] == int(T.Q6_K)
    assert types["token_embd.weight"] == int(T.Q4_K)
    assert types["blk.0.attn_v.weight"] == int(T.Q6_K) and types["blk.4.attn_v.weight"] == int(T.Q4_K)
    assert types["blk.0.attn_norm.weight"] == int(T.F32)
    assert abs(weights_bytes(shape, types) / 1e9 - 4.92) < 0.02


def test_scheme_names() -> None:
    assert scheme("q4_k_m").name == "Q4_K_M"
    assert scheme("fp16").name == "F16"
    assert scheme("awq").name == "AWQ-INT4"
    with pytest.raises(InvalidOptionError, match="Known"):
        scheme("Q9_Z")
    assert [s.bits for s in GGUF_SCHEMES] == sorted(s.bits for s in GGUF_SCHEMES)
