"""Memory of a model run in llama.cpp: weights, KV cache, compute buffer, overhead.

Every rule here is llama.cpp's (src/llama-context.cpp, llama-kv-cache*.cpp): context padding to
256 cells, per-stream caches when sequences are not unified, the sliding-window cache size, a V
cache that is transposed (and as wide as the widest layer) without flash attention, MLA caches
holding K only, recurrent layers holding a fixed state per sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from kennel.errors import InvalidOptionError
from kennel.fit.compute_graph import GraphParams, compute_buffer_bytes
from kennel.fit.ggml_sim import type_size
from kennel.model.gguf_header import tensor_nbytes
from kennel.model.shape import ModelShape, layer_of
from kennel.units import MiB

KV_TYPES = {
    "f16": "F16",
    "q8_0": "Q8_0",
    "q4_0": "Q4_0",
    "f32": "F32",
    "bf16": "BF16",
    "q5_0": "Q5_0",
    "q5_1": "Q5_1",
    "q4_1": "Q4_1",
}
CTX_PAD = 256
MAX_CONTEXT = 1 << 24  # 16M tokens: beyond any model's training context
# archs whose graph ``compute_graph`` rebuilds op by op; others use the llama graph as a proxy
EXACT_GRAPH_ARCHS = {
    "llama",
    "mistral3",
    "granite",
    "qwen2",
    "qwen3",
    "qwen2moe",
    "qwen3moe",
    "gemma",
    "gemma2",
    "gemma3",
}

# Memory a backend takes beyond its buffers: CUDA context and cuBLAS workspaces (Ollama reserves
# 457 MiB per CUDA GPU), ROCm the same order, Metal's command buffers; on the CPU, llama.cpp's
# threads and ggml contexts.
BACKEND_OVERHEAD = {
    "cuda": 450 * MiB,
    "rocm": 450 * MiB,
    "metal": 256 * MiB,
    "vulkan": 256 * MiB,
    "sycl": 450 * MiB,
    "cpu": 64 * MiB,
}


@dataclass(frozen=True)
class RunConfig:
    """How the engine runs the model. ``ctx`` is per sequence; ``parallel`` sequences each have a
    cache of ``ctx`` cells (llama.cpp's streams), as kennel's engine runs them; ``kv_unified``
    makes it one cache of ``ctx * parallel`` cells shared by all."""

    ctx: int = 8192
    parallel: int = 1
    kv_type: str = "f16"
    flash_attn: bool = True
    n_batch: int = 2048  # llama-server's default: whole prompts join one batch
    n_ubatch: int = 512
    kv_unified: bool = False
    swa_full: bool = False
    # serving embeddings or reranking: llama-server then computes an output for every token
    embedding: bool = False

    def validated(self, shape: ModelShape) -> RunConfig:
        if self.kv_type not in KV_TYPES:
            raise InvalidOptionError(
                f"Unknown KV cache type {self.kv_type!r}.", hint="Use one of: " + ", ".join(KV_TYPES) + "."
            )
        if self.ctx < 1 or self.ctx > MAX_CONTEXT:
            raise InvalidOptionError(
                f"A context of {self.ctx} tokens is not possible.",
                hint=f"Give --ctx between 1 and {shape.n_ctx_train or MAX_CONTEXT} (the model was trained on "
                f"{shape.n_ctx_train or 'an unknown number of'} tokens).",
            )
        if self.parallel < 1 or self.parallel > 256:
            raise InvalidOptionError("--parallel must be between 1 and 256.")
        if self.n_ubatch < 1 or self.n_batch < 1:
            raise InvalidOptionError("Batch sizes must be at least 1.")
        if self.n_batch < self.parallel and not self.embedding:
            # llama-server allows min(batch, parallel) outputs per batch, and llama.cpp aborts
            # when that is fewer than one per sequence
            raise InvalidOptionError(
                f"A batch of {self.n_batch} tokens cannot serve {self.parallel} parallel sequences.",
                hint=f"Give --batch of at least {self.parallel}, or fewer --parallel.",
            )
        quantized = type_size(self.kv_type_ggml)[0] > 1
        if quantized and not self.flash_attn:
            raise InvalidOptionError(
                f"A {self.kv_type} KV cache needs flash attention; llama.cpp refuses it without.",
                hint="Use --flash-attn on, or --kv-type f16.",
            )
        if quantized:
            block = type_size(self.kv_type_ggml)[0]
            if shape.head_dim_k % block or shape.head_dim_v % block:
                raise InvalidOptionError(
                    f"This model's head size ({shape.head_dim_k}) does not divide into "
                    f"{self.kv_type} blocks of {block}.",
                    hint="Use --kv-type f16.",
                )
        return self

    @property
    def kv_type_ggml(self) -> str:
        return KV_TYPES[self.kv_type]


@dataclass(frozen=True)
class CParams:
    """The context llama.cpp builds from a RunConfig (llama_context's constructor)."""

    n_ctx: int
    n_ctx_seq: int
    n_seq: int
    n_stream: int
    n_batch: int
    n_ubatch: int
    kv_size_swa: int
    n_outputs_max: int

    @property
    def reserve_tokens(self) -> int:
        return min(self.n_ctx, self.n_ubatch)


def _pad(x: int, n: int) -> int:
    return -(-x // n) * n


def cparams(shape: ModelShape, run: RunConfig) -> CParams:
    n_seq = run.parallel
    embedding = run.embedding or not shape.causal  # kennel serves encoders only as embedders
    # llama.cpp caps the batch by the context as asked for, before padding the context
    n_batch = min(run.ctx * n_seq, run.n_batch) if shape.causal else run.n_batch
    if embedding:
        n_batch = min(n_batch, run.n_ubatch)  # a batch is embedded in one ubatch
    n_ubatch = min(n_batch, run.n_ubatch)
    n_ctx = _pad(run.ctx * n_seq, CTX_PAD)
    if run.kv_unified:
        n_ctx_seq, n_stream = n_ctx, 1
    else:
        n_ctx_seq = _pad(n_ctx // n_seq, CTX_PAD)
        n_ctx, n_stream = n_ctx_seq * n_seq, n_seq
    swa = n_ctx_seq
    if shape.n_swa and not run.swa_full:
        swa = _pad(min(n_ctx_seq, shape.n_swa * (n_seq if run.kv_unified else 1) + n_ubatch), CTX_PAD)
    # llama-server allows one output (the next token's logits) per sequence in a batch, unless
    # speculative drafts need more (kennel runs none), or every token when embedding; the
    # worst-case graph computes that many rows of logits
    n_outputs_max = run.n_batch if embedding else max(1, min(run.n_batch, n_seq))
    return CParams(n_ctx, n_ctx_seq, n_seq, n_stream, n_batch, n_ubatch, swa, n_outputs_max)


def _row_bytes(type_name: str, n: int) -> int:
    block, size = type_size(type_name)
    return -(-n // block) * size


def kv_cache_per_layer(shape: ModelShape, run: RunConfig) -> list[int]:
    """Bytes of KV cache (or recurrent state) each layer holds."""
    cp = cparams(shape, run)
    tk = tv = run.kv_type_ggml
    v_width_max = shape.n_embd_v_gqa_max() if not shape.is_mla else 0
    out: list[int] = []
    if not shape.causal:
        return [0] * shape.n_layer  # encoders (embedding models) keep no KV cache
    for il in range(shape.n_layer):
        if shape.is_recurrent(il):
            out.append(shape.recurrent.state_floats(shape.n_embd) * 4 * max(1, cp.n_seq))
            continue
        if shape.n_head_kv[il] == 0:
            out.append(0)
            continue
        cells = (cp.kv_size_swa if shape.is_swa(il) else cp.n_ctx_seq) * cp.n_stream
        if shape.is_mla:
            out.append(_row_bytes(tk, shape.kv_lora_rank + shape.mla_rope_dim) * cells)
            continue
        k = _row_bytes(tk, shape.n_embd_k_gqa(il)) * cells
        v_width = shape.n_embd_v_gqa(il) if run.flash_attn else v_width_max
        out.append(k + _row_bytes(tv, v_width) * cells)
    return out


def graph_params(shape: ModelShape, run: RunConfig) -> GraphParams:
    """What llama_context::sched_reserve builds its worst-case prompt graph with."""
    cp = cparams(shape, run)
    t = cp.reserve_tokens
    return GraphParams(
        # graph_reserve splits the tokens evenly over the sequences, rounding up
        n_tokens=_pad(t, cp.n_seq),
        n_outputs=min(t, cp.n_outputs_max),
        n_seqs=cp.n_seq,
        kv_unified=run.kv_unified,
        flash_attn=run.flash_attn,
        type_k=run.kv_type_ggml,
        type_v=run.kv_type_ggml,
        kv_size=cp.n_ctx_seq,
        kv_size_swa=cp.kv_size_swa,
    )


def compute_buffer(shape: ModelShape, run: RunConfig, *, alignment: int = 32) -> tuple[int, bool]:
    """The compute buffer of one backend running the whole graph, and whether it is exact."""
    pp = graph_params(shape, run)
    if not shape.has_attention:
        # recurrent-only models: no attention scores; about eight activations per token as wide
        # as the layer's inner state (Mamba: 7.5 x d_inner measured), plus the logits
        width = 8 * max(shape.n_embd, shape.recurrent.d_inner)
        return (shape.n_vocab * pp.n_outputs + width * pp.n_tokens) * 4, False
    proxy = shape
    if shape.arch not in EXACT_GRAPH_ARCHS or shape.recurrent_layers:
        proxy = _llama_proxy(shape)
    # embedding runs also pool the outputs (mean, last token, ...), and encoders attend without
    # a KV cache: neither is modelled
    exact = proxy is shape and not run.embedding and shape.causal
    layers = representative_layers(proxy)
    size = compute_buffer_bytes(layers, pp, alignment=alignment)
    if pp.n_seqs > pp.n_outputs:
        # sched_reserve also reserves the token-generation graph (one token and one output per
        # sequence) in the same buffer; it only outgrows the prompt graph when it has more outputs
        tg = replace(pp, n_tokens=pp.n_seqs, n_outputs=pp.n_seqs)
        size = max(size, compute_buffer_bytes(layers, tg, alignment=alignment))
    return size, exact


def _keep_layers(shape: ModelShape, keep: list[int]) -> ModelShape:
    def pick(t: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(t[i] for i in keep) if t else t

    return replace(
        shape,
        n_layer=len(keep),
        n_head=pick(shape.n_head),
        n_head_kv=pick(shape.n_head_kv),
        n_ff=pick(shape.n_ff),
        swa_layers=pick(shape.swa_layers),
        recurrent_layers=pick(shape.recurrent_layers),
        tensors=(),
    )


def _layer_signature(shape: ModelShape, il: int) -> tuple[object, ...]:
    return (shape.is_swa(il), shape.n_ff[il], shape.n_head[il], shape.n_head_kv[il], shape.is_recurrent(il))


def representative_layers(shape: ModelShape) -> ModelShape:
    """The same model with only enough layers to reach the allocator's peak.

    Every repeating layer leaves the allocator in the state it found it, so the peak of an
    80-layer graph is reached within the first few periods of its layer pattern (sliding/global,
    dense/MoE) or in the last layer, which also gathers the output rows. Replaying a few periods
    plus the last layer gives the same figure in a fraction of the time; irregular layer
    sequences are replayed whole.
    """
    sig = [_layer_signature(shape, il) for il in range(shape.n_layer)]
    for period in range(1, 9):
        for lead in range(0, 9):
            if all(sig[i] == sig[i - period] for i in range(lead + period, len(sig))):
                keep_n = lead + 3 * period + 1
                if keep_n + 1 >= shape.n_layer:
                    return shape
                return _keep_layers(shape, [*range(keep_n), shape.n_layer - 1])
    return shape


def _llama_proxy(shape: ModelShape) -> ModelShape:
    heads_kv = tuple(max(h, 1) for h in shape.n_head_kv)
    heads = tuple(max(h, 1) for h in shape.n_head)
    return replace(shape, arch="llama", n_head=heads, n_head_kv=heads_kv, recurrent_layers=())


@dataclass(frozen=True)
class LayerWeights:
    """Weights split the way llama.cpp places them: input layer, repeating layers, output."""

    input: int  # token embedding: always on the CPU
    layers: tuple[int, ...]
    layer_experts: tuple[int, ...]  # the part of each layer in ffn_*_exps tensors
    output: int  # output norm and matrix (the token embedding again when tied)

    @property
    def total(self) -> int:
        return self.input + sum(self.layers) + self.output_unique

    @property
    def output_unique(self) -> int:
        return self.output - self._tied_copy

    _tied_copy: int = 0


def layer_weights(shape: ModelShape, types: dict[str, int] | None = None) -> LayerWeights:
    types = types or {}
    layers = [0] * shape.n_layer
    experts = [0] * shape.n_layer
    inp = out = tied = 0
    for t in shape.tensors:
        nbytes = tensor_nbytes(t.shape, types.get(t.name, t.ggml_type))
        il = layer_of(t.name)
        if 0 <= il < shape.n_layer:
            layers[il] += nbytes
            if "_exps." in t.name:
                experts[il] += nbytes
        elif t.name == "token_embd.weight":
            inp += nbytes
            if shape.tied_embeddings:
                tied = nbytes
        elif t.name.startswith("output") or t.name.startswith("result"):
            out += nbytes
        else:
            inp += nbytes
    # A tied model's output layer reads the token embedding; offloaded, it needs its own copy.
    return LayerWeights(
        input=inp, layers=tuple(layers), layer_experts=tuple(experts), output=out + tied, _tied_copy=tied
    )


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    kv_cache: int
    compute: int
    output_buffer: int
    runtime_overhead: int
    compute_exact: bool
    layer_kv: tuple[int, ...] = field(default=())
    # the CPU's repacked copies of weights it multiplies with (fit.repack), in RAM on top of the
    # mapped file, for the layers the placement leaves on the CPU
    repack: int = 0

    @property
    def overhead(self) -> int:
        return self.output_buffer + self.runtime_overhead

    @property
    def total(self) -> int:
        return self.weights + self.repack + self.kv_cache + self.compute + self.overhead

    @property
    def llama_buffers(self) -> int:
        """What llama.cpp itself reports: model (CPU_REPACK included), KV, compute and output buffers."""
        return self.weights + self.repack + self.kv_cache + self.compute + self.output_buffer


def output_buffer(shape: ModelShape, run: RunConfig) -> int:
    """llama_context::output_reserve at start: logits for one output per sequence, F32."""
    return shape.n_vocab * 4 * max(1, run.parallel)
