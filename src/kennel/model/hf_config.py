"""ModelShape from a Hugging Face config.json, for models given as safetensors (or catalog rows).

The GGUF architecture each model_type converts to decides the tensor layout, the sliding-window
pattern and the graph llama.cpp runs; the mapping follows convert_hf_to_gguf.py.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from kennel.errors import UnsupportedModelError
from kennel.model.gguf_shape import swa_pattern
from kennel.model.layout import tensor_layout
from kennel.model.shape import ModelShape

# HF model_type -> GGUF architecture name
MODEL_TYPES = {
    "llama": "llama",
    "mistral": "llama",
    "mixtral": "llama",
    "granite": "granite",
    "qwen2": "qwen2",
    "qwen2_moe": "qwen2moe",
    "qwen3": "qwen3",
    "qwen3_moe": "qwen3moe",
    "gemma": "gemma",
    "gemma2": "gemma2",
    "gemma3": "gemma3",
    "gemma3_text": "gemma3",
    "phi3": "phi3",
    "glm4": "glm4",
    "deepseek_v2": "deepseek2",
    "deepseek_v3": "deepseek2",
    "gpt_oss": "gpt-oss",
    "mistral3": "llama",
    "smollm3": "llama",
    "bert": "bert",
    "xlm-roberta": "bert",
    "nomic_bert": "nomic-bert",
}
# (default sliding-window pattern, dense first) for archs that interleave local and global layers
_SWA = {"gemma2": 2, "gemma3": 6, "gpt-oss": 2}


def _get(cfg: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for k in keys:
        if k in cfg and cfg[k] is not None:
            return cfg[k]
    return default


def shape_from_config(cfg: dict[str, Any], *, name: str) -> ModelShape:
    """Read a config.json dict; multimodal configs are sized by their text model."""
    model_type = str(cfg.get("model_type", ""))
    if "text_config" in cfg and isinstance(cfg["text_config"], dict):
        inner = {**cfg["text_config"]}
        inner.setdefault("model_type", model_type)
        if model_type in ("gemma3", "mistral3", "llama4"):
            inner["model_type"] = cfg["text_config"].get("model_type", model_type)
        inner.setdefault("tie_word_embeddings", cfg.get("tie_word_embeddings"))
        cfg, model_type = inner, str(inner.get("model_type", model_type))
    arch = MODEL_TYPES.get(model_type)
    if arch is None:
        raise UnsupportedModelError(
            f"kennel cannot size architecture {model_type or 'unknown'!r} from its config.json.",
            hint="Give a GGUF file of the model instead (kennel reads its header), or one of: "
            + ", ".join(sorted(MODEL_TYPES))
            + ".",
        )
    try:
        return _shape(cfg, arch, model_type, name)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise UnsupportedModelError(
            f"The config.json of {name} is missing or has a bad value for {exc}.",
            hint="Check the repository's config.json, or give a GGUF file instead.",
        ) from exc


def _shape(cfg: dict[str, Any], arch: str, model_type: str, name: str) -> ModelShape:
    n_layer = int(_get(cfg, "num_hidden_layers", "n_layer"))
    n_embd = int(_get(cfg, "hidden_size", "n_embd"))
    n_head = int(_get(cfg, "num_attention_heads", "n_head"))
    n_head_kv = int(_get(cfg, "num_key_value_heads", default=n_head))
    head_dim = int(_get(cfg, "head_dim", default=n_embd // n_head))
    n_ff = int(_get(cfg, "intermediate_size", "ffn_dim", "n_inner", default=4 * n_embd))
    n_expert = int(_get(cfg, "num_local_experts", "num_experts", "n_routed_experts", default=0) or 0)
    n_used = int(_get(cfg, "num_experts_per_tok", "num_experts_per_token", default=0) or 0)
    n_ff_exp = int(_get(cfg, "moe_intermediate_size", default=n_ff if n_expert else 0) or 0)
    n_shared = int(_get(cfg, "n_shared_experts", default=0) or 0)
    n_ff_shexp = int(_get(cfg, "shared_expert_intermediate_size", default=n_shared * n_ff_exp) or 0)
    if n_ff_shexp and not n_shared:
        n_shared = 1
    dense_lead = int(_get(cfg, "first_k_dense_replace", default=0) or 0)
    sparse_step = int(_get(cfg, "decoder_sparse_step", default=1) or 1)
    ff = []
    for il in range(n_layer):
        moe_layer = n_expert > 1 and il >= dense_lead and (il + 1) % sparse_step == 0
        ff.append(0 if moe_layer else n_ff)
    kv_lora = int(_get(cfg, "kv_lora_rank", default=0) or 0)
    head_k, head_v, rope = head_dim, head_dim, 0
    if arch == "deepseek2" and kv_lora:
        rope = int(cfg["qk_rope_head_dim"])
        head_k = int(cfg["qk_nope_head_dim"]) + rope
        head_v = int(cfg["v_head_dim"])
    n_swa, swa_layers = _sliding(cfg, arch, n_layer)
    shape = ModelShape(
        arch=arch,
        name=name,
        n_layer=n_layer,
        n_embd=n_embd,
        n_vocab=int(cfg["vocab_size"]),
        n_ctx_train=int(
            _get(
                cfg, "max_position_embeddings", "max_sequence_length", "seq_length", "n_positions", default=0
            )
            or 0
        ),
        n_head=(n_head,) * n_layer,
        n_head_kv=(n_head_kv,) * n_layer,
        head_dim_k=head_k,
        head_dim_v=head_v,
        n_ff=tuple(ff),
        n_expert=n_expert if n_expert > 1 else 0,
        n_expert_used=n_used if n_expert > 1 else 0,
        n_ff_exp=n_ff_exp if n_expert > 1 else 0,
        n_expert_shared=n_shared,
        n_ff_shexp=n_ff_shexp,
        n_swa=n_swa,
        swa_layers=swa_layers,
        kv_lora_rank=kv_lora if arch == "deepseek2" else 0,
        mla_rope_dim=rope,
        tied_embeddings=bool(_get(cfg, "tie_word_embeddings", default=model_type.startswith("gemma"))),
        causal=arch not in ("bert", "nomic-bert"),
        source_kind="hf-config",
    )
    return replace(shape, tensors=tensor_layout(shape), file_type="BF16")


def _sliding(cfg: dict[str, Any], arch: str, n_layer: int) -> tuple[int, tuple[bool, ...]]:
    window = int(_get(cfg, "sliding_window", default=0) or 0)
    if arch not in _SWA or window <= 0:
        return 0, ()
    layer_types = cfg.get("layer_types")
    if isinstance(layer_types, list) and len(layer_types) >= n_layer:
        return window, tuple(t == "sliding_attention" for t in layer_types[:n_layer])
    pattern = int(_get(cfg, "sliding_window_pattern", default=_SWA[arch]))
    return window, swa_pattern(n_layer, pattern)
