"""ModelShape from a GGUF header, by llama.cpp's own rules for reading hparams."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from gguf import GGMLQuantizationType, LlamaFileType

from kennel.errors import UnsupportedModelError
from kennel.model.gguf_header import ArraySummary, GGUFHeader, TensorInfo
from kennel.model.shape import ModelShape, RecurrentShape

# (pattern, dense_first) llama.cpp uses when the file gives a sliding window but no pattern
SWA_PATTERNS: dict[str, tuple[int, bool]] = {
    "gemma2": (2, False),
    "gemma3": (6, False),
    "gemma3n": (5, False),
    "gemma-embedding": (6, False),
    "cohere2": (4, False),
    "cohere2moe": (4, True),
    "llama4": (4, False),
    "gpt-oss": (2, False),
    "exaone4": (4, False),
    "exaone-moe": (4, False),
    "olmo2": (4, False),
    "afmoe": (4, False),
    "plamo3": (8, False),
    "smallthinker": (4, True),
}
RECURRENT_ARCHS = {"mamba", "mamba2", "rwkv6", "rwkv6qwen2", "rwkv7", "arwkv7"}
NON_CAUSAL_ARCHS = {
    "bert",
    "nomic-bert",
    "nomic-bert-moe",
    "jina-bert-v2",
    "jina-bert-v3",
    "modern-bert",
    "neo-bert",
    "eurobert",
    "gemma-embedding",
}


def _per_layer(value: Any, n_layer: int, default: int = 0) -> tuple[int, ...]:
    if value is None:
        return (default,) * n_layer
    if isinstance(value, list):
        if len(value) < n_layer:
            raise UnsupportedModelError(
                f"A per-layer value lists {len(value)} entries for {n_layer} layers.",
                hint="The file's metadata is inconsistent; convert the model again.",
            )
        return tuple(int(x) for x in value[:n_layer])
    return (int(value),) * n_layer


def _swa_layers(md: dict[str, Any], arch: str, n_layer: int) -> tuple[int, tuple[bool, ...]]:
    n_swa = int(md.get(f"{arch}.attention.sliding_window", 0) or 0)
    if arch not in SWA_PATTERNS or n_swa <= 0:
        return 0, ()
    pattern = md.get(f"{arch}.attention.sliding_window_pattern")
    if isinstance(pattern, list):
        return n_swa, tuple(bool(x) for x in pattern[:n_layer])
    n_pattern, dense_first = SWA_PATTERNS[arch]
    if isinstance(pattern, int):
        n_pattern = pattern
    return n_swa, swa_pattern(n_layer, n_pattern, dense_first=dense_first)


def swa_pattern(n_layer: int, n_pattern: int, *, dense_first: bool = False) -> tuple[bool, ...]:
    """llama_hparams::set_swa_pattern: which layers use the sliding window."""
    if dense_first:
        return tuple(n_pattern == 0 or il % n_pattern != 0 for il in range(n_layer))
    return tuple(n_pattern == 0 or il % n_pattern < n_pattern - 1 for il in range(n_layer))


def file_type_name(header: GGUFHeader) -> str:
    """The quantization label users know (Q4_K_M, F16), from general.file_type or the tensors."""
    ftype = header.metadata.get("general.file_type")
    if isinstance(ftype, int):
        try:
            return LlamaFileType(ftype).name.removeprefix("MOSTLY_").removeprefix("ALL_")
        except ValueError:
            pass
    counts: Counter[int] = Counter()
    for t in header.tensors:
        if len(t.shape) >= 2:
            counts[t.ggml_type] += t.n_elements
    if not counts:
        return "unknown"
    return GGMLQuantizationType(counts.most_common(1)[0][0]).name


def _vocab_size(md: dict[str, Any], arch: str, tensors: Sequence[TensorInfo]) -> int:
    if v := md.get(f"{arch}.vocab_size"):
        return int(v)
    toks = md.get("tokenizer.ggml.tokens")
    if isinstance(toks, ArraySummary):
        return toks.count
    if isinstance(toks, list):
        return len(toks)
    for t in tensors:
        if t.name == "token_embd.weight":
            return t.shape[1]
    raise UnsupportedModelError("The GGUF file has no vocabulary.", hint="Convert the model again.")


def _ffn_from_tensors(tensors: Sequence[TensorInfo], n_layer: int) -> tuple[tuple[int, ...], int, int, int]:
    """Per-layer dense FFN width, expert FFN width, shared-expert width, expert count."""
    dense = [0] * n_layer
    n_ff_exp = n_ff_shexp = n_expert = 0
    for t in tensors:
        if not t.name.startswith("blk."):
            continue
        il = int(t.name.split(".")[1])
        if il >= n_layer:
            continue
        if t.name.endswith(".ffn_down.weight"):
            dense[il] = t.shape[0]
        elif t.name.endswith(".ffn_up.weight") and dense[il] == 0:
            dense[il] = t.shape[1]
        elif t.name.endswith(".ffn_down_exps.weight"):
            n_ff_exp, n_expert = t.shape[0], t.shape[2]
        elif t.name.endswith(".ffn_down_shexp.weight"):
            n_ff_shexp = t.shape[0]
    return tuple(dense), n_ff_exp, n_ff_shexp, n_expert


def shape_from_gguf(header: GGUFHeader, *, name: str | None = None) -> ModelShape:
    md = header.metadata
    arch = header.architecture
    if not arch:
        raise UnsupportedModelError(
            f"{header.source} has no general.architecture key.", hint="Convert the model again."
        )
    if md.get("general.type") == "adapter":
        raise UnsupportedModelError(
            f"{header.source} is a LoRA adapter, not a model.",
            hint="Size the base model instead; the adapter adds only its own file size.",
        )
    if f"{arch}.block_count" not in md or f"{arch}.embedding_length" not in md:
        raise UnsupportedModelError(
            f"{header.source}: architecture {arch!r} has no block_count/embedding_length keys.",
            hint="kennel sizes decoder LLMs; this file may be a vision projector or another model type.",
        )
    n_layer = int(md[f"{arch}.block_count"])
    n_embd = int(md[f"{arch}.embedding_length"])
    n_head = _per_layer(md.get(f"{arch}.attention.head_count"), n_layer)
    n_head_kv = _per_layer(
        md.get(f"{arch}.attention.head_count_kv", md.get(f"{arch}.attention.head_count")), n_layer
    )
    first_heads = next((h for h in n_head if h), 1)
    head_k = int(md.get(f"{arch}.attention.key_length", n_embd // first_heads))
    head_v = int(md.get(f"{arch}.attention.value_length", head_k))
    dense, n_ff_exp, n_ff_shexp, n_expert_t = _ffn_from_tensors(header.tensors, n_layer)
    n_expert = int(md.get(f"{arch}.expert_count", n_expert_t) or 0)
    recurrent_layers, recurrent = _recurrent(md, arch, n_layer, n_head_kv)
    n_swa, swa_layers = _swa_layers(md, arch, n_layer)
    kv_lora = int(md.get(f"{arch}.attention.kv_lora_rank", 0) or 0)
    is_mla = kv_lora > 0 and f"{arch}.attention.key_length_mla" in md
    names = {t.name for t in header.tensors}
    return ModelShape(
        arch=arch,
        name=name or str(md.get("general.name") or header.source),
        n_layer=n_layer,
        n_embd=n_embd,
        n_vocab=_vocab_size(md, arch, header.tensors),
        n_ctx_train=int(md.get(f"{arch}.context_length", 0) or 0),
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim_k=head_k,
        head_dim_v=head_v,
        n_ff=dense,
        n_expert=n_expert,
        n_expert_used=int(md.get(f"{arch}.expert_used_count", 0) or 0),
        n_ff_exp=n_ff_exp,
        n_expert_shared=int(md.get(f"{arch}.expert_shared_count", 1 if n_ff_shexp else 0) or 0),
        n_ff_shexp=n_ff_shexp,
        n_swa=n_swa,
        swa_layers=swa_layers,
        kv_lora_rank=kv_lora if is_mla else 0,
        mla_rope_dim=int(md.get(f"{arch}.rope.dimension_count", 0) or 0) if is_mla else 0,
        recurrent_layers=recurrent_layers,
        recurrent=recurrent,
        tied_embeddings="output.weight" not in names,
        causal=arch not in NON_CAUSAL_ARCHS and bool(md.get(f"{arch}.attention.causal", True)),
        tensors=header.tensors,
        file_type=file_type_name(header),
        source_kind="gguf",
    )


def _recurrent(
    md: dict[str, Any], arch: str, n_layer: int, n_head_kv: tuple[int, ...]
) -> tuple[tuple[bool, ...], RecurrentShape]:
    has_ssm = f"{arch}.ssm.state_size" in md or f"{arch}.wkv.head_size" in md
    if not has_ssm:
        return (), RecurrentShape()
    shape = RecurrentShape(
        d_conv=int(md.get(f"{arch}.ssm.conv_kernel", 0) or 0),
        d_inner=int(md.get(f"{arch}.ssm.inner_size", 0) or 0),
        d_state=int(md.get(f"{arch}.ssm.state_size", 0) or 0),
        n_group=int(md.get(f"{arch}.ssm.group_count", 0) or 0),
        wkv_head_size=int(md.get(f"{arch}.wkv.head_size", 0) or 0),
        token_shift_count=int(md.get(f"{arch}.token_shift_count", 2) or 2),
    )
    if arch in RECURRENT_ARCHS:
        return (True,) * n_layer, shape
    return tuple(h == 0 for h in n_head_kv), shape
