"""The tensor list a model of a given shape has in GGUF, for shapes that come without a file.

Used for Hugging Face config.json models and catalog entries (to size them at any quantization)
and by the synthetic-model writer (to build a file llama.cpp loads). Matrices are listed as F16
and vectors as F32, the way convert_hf_to_gguf.py writes an unquantized model; ``fit/quant.py``
then assigns each tensor the type a given quantization would give it.
"""

from __future__ import annotations

from dataclasses import dataclass

from gguf import GGMLQuantizationType as T

from kennel.model.gguf_header import TensorInfo
from kennel.model.shape import ModelShape


@dataclass(frozen=True)
class ArchLayout:
    """What distinguishes one architecture's tensor list from plain llama's."""

    qkv_bias: bool = False
    qk_norm: bool = False
    post_norms: bool = False
    fused_qkv: bool = False
    fused_gate_up: bool = False
    shared_expert_gate: bool = False
    mla: bool = False
    expert_bias: bool = False
    attn_sinks: bool = False


ARCH_LAYOUTS: dict[str, ArchLayout] = {
    "llama": ArchLayout(),
    "mistral3": ArchLayout(),
    "granite": ArchLayout(),
    "qwen2": ArchLayout(qkv_bias=True),
    "qwen2moe": ArchLayout(qkv_bias=True, shared_expert_gate=True),
    "qwen3": ArchLayout(qk_norm=True),
    "qwen3moe": ArchLayout(qk_norm=True),
    "gemma": ArchLayout(),
    "gemma2": ArchLayout(post_norms=True),
    "gemma3": ArchLayout(post_norms=True, qk_norm=True),
    "phi3": ArchLayout(fused_qkv=True, fused_gate_up=True),
    "glm4": ArchLayout(qkv_bias=True, post_norms=True, fused_gate_up=True),
    "deepseek2": ArchLayout(mla=True),
    "gpt-oss": ArchLayout(qkv_bias=True, expert_bias=True, attn_sinks=True),
}
ENCODER_ARCHS = {"bert", "nomic-bert"}

F16, F32 = int(T.F16), int(T.F32)


def _mat(name: str, *shape: int) -> TensorInfo:
    return TensorInfo(name=name, shape=tuple(shape), ggml_type=F16)


def _vec(name: str, n: int) -> TensorInfo:
    return TensorInfo(name=name, shape=(n,), ggml_type=F32)


def tensor_layout(shape: ModelShape) -> tuple[TensorInfo, ...]:
    """Every tensor of ``shape`` with GGUF names and dimensions (fastest dimension first)."""
    if shape.arch in ENCODER_ARCHS:
        return _encoder(shape)
    lay = ARCH_LAYOUTS.get(shape.arch, ArchLayout())
    e, v = shape.n_embd, shape.n_vocab
    out = [_mat("token_embd.weight", e, v), _vec("output_norm.weight", e)]
    if not shape.tied_embeddings:
        out.append(_mat("output.weight", e, v))
    for il in range(shape.n_layer):
        out += _attention(shape, lay, il)
        out += _ffn(shape, lay, il)
    return tuple(out)


