"""A quality proxy for model x quantization, in "dense-equivalent billions of parameters".

Two published effects, both from llama.cpp's tools/perplexity/README.md:

* Quantization loss: perplexity increase over FP16 for Llama-3-8B on wikitext-2 (the "LLaMA 3 8b
  Scoreboard"; K-quants and legacy quants without an importance matrix, i-quants with one, as
  they are published). Larger models lose less: Llama-2-70B loses ~0.8x what Llama-2-7B does at
  Q4_K_M and Q2_K, i.e. the loss scales about as (params/8B)^-0.1.
* Size: Llama 2's FP16 perplexity falls from 5.23 (7B) to 3.43 (70B), about 12% per doubling of
  parameters.

So a quantization costing x% perplexity is worth ln(1+x)/ln(1/0.88) doublings of parameters,
and a 70B model at Q3_K_M (~45B-equivalent) outranks a 32B at Q8_0, while Q2_K of an 8B falls
below a 1B at full precision. MoE models count as sqrt(total x active) dense parameters, a
common rule of thumb. The proxy ignores differences in training between families of the same
size; it ranks sizes and quantizations, not vendors.
"""

from __future__ import annotations

import math

# perplexity increase over FP16, percent, Llama-3-8B (llama.cpp tools/perplexity/README.md)
PPL_LOSS_8B: dict[str, float] = {
    "F16": 0.024,
    "Q8_0": 0.043,
    "Q6_K": 0.349,
    "Q5_K_M": 0.914,
    "Q5_K_S": 1.684,
    "Q4_K_M": 2.816,
    "IQ4_XS": 3.660,
    "Q4_K_S": 4.315,
    "Q4_0": 7.518,
    "Q3_K_L": 8.926,
    "Q3_K_M": 10.541,
    "IQ3_M": 10.699,
    "IQ3_XXS": 19.686,
    "Q3_K_S": 26.191,
    "IQ2_M": 38.019,
    "Q2_K": 56.485,
    "IQ2_XXS": 126.13,
}
SIZE_EXPONENT = -0.1  # loss scales as (params / 8B) ** -0.1
PPL_PER_DOUBLING = 0.88  # FP16 perplexity ratio per doubling of parameters (Llama 2 7B -> 70B)


def dense_equivalent_b(total_b: float, active_b: float | None) -> float:
    """Parameters (billions) a dense model would need for the same quality, before quantizing."""
    if active_b and active_b < total_b:
        return math.sqrt(total_b * active_b)
    return total_b


def quant_loss_pct(quant: str, params_b: float) -> float:
    """Perplexity increase (percent) of ``quant`` for a model of ``params_b`` billion parameters."""
    base = PPL_LOSS_8B.get(quant.upper())
    if base is None:
        return 0.0 if quant.upper() in ("BF16", "F32") else PPL_LOSS_8B["Q4_K_M"]
    return base * float((max(params_b, 0.1) / 8.0) ** SIZE_EXPONENT)


def quality_b(total_b: float, active_b: float | None, quant: str) -> float:
    """Dense-equivalent billions of parameters after quantization: the ranking key."""
    dense = dense_equivalent_b(total_b, active_b)
    loss = quant_loss_pct(quant, dense) / 100.0
    doublings_lost = math.log1p(loss) / math.log(1 / PPL_PER_DOUBLING)
    return dense / 2**doublings_lost
