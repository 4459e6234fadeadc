"""Quantization schemes: GGUF file types (by llama.cpp's per-tensor rules) and non-GGUF formats.

A Q4_K_M file is not 4.5 bits everywhere: llama.cpp's quantizer (src/llama-quant.cpp,
llama_tensor_get_type) keeps the output matrix at Q6_K, gives half of the attn_v and ffn_down
tensors Q6_K, falls back to other types where a row does not divide into blocks, and leaves
norms in F32. ``tensor_types`` applies the same rules, so the weights of "this model at Q5_K_M"
come out to the byte, not from an average bits-per-weight.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from gguf import GGML_QUANT_SIZES, LlamaFileType
from gguf import GGMLQuantizationType as T

from kennel.errors import InvalidOptionError
from kennel.model.gguf_header import TensorInfo, tensor_nbytes
from kennel.model.shape import ModelShape, layer_of

FT = LlamaFileType


@dataclass(frozen=True)
class QuantScheme:
    name: str
    kind: Literal["gguf", "engine"]
    bits: float  # nominal bits per weight, for ordering and display
    ftype: FT | None = None
    bytes_per_param: float = 0.0  # engine formats only
    note: str = ""


GGUF_SCHEMES: tuple[QuantScheme, ...] = (
    QuantScheme("IQ2_XXS", "gguf", 2.06, FT.MOSTLY_IQ2_XXS, note="needs an importance matrix"),
    QuantScheme("IQ2_M", "gguf", 2.7, FT.MOSTLY_IQ2_M, note="needs an importance matrix"),
    QuantScheme("Q2_K", "gguf", 2.96, FT.MOSTLY_Q2_K),
    QuantScheme("IQ3_XXS", "gguf", 3.06, FT.MOSTLY_IQ3_XXS),
    QuantScheme("Q3_K_S", "gguf", 3.5, FT.MOSTLY_Q3_K_S),
    QuantScheme("IQ3_M", "gguf", 3.66, FT.MOSTLY_IQ3_M),
    QuantScheme("Q3_K_M", "gguf", 3.91, FT.MOSTLY_Q3_K_M),
    QuantScheme("IQ4_XS", "gguf", 4.25, FT.MOSTLY_IQ4_XS),
    QuantScheme("Q3_K_L", "gguf", 4.27, FT.MOSTLY_Q3_K_L),
    QuantScheme("Q4_0", "gguf", 4.5, FT.MOSTLY_Q4_0),
    QuantScheme("Q4_K_S", "gguf", 4.58, FT.MOSTLY_Q4_K_S),
    QuantScheme("Q4_K_M", "gguf", 4.85, FT.MOSTLY_Q4_K_M),
    QuantScheme("Q5_K_S", "gguf", 5.54, FT.MOSTLY_Q5_K_S),
    QuantScheme("Q5_K_M", "gguf", 5.69, FT.MOSTLY_Q5_K_M),
    QuantScheme("Q6_K", "gguf", 6.56, FT.MOSTLY_Q6_K),
    QuantScheme("Q8_0", "gguf", 8.5, FT.MOSTLY_Q8_0),
    QuantScheme("F16", "gguf", 16.0, FT.MOSTLY_F16),
)

# Weights-only formats for GPU engines (vLLM, TensorRT-LLM, SGLang). Embeddings and the LM head
# stay in BF16; group scales are included in bytes_per_param.
ENGINE_SCHEMES: tuple[QuantScheme, ...] = (
    QuantScheme("AWQ-INT4", "engine", 4.25, bytes_per_param=0.53, note="group 128, fp16 scales and zeros"),
    QuantScheme("GPTQ-INT4", "engine", 4.25, bytes_per_param=0.53, note="group 128"),
    QuantScheme("NVFP4", "engine", 4.5, bytes_per_param=0.5625, note="Blackwell GPUs"),
    QuantScheme("MXFP4", "engine", 4.25, bytes_per_param=0.53),
    QuantScheme("INT8", "engine", 8.0, bytes_per_param=1.0, note="W8A8 or W8A16"),
    QuantScheme("FP8", "engine", 8.0, bytes_per_param=1.0, note="Ada, Hopper, Blackwell GPUs"),
    QuantScheme("BF16", "engine", 16.0, bytes_per_param=2.0),
)

ALL_SCHEMES = {s.name: s for s in (*GGUF_SCHEMES, *ENGINE_SCHEMES)}
_ALIASES = {
    "FP16": "F16",
    "Q4_K": "Q4_K_M",
    "Q5_K": "Q5_K_M",
    "Q3_K": "Q3_K_M",
    "AWQ": "AWQ-INT4",
    "GPTQ": "GPTQ-INT4",
}


def scheme(name: str) -> QuantScheme:
    key = name.strip().upper().replace("-", "_")
    key = _ALIASES.get(key, key).replace("-", "_")
    for s in ALL_SCHEMES.values():
        if s.name.replace("-", "_") == key:
            return s
    raise InvalidOptionError(
        f"Unknown quantization {name!r}.",
        hint="Known: " + ", ".join(ALL_SCHEMES) + ".",
    )


def default_type(ftype: FT) -> T:
    """llama_ftype_get_default_type."""
    table = {
        FT.MOSTLY_Q4_0: T.Q4_0,
        FT.MOSTLY_Q4_1: T.Q4_1,
        FT.MOSTLY_Q5_0: T.Q5_0,
        FT.MOSTLY_Q5_1: T.Q5_1,
        FT.MOSTLY_Q8_0: T.Q8_0,
        FT.MOSTLY_F16: T.F16,
        FT.MOSTLY_BF16: T.BF16,
        FT.ALL_F32: T.F32,
        FT.MOSTLY_MXFP4_MOE: T.MXFP4,
        FT.MOSTLY_Q2_K_S: T.Q2_K,
        FT.MOSTLY_Q2_K: T.Q2_K,
        FT.MOSTLY_IQ3_XS: T.IQ3_S,
        FT.MOSTLY_Q3_K_S: T.Q3_K,
        FT.MOSTLY_Q3_K_M: T.Q3_K,
        FT.MOSTLY_Q3_K_L: T.Q3_K,
        FT.MOSTLY_Q4_K_S: T.Q4_K,
        FT.MOSTLY_Q4_K_M: T.Q4_K,
        FT.MOSTLY_Q5_K_S: T.Q5_K,
        FT.MOSTLY_Q5_K_M: T.Q5_K,
        FT.MOSTLY_Q6_K: T.Q6_K,
        FT.MOSTLY_IQ2_XXS: T.IQ2_XXS,
        FT.MOSTLY_IQ2_XS: T.IQ2_XS,
        FT.MOSTLY_IQ2_S: T.IQ2_XS,
        FT.MOSTLY_IQ2_M: T.IQ2_S,
        FT.MOSTLY_IQ3_XXS: T.IQ3_XXS,
        FT.MOSTLY_IQ1_S: T.IQ1_S,
        FT.MOSTLY_IQ1_M: T.IQ1_M,
        FT.MOSTLY_IQ4_NL: T.IQ4_NL,
        FT.MOSTLY_IQ4_XS: T.IQ4_XS,
        FT.MOSTLY_IQ3_S: T.IQ3_S,
        FT.MOSTLY_IQ3_M: T.IQ3_S,
    }
    return table[ftype]


_NOT_QUANTIZED = (
    "_norm.weight",
    "ffn_gate_inp.weight",
    "ssm_conv1d",
    "attn_rel_b.weight",
    "altup",
    "laurel",
    "per_layer_model_proj",
)
_QUANTIZED = {t for t, (block, _) in GGML_QUANT_SIZES.items() if block > 1}


def _n_dims(shape: tuple[int, ...]) -> int:
    """ggml_n_dims: dimensions up to the last one longer than 1."""
    for i in range(len(shape) - 1, 0, -1):
        if shape[i] > 1:
            return i + 1
    return 1


def _allows_quantization(t: TensorInfo) -> bool:
    if _n_dims(t.shape) < 2:
        return False
    if not t.name.endswith("weight"):
        return False
    if any(s in t.name for s in _NOT_QUANTIZED):
        return False
    return "time_mix_" not in t.name and "position_embd" not in t.name and "token_types" not in t.name


def _category(name: str) -> str:
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for key, cat in (
        ("attn_qkv.weight", "attn_qkv"),
        ("attn_kv_b.weight", "attn_kv_b"),
        ("attn_v.weight", "attn_v"),
        ("attn_k.weight", "attn_k"),
        ("attn_q.weight", "attn_q"),
        ("attn_output.weight", "attn_output"),
        ("ffn_up", "ffn_up"),
        ("ffn_gate", "ffn_gate"),
        ("ffn_down", "ffn_down"),
    ):
        if key in name:
            return cat
    return "other"


def _fallback(ncols: int, target: T) -> T:
    """tensor_type_fallback: rows that do not divide into the type's blocks."""
    block = GGML_QUANT_SIZES[target][0]
    if ncols % block == 0:
        return target
    if target in (T.IQ1_S, T.IQ1_M, T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ3_XXS, T.IQ3_S, T.IQ4_XS):
        out = T.IQ4_NL
    elif target in (T.Q2_K, T.Q3_K, T.TQ1_0, T.TQ2_0):
        out = T.Q4_0
    elif target == T.Q4_K:
        out = T.Q5_0
    elif target == T.Q5_K:
        out = T.Q5_1
    elif target == T.Q6_K:
        out = T.Q8_0
    else:
        out = target
    return out if ncols % GGML_QUANT_SIZES[out][0] == 0 else T.F16