def _attention(s: ModelShape, lay: ArchLayout, il: int) -> list[TensorInfo]:
    p, e = f"blk.{il}.", s.n_embd
    out = [_vec(p + "attn_norm.weight", e)]
    n_q, n_k, n_v = s.n_head[il] * s.head_dim_k, s.n_embd_k_gqa(il), s.n_embd_v_gqa(il)
    if lay.mla:
        rope, rank = s.mla_rope_dim, s.kv_lora_rank
        nope = s.head_dim_k - rope
        q_rank = max(e // 5, 1536) // 32 * 32
        out += [
            _mat(p + "attn_q_a.weight", e, q_rank),
            _vec(p + "attn_q_a_norm.weight", q_rank),
            _mat(p + "attn_q_b.weight", q_rank, s.n_head[il] * s.head_dim_k),
            _mat(p + "attn_kv_a_mqa.weight", e, rank + rope),
            _vec(p + "attn_kv_a_norm.weight", rank),
            _mat(p + "attn_k_b.weight", nope, rank, s.n_head[il]),
            _mat(p + "attn_v_b.weight", rank, s.head_dim_v, s.n_head[il]),
            _mat(p + "attn_output.weight", s.n_head[il] * s.head_dim_v, e),
        ]
        return out
    if lay.fused_qkv:
        out.append(_mat(p + "attn_qkv.weight", e, n_q + n_k + n_v))
    else:
        out += [
            _mat(p + "attn_q.weight", e, n_q),
            _mat(p + "attn_k.weight", e, n_k),
            _mat(p + "attn_v.weight", e, n_v),
        ]
    if lay.qkv_bias:
        out += [_vec(p + "attn_q.bias", n_q), _vec(p + "attn_k.bias", n_k), _vec(p + "attn_v.bias", n_v)]
    if lay.qk_norm:
        out += [_vec(p + "attn_q_norm.weight", s.head_dim_k), _vec(p + "attn_k_norm.weight", s.head_dim_k)]
    if lay.attn_sinks:
        out.append(_vec(p + "attn_sinks.weight", s.n_head[il]))
    out.append(_mat(p + "attn_output.weight", s.n_head[il] * s.head_dim_v, e))
    if lay.post_norms:
        out.append(_vec(p + "post_attention_norm.weight", e))
    return out


def _ffn(s: ModelShape, lay: ArchLayout, il: int) -> list[TensorInfo]:
    p, e = f"blk.{il}.", s.n_embd
    out = [_vec(p + "ffn_norm.weight", e)]
    dense = s.n_ff[il]
    if dense:
        if lay.fused_gate_up:
            out.append(_mat(p + "ffn_up.weight", e, 2 * dense))
        else:
            out += [_mat(p + "ffn_gate.weight", e, dense), _mat(p + "ffn_up.weight", e, dense)]
        out.append(_mat(p + "ffn_down.weight", dense, e))
    else:
        out += _experts(s, lay, il)
    if lay.post_norms:
        out.append(_vec(p + "post_ffw_norm.weight", e))
    return out


def _experts(s: ModelShape, lay: ArchLayout, il: int) -> list[TensorInfo]:
    p, e, f, n = f"blk.{il}.", s.n_embd, s.n_ff_exp, s.n_expert
    out = [
        TensorInfo(name=p + "ffn_gate_inp.weight", shape=(e, n), ggml_type=F32),
        _mat(p + "ffn_gate_exps.weight", e, f, n),
        _mat(p + "ffn_up_exps.weight", e, f, n),
        _mat(p + "ffn_down_exps.weight", f, e, n),
    ]
    if lay.expert_bias:
        out += [
            TensorInfo(name=p + "ffn_gate_exps.bias", shape=(f, n), ggml_type=F32),
            TensorInfo(name=p + "ffn_up_exps.bias", shape=(f, n), ggml_type=F32),
            TensorInfo(name=p + "ffn_down_exps.bias", shape=(e, n), ggml_type=F32),
        ]
    if s.n_expert_shared and s.n_ff_shexp:
        fs = s.n_ff_shexp
        out += [
            _mat(p + "ffn_gate_shexp.weight", e, fs),
            _mat(p + "ffn_up_shexp.weight", e, fs),
            _mat(p + "ffn_down_shexp.weight", fs, e),
        ]
        if lay.shared_expert_gate:
            out.append(_vec(p + "ffn_gate_inp_shexp.weight", e))
    return out


def _encoder(s: ModelShape) -> tuple[TensorInfo, ...]:
    """BERT-style embedding models (llama.cpp's bert and nomic-bert graphs): learned positions
    (bert) or rotary ones (nomic-bert), post-norms with biases, no LM head."""
    e = s.n_embd
    out = [
        _mat("token_embd.weight", e, s.n_vocab),
        _mat("token_types.weight", e, 2),
        _vec("token_embd_norm.weight", e),
        _vec("token_embd_norm.bias", e),
    ]
    if s.arch == "bert":
        out.append(_mat("position_embd.weight", e, s.n_ctx_train))
    for il in range(s.n_layer):
        p, f = f"blk.{il}.", s.n_ff[il]
        if s.arch == "nomic-bert":
            out += [
                _mat(p + "attn_qkv.weight", e, 3 * e),
                _mat(p + "attn_output.weight", e, e),
                _mat(p + "ffn_gate.weight", e, f),
                _mat(p + "ffn_up.weight", e, f),
                _mat(p + "ffn_down.weight", f, e),
            ]
        else:
            for n in ("attn_q", "attn_k", "attn_v", "attn_output"):
                out += [_mat(p + n + ".weight", e, e), _vec(p + n + ".bias", e)]
            out += [
                _mat(p + "ffn_up.weight", e, f),
                _vec(p + "ffn_up.bias", f),
                _mat(p + "ffn_down.weight", f, e),
                _vec(p + "ffn_down.bias", e),
            ]
        for n in ("attn_output_norm", "layer_output_norm"):
            out += [_vec(p + n + ".weight", e), _vec(p + n + ".bias", e)]
    return tuple(out)
