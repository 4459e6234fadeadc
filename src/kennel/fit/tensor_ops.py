"""Which weights llama.cpp multiplies with (``GGML_OP_MUL_MAT`` / ``GGML_OP_MUL_MAT_ID``).

llama.cpp picks a weight's buffer type by asking each candidate whether it supports the op the
weight is used with (``LLM_TENSOR_INFOS`` in src/llama-arch.cpp); the CPU's repack buffer only
takes matrix multiplications, so these are the only tensors that can be repacked. The tables are
the name templates of that map (``blk.%d.`` for a layer, ``.%d`` for an expert index) whose op is
MUL_MAT or MUL_MAT_ID, taken from the llama.cpp that xllamacpp 2026.10.11549 vendors.
"""

from __future__ import annotations

import re
from typing import Literal

# fmt: off
MUL_MAT: frozenset[str] = frozenset({
    "altup_proj", "altup_unembd_proj", "blk.%d.altup_correct_coef", "blk.%d.altup_predict_coef",
    "blk.%d.altup_router", "blk.%d.attn_compressor_gate", "blk.%d.attn_compressor_kv",
    "blk.%d.attn_conv_proj", "blk.%d.attn_gate", "blk.%d.attn_k", "blk.%d.attn_k_b", "blk.%d.attn_kv",
    "blk.%d.attn_kv_a_mqa", "blk.%d.attn_kv_b", "blk.%d.attn_output", "blk.%d.attn_output_a",
    "blk.%d.attn_output_b", "blk.%d.attn_q", "blk.%d.attn_q_a", "blk.%d.attn_q_b", "blk.%d.attn_qkv",
    "blk.%d.attn_v", "blk.%d.attn_v_b", "blk.%d.attn_v_gate", "blk.%d.channel_mix_key",
    "blk.%d.channel_mix_receptance", "blk.%d.channel_mix_value", "blk.%d.ffn_conv_proj", "blk.%d.ffn_down",
    "blk.%d.ffn_down_shexp", "blk.%d.ffn_gate", "blk.%d.ffn_gate_inp", "blk.%d.ffn_gate_inp_shexp",
    "blk.%d.ffn_gate_shexp", "blk.%d.ffn_latent_down", "blk.%d.ffn_latent_up", "blk.%d.ffn_routed_down",
    "blk.%d.ffn_routed_up", "blk.%d.ffn_up", "blk.%d.ffn_up_shexp", "blk.%d.hc_attn_down",
    "blk.%d.hc_attn_fn", "blk.%d.hc_attn_inject", "blk.%d.hc_attn_up", "blk.%d.hc_ffn_down",
    "blk.%d.hc_ffn_fn", "blk.%d.hc_ffn_inject", "blk.%d.hc_ffn_up", "blk.%d.indexer.attn_k",
    "blk.%d.indexer.attn_q_b", "blk.%d.indexer.k_proj", "blk.%d.indexer.proj", "blk.%d.indexer.q_proj",
    "blk.%d.indexer_compressor_gate", "blk.%d.indexer_compressor_kv", "blk.%d.inp_gate", "blk.%d.laurel_l",
    "blk.%d.laurel_r", "blk.%d.nextn.eh_proj", "blk.%d.nextn.hc_head_down", "blk.%d.nextn.hc_head_up",
    "blk.%d.nextn.shared_head_head", "blk.%d.ple_key", "blk.%d.ple_value", "blk.%d.proj",
    "blk.%d.shortconv.in_proj", "blk.%d.shortconv.out_proj", "blk.%d.ssm_alpha", "blk.%d.ssm_ba",
    "blk.%d.ssm_beta", "blk.%d.ssm_dt", "blk.%d.ssm_f_a", "blk.%d.ssm_f_b", "blk.%d.ssm_g", "blk.%d.ssm_g_a",
    "blk.%d.ssm_g_b", "blk.%d.ssm_in", "blk.%d.ssm_out", "blk.%d.ssm_x", "blk.%d.time_mix_a1",
    "blk.%d.time_mix_a2", "blk.%d.time_mix_decay_w1", "blk.%d.time_mix_decay_w2", "blk.%d.time_mix_g1",
    "blk.%d.time_mix_g2", "blk.%d.time_mix_gate", "blk.%d.time_mix_key", "blk.%d.time_mix_output",
    "blk.%d.time_mix_receptance", "blk.%d.time_mix_v1", "blk.%d.time_mix_v2", "blk.%d.time_mix_value",
    "blk.%d.time_mix_w1", "blk.%d.time_mix_w2", "blk.%d.vis_attn_output", "blk.%d.vis_attn_qkv",
    "blk.%d.vis_down", "blk.%d.vis_gate", "blk.%d.vis_up", "cls", "cls.output", "conf_proj",
    "convnext.%d.pw1", "convnext.%d.pw2", "dec.blk.%d.attn_k", "dec.blk.%d.attn_o", "dec.blk.%d.attn_q",
    "dec.blk.%d.attn_v", "dec.blk.%d.cross_attn_k", "dec.blk.%d.cross_attn_o", "dec.blk.%d.cross_attn_q",
    "dec.blk.%d.cross_attn_v", "dec.blk.%d.ffn_down", "dec.blk.%d.ffn_gate", "dec.blk.%d.ffn_up",
    "decision.proj_global", "decision.proj_memory", "decision.proj_option_context",
    "decision.proj_option_lexical", "decision.proj_option_question", "decision.proj_question",
    "decision.scorer", "decision.scorer_out", "dense_2", "dense_3", "enc.blk.%d.attn_k", "enc.blk.%d.attn_o",
    "enc.blk.%d.attn_q", "enc.blk.%d.attn_v", "enc.blk.%d.ffn_down", "enc.blk.%d.ffn_gate",
    "enc.blk.%d.ffn_up", "fc", "markov_w2", "nextn.post_projection", "nextn.pre_projection", "output",
    "output_hc_down", "output_hc_fn", "output_hc_up", "per_layer_model_proj", "posnet.%d.attn_k",
    "posnet.%d.attn_output", "posnet.%d.attn_q", "posnet.%d.attn_v", "selector_hidden",
})
MUL_MAT_ID: frozenset[str] = frozenset({
    "blk.%d.attn_v_exps", "blk.%d.ffn_down_chexps", "blk.%d.ffn_down_exps", "blk.%d.ffn_gate_chexps",
    "blk.%d.ffn_gate_exps", "blk.%d.ffn_gate_up_exps", "blk.%d.ffn_up_chexps", "blk.%d.ffn_up_exps",
})
# fmt: on

# repeating-layer tensors llama.cpp creates with layer 0's buffer types although their name has
# no block number (gemma3n and gemma4 project all layers' inputs with one matrix)
LAYER_ZERO = frozenset({"per_layer_model_proj", "nextn.pre_projection"})

_INDEX = re.compile(r"(?<=\.)\d+(?=\.|$)")

Op = Literal["mul_mat", "mul_mat_id"]


def weight_op(name: str) -> Op | None:
    """The matrix op llama.cpp uses the weight ``name`` (e.g. "blk.3.ffn_up.weight") with, or
    None for everything else (norms, biases, embeddings read by row, convolutions)."""
    if not name.endswith(".weight"):
        return None  # ".bias" goes with ADD; ".scale" and friends are one-dimensional
    template = _INDEX.sub("%d", name[: -len(".weight")])
    if template in MUL_MAT:
        return "mul_mat"
    if template in MUL_MAT_ID:
        return "mul_mat_id"
    return None