def _more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


@dataclass
class _State:
    """quantize_state_impl: counters llama.cpp advances as it walks the tensors in order."""

    shape: ModelShape
    ftype: FT
    has_imatrix: bool
    n_attention_wv: int = 0
    i_attention_wv: int = 0
    i_ffn_down: int = 0
    i_ffn_gate: int = 0
    i_ffn_up: int = 0
    tied: bool = True

    @property
    def n_gqa(self) -> int:
        return self.shape.n_gqa

    @property
    def n_expert(self) -> int:
        return self.shape.n_expert

    @property
    def is_70b(self) -> bool:
        s = self.shape
        return s.n_layer == 80 and s.arch in ("llama", "qwen2") and s.n_head[0] != s.n_head_kv[0]


def _impl(st: _State, new: T, t: TensorInfo, cat: str) -> T:
    f, arch, n_layer = st.ftype, st.shape.arch, st.shape.n_layer
    iq_low = {
        FT.MOSTLY_IQ2_XXS,
        FT.MOSTLY_IQ2_XS,
        FT.MOSTLY_IQ1_S,
        FT.MOSTLY_IQ2_S,
        FT.MOSTLY_IQ2_M,
        FT.MOSTLY_IQ1_M,
    }

    def layer(counter: int) -> tuple[int, int]:
        return (layer_of(t.name), n_layer) if st.n_expert > 1 else (counter, n_layer)

    if cat == "output" or (st.tied and cat == "token_embd"):
        if f == FT.MOSTLY_MXFP4_MOE or t.shape[0] % GGML_QUANT_SIZES[new][0]:
            return T.Q8_0
        if f in {
            FT.MOSTLY_IQ2_XXS,
            FT.MOSTLY_IQ2_XS,
            FT.MOSTLY_IQ3_XXS,
            FT.MOSTLY_IQ1_S,
            FT.MOSTLY_IQ2_S,
            FT.MOSTLY_IQ2_M,
            FT.MOSTLY_IQ1_M,
        }:
            return T.Q5_K
        return new if new == T.Q8_0 else T.Q6_K
    if f == FT.MOSTLY_MXFP4_MOE:
        return T.MXFP4 if len(t.shape) > 2 and t.shape[2] > 1 else T.Q8_0
    if cat == "token_embd":
        if f in {FT.MOSTLY_IQ2_XXS, FT.MOSTLY_IQ2_XS, FT.MOSTLY_IQ1_S, FT.MOSTLY_IQ1_M}:
            return T.Q2_K
        if f in {FT.MOSTLY_IQ2_S, FT.MOSTLY_IQ2_M, FT.MOSTLY_IQ3_XXS}:
            return T.IQ3_S
        if f in {FT.MOSTLY_TQ1_0, FT.MOSTLY_TQ2_0}:
            return T.Q4_K
        return new
    if f in iq_low:
        iq3 = f in (FT.MOSTLY_IQ2_S, FT.MOSTLY_IQ2_M)
        if cat in ("attn_v", "attn_qkv", "attn_kv_b"):
            st.i_attention_wv += 1
            if st.n_gqa >= 4 or st.n_expert >= 4:
                return T.Q4_K
            return T.IQ3_S if iq3 else T.Q2_K
        if st.n_expert == 8 and cat == "attn_k":
            return T.Q4_K
        if cat == "ffn_down":
            out = (T.IQ3_S if iq3 else T.Q2_K) if st.i_ffn_down < n_layer // 8 else new
            st.i_ffn_down += 1
            return out
        if cat == "attn_output":
            if st.n_expert == 8:
                return T.Q5_K
            if f in (FT.MOSTLY_IQ1_S, FT.MOSTLY_IQ1_M):
                return T.IQ2_XXS
            if iq3:
                return T.IQ3_S
        return new
    if cat in ("attn_v", "attn_qkv", "attn_kv_b"):
        out = _attn_v(st, new, f)
        st.i_attention_wv += 1
        return out
    if cat == "attn_k":
        if st.n_expert == 8:
            return T.Q8_0
        if f == FT.MOSTLY_IQ3_XS:
            return T.IQ3_XXS
        if f == FT.MOSTLY_IQ3_XXS:
            return T.IQ2_S
        return new
    if cat == "attn_q":
        if f == FT.MOSTLY_IQ3_XS:
            return T.IQ3_XXS
        if f == FT.MOSTLY_IQ3_XXS:
            return T.IQ2_S
        return new
    if cat == "ffn_down":
        i, n = layer(st.i_ffn_down)
        st.i_ffn_down += 1
        return _ffn_down(st, new, f, i, n, arch)
    if cat == "attn_output":
        if arch == "falcon":
            return T.Q4_K if f == FT.MOSTLY_Q3_K_L else new
        if st.n_expert == 8:
            eight = {
                FT.MOSTLY_Q2_K,
                FT.MOSTLY_IQ3_XS,
                FT.MOSTLY_IQ3_XXS,
                FT.MOSTLY_Q3_K_S,
                FT.MOSTLY_Q3_K_M,
                FT.MOSTLY_IQ4_NL,
                FT.MOSTLY_Q4_K_S,
                FT.MOSTLY_Q4_K_M,
                FT.MOSTLY_IQ3_S,
                FT.MOSTLY_IQ3_M,
                FT.MOSTLY_IQ4_XS,
            }
            return T.Q5_K if f in eight else new
        return {
            FT.MOSTLY_Q2_K: T.Q3_K,
            FT.MOSTLY_IQ3_XXS: T.IQ3_S,
            FT.MOSTLY_Q3_K_M: T.Q4_K,
            FT.MOSTLY_Q3_K_L: T.Q5_K,
            FT.MOSTLY_IQ3_M: T.Q4_K,
        }.get(f, new)
    if cat in ("ffn_gate", "ffn_up"):
        counter = st.i_ffn_gate if cat == "ffn_gate" else st.i_ffn_up
        i, n = layer(counter)
        if cat == "ffn_gate":
            st.i_ffn_gate += 1
        else:
            st.i_ffn_up += 1
        if f == FT.MOSTLY_IQ3_XS and n // 8 <= i < 7 * n // 8:
            return T.IQ3_XXS
    return new


