"""A model's shape: everything the fit calculator needs, from a GGUF header or a config.json.

Names follow llama.cpp's hparams (n_layer, n_embd, n_head_kv, ...) so that the rules copied from
llama.cpp read the same here as there.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from kennel.model.gguf_header import TensorInfo

SourceKind = Literal["gguf", "hf-config", "catalog"]


@dataclass(frozen=True)
class RecurrentShape:
    """State sizes of recurrent (Mamba/RWKV-style) layers; llama.cpp keeps it per sequence, in F32."""

    d_conv: int = 0
    d_inner: int = 0
    d_state: int = 0
    n_group: int = 0
    wkv_head_size: int = 0
    token_shift_count: int = 0

    def state_floats(self, n_embd: int) -> int:
        """Floats of conv (r) plus SSM (s) state for one layer and one sequence."""
        if self.wkv_head_size:
            return self.token_shift_count * n_embd + n_embd * self.wkv_head_size
        r = max(self.d_conv - 1, 0) * (self.d_inner + 2 * self.n_group * self.d_state)
        return r + self.d_state * self.d_inner


@dataclass(frozen=True)
class ModelShape:
    arch: str
    name: str
    n_layer: int
    n_embd: int
    n_vocab: int
    n_ctx_train: int
    n_head: tuple[int, ...]
    n_head_kv: tuple[int, ...]
    head_dim_k: int
    head_dim_v: int
    n_ff: tuple[int, ...]
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_exp: int = 0
    n_expert_shared: int = 0
    n_ff_shexp: int = 0
    n_swa: int = 0
    swa_layers: tuple[bool, ...] = ()
    # MLA (DeepSeek V2/V3, Kimi K2): the cache holds one compressed latent per token
    kv_lora_rank: int = 0
    mla_rope_dim: int = 0
    recurrent_layers: tuple[bool, ...] = ()
    recurrent: RecurrentShape = field(default_factory=RecurrentShape)
    tied_embeddings: bool = False
    causal: bool = True
    tensors: tuple[TensorInfo, ...] = ()
    file_type: str | None = None
    source_kind: SourceKind = "gguf"

    # -- per-layer views (llama.cpp's hparams accessors) -------------------------------------

    def is_swa(self, il: int) -> bool:
        return bool(self.swa_layers) and self.swa_layers[il]

    def is_recurrent(self, il: int) -> bool:
        return bool(self.recurrent_layers) and self.recurrent_layers[il]

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    def n_embd_k_gqa(self, il: int) -> int:
        return self.head_dim_k * self.n_head_kv[il]

    def n_embd_v_gqa(self, il: int) -> int:
        return self.head_dim_v * self.n_head_kv[il]

    def n_embd_v_gqa_max(self) -> int:
        return max(self.n_embd_v_gqa(il) for il in range(self.n_layer))

    @property
    def n_gqa(self) -> int:
        """Query heads per KV head, as llama.cpp reports it for the first layer."""
        return self.n_head[0] // self.n_head_kv[0] if self.n_head_kv and self.n_head_kv[0] else 0

    @property
    def is_moe(self) -> bool:
        return self.n_expert > 1

    @property
    def has_attention(self) -> bool:
        return any(not self.is_recurrent(il) and self.n_head_kv[il] > 0 for il in range(self.n_layer))

    # -- parameters -------------------------------------------------------------------------

    @property
    def n_params(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    @property
    def n_params_active(self) -> int:
        """Parameters touched per token: all but the unused experts (and not the embedding table)."""
        total = 0
        for t in self.tensors:
            if t.name == "token_embd.weight":
                continue
            if "_exps." in t.name and self.n_expert:
                total += t.n_elements * self.n_expert_used // self.n_expert
            else:
                total += t.n_elements
        if self.tied_embeddings:
            total += self.n_embd * self.n_vocab
        return total

    def with_tensors(self, tensors: tuple[TensorInfo, ...], file_type: str | None) -> ModelShape:
        return replace(self, tensors=tensors, file_type=file_type)


def layer_of(tensor_name: str) -> int:
    """The block index of 'blk.N.*', or -1 for tensors outside the blocks."""
    if tensor_name.startswith("blk."):
        return int(tensor_name.split(".", 2)[1])
    return -1