def _attn_v(st: _State, new: T, f: FT) -> T:
    gqa4 = st.n_gqa >= 4
    if f == FT.MOSTLY_Q2_K:
        new = T.Q4_K if gqa4 else T.Q3_K
    elif f == FT.MOSTLY_Q2_K_S and gqa4:
        new = T.Q4_K
    elif f == FT.MOSTLY_IQ3_XXS:
        new = T.Q4_K if gqa4 else (T.IQ3_S if not st.has_imatrix else T.IQ3_XXS)
    elif (f in (FT.MOSTLY_IQ3_XS, FT.MOSTLY_IQ3_S) and gqa4) or f == FT.MOSTLY_IQ3_M:
        new = T.Q4_K
    elif f == FT.MOSTLY_Q3_K_M:
        new = T.Q5_K if st.i_attention_wv < 2 else T.Q4_K
    elif f == FT.MOSTLY_Q3_K_L or (f in (FT.MOSTLY_IQ4_NL, FT.MOSTLY_IQ4_XS) and gqa4):
        new = T.Q5_K
    elif f in (FT.MOSTLY_Q4_K_M, FT.MOSTLY_Q5_K_M) and _more_bits(st.i_attention_wv, st.n_attention_wv):
        new = T.Q6_K
    elif f == FT.MOSTLY_Q4_K_S and st.i_attention_wv < 4:
        new = T.Q5_K
    if st.is_70b and new in (T.Q3_K, T.Q4_K):
        new = T.Q5_K
    if st.n_expert == 8:
        new = T.Q8_0
    return new


def _ffn_down(st: _State, new: T, f: FT, i: int, n: int, arch: str) -> T:
    if f == FT.MOSTLY_Q2_K:
        return T.Q3_K
    if f == FT.MOSTLY_Q2_K_S:
        return T.Q4_K if i < n // 8 else new
    if f == FT.MOSTLY_IQ3_XXS and not st.has_imatrix:
        return T.Q4_K if i < n // 8 else T.Q3_K
    if f == FT.MOSTLY_Q3_K_M:
        if i < n // 16:
            return T.Q5_K
        return T.Q4_K if arch != "falcon" or _more_bits(i, n) else T.Q3_K
    if f == FT.MOSTLY_IQ3_M and (i < n // 8 or (st.n_expert == 8 and _more_bits(i, n))):
        return T.Q4_K
    if f == FT.MOSTLY_Q3_K_L:
        return T.Q4_K if arch == "falcon" else T.Q5_K
    if f == FT.MOSTLY_Q4_K_M:
        if arch == "falcon":
            return T.Q6_K if i < n // 16 else (T.Q5_K if _more_bits(i, n) else T.Q4_K)
        return T.Q6_K if _more_bits(i, n) else new
    if i < n // 8 and f in (FT.MOSTLY_IQ4_NL, FT.MOSTLY_IQ4_XS) and not st.has_imatrix:
        return T.Q5_K
    if f == FT.MOSTLY_Q5_K_M and _more_bits(i, n):
        return T.Q6_K
    if f == FT.MOSTLY_Q4_K_S and arch != "falcon" and i < n // 8:
        return T.Q5_K
    if f in (FT.MOSTLY_Q4_0, FT.MOSTLY_Q5_0) and st.has_imatrix and i < n // 8:
        return T.Q4_1 if f == FT.MOSTLY_Q4_0 else T.Q5_1
    return new


def _sort_key(name: str) -> tuple[int, str]:
    """llama_model_loader's weight_name_comparer: by block index, then by name."""
    return (layer_of(name), name)


def tensor_types(shape: ModelShape, ftype: FT, *, has_imatrix: bool = False) -> dict[str, int]:
    """The ggml type of each tensor after ``llama-quantize --ftype``, by llama.cpp's rules."""
    tensors = sorted(shape.tensors, key=lambda t: _sort_key(t.name))
    st = _State(shape=shape, ftype=ftype, has_imatrix=has_imatrix)
    st.n_attention_wv = sum(1 for t in tensors if _category(t.name) in ("attn_v", "attn_qkv", "attn_kv_b"))
    st.tied = not any(t.name == "output.weight" for t in tensors)
    base = default_type(ftype)
    out: dict[str, int] = {}
    for t in tensors:
        if not _allows_quantization(t):
            out[t.name] = t.ggml_type
            continue
        new = base
        if base in _QUANTIZED:
            new = _fallback(t.shape[0], _impl(st, base, t, _category(t.name)))
        out[t.name] = int(new)
    return out


def weights_bytes(shape: ModelShape, types: Mapping[str, int]) -> int:
    return sum(tensor_nbytes(t.shape, types.get(t.name, t.ggml_type)) for t in shape.tensors)


def engine_weights_bytes(shape: ModelShape, s: QuantScheme) -> int:
    """Non-GGUF formats quantize the linear layers only; embeddings and norms stay BF16."""
    total = 0.0
    for t in shape.tensors:
        if t.name in ("token_embd.weight", "output.weight") or len(t.shape) < 2 or "norm" in t.name:
            total += t.n_elements * 2
        else:
            total += t.n_elements * s.bytes_per_param
    return int(total)


def scheme_for_file(file_type: str | None) -> QuantScheme | None:
    if not file_type:
        return None
    try:
        return scheme(file_type)
    except InvalidOptionError:
        return None
