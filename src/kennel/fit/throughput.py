"""How fast one server answers with N requests decoded together, from `kennel fit`'s speed model.

One function for every command that turns fit's single-request speeds into capacity: `kennel
deploy k8s` sizes replicas with it and `kennel cost` sizes boxes with it, so the two cannot
disagree about what a machine carries. With one request and the context fit quotes its speed at,
it gives fit's own figures (tests/cost checks that).
"""

from __future__ import annotations

from dataclasses import dataclass

from kennel.fit.estimate import SizedOption
from kennel.fit.speed import Calibration, decode, prefill
from kennel.hardware.profile import HardwareProfile

# On a CPU a batch of decode steps is not the arithmetic of one long prompt: llama.cpp's CPU kernels
# run a few rows at a time far below their prefill rate. benchmarks/cost_capacity.py measured 8
# streams at 0.23x (0.5B) and 0.15x (1B) of the prefill rate on a 2-core AVX-512 machine, where
# prefill itself matched the estimate; this is the upper end, so CPU capacity is not overstated
# 2.5-3x as it was with the prefill rate as the only cap.
CPU_DECODE_BATCH_EFFICIENCY = 0.25


@dataclass(frozen=True)
class Throughput:
    """How fast one replica answers with every one of its ``parallel`` slots busy.

    A batched decode step reads the weights once and every sequence's cache, so it is the fit
    speed model's decode time with the batch's whole context in the cache; it produces one token
    per sequence. It cannot beat the arithmetic rate the same model gives prefill (compute bound),
    which caps it on CPUs. A request costs the replica its prefill plus its share of the batch's
    decode."""

    parallel: int
    prompt_tokens: int
    output_tokens: int
    prefill_tok_s: float
    step_per_s: float  # batched decode steps per second (one token for each of ``parallel``)
    calibrated: bool
    compute_cap_tok_s: float = 0.0  # the most a batch decodes by arithmetic; 0: the prefill rate
    single_tok_s: float = 0.0  # one stream's decode: a batch never decodes slower in all

    @property
    def memory_bound_tok_s(self) -> float:
        return self.parallel * self.step_per_s

    @property
    def cap_tok_s(self) -> float:
        return max(self.compute_cap_tok_s or self.prefill_tok_s, self.single_tok_s)

    @property
    def aggregate_tok_s(self) -> float:
        return min(self.memory_bound_tok_s, self.cap_tok_s)

    @property
    def compute_bound(self) -> bool:
        return self.cap_tok_s < self.memory_bound_tok_s

    @property
    def per_request_tok_s(self) -> float:
        return self.aggregate_tok_s / self.parallel

    @property
    def prefill_s(self) -> float:
        return self.prompt_tokens / self.prefill_tok_s

    @property
    def busy_s(self) -> float:
        """Replica time one request costs: prefill alone, decode shared with the batch."""
        return self.prefill_s + self.output_tokens / self.aggregate_tok_s

    @property
    def rps(self) -> float:
        return 1.0 / self.busy_s

    @property
    def response_s(self) -> float:
        """What one client waits with the batch full: its prefill, then its own decode."""
        return self.prefill_s + self.output_tokens / self.per_request_tok_s

    def lines(self) -> list[str]:
        decode_line = (
            f"decode: {self.parallel} x {self.step_per_s:.1f} tok/s = {self.memory_bound_tok_s:.0f} tok/s "
            "by memory traffic"
        )
        if self.compute_bound and self.compute_cap_tok_s:
            decode_line += f", capped by a CPU's arithmetic at {self.cap_tok_s:.0f} tok/s"
        elif self.compute_bound:
            decode_line += f", capped at the arithmetic rate of prefill, {self.prefill_tok_s:.0f} tok/s"
        return [
            f"prefill: {self.prompt_tokens} prompt tokens at {self.prefill_tok_s:.0f} tok/s = "
            f"{self.prefill_s:.2f} s",
            decode_line,
            f"one request costs the replica {self.prefill_s:.2f} s + {self.output_tokens} tokens / "
            f"{self.aggregate_tok_s:.0f} tok/s = {self.busy_s:.2f} s -> {self.rps:.2f} requests/s per "
            "replica",
            f"a client waits {self.response_s:.1f} s for its answer with all {self.parallel} slots busy "
            f"({self.per_request_tok_s:.1f} tok/s each)",
            "speeds: " + ("calibrated by `kennel fit --measure`" if self.calibrated else "uncalibrated"),
        ]


def throughput(
    sized: SizedOption,
    hw: HardwareProfile,
    cal: Calibration,
    parallel: int,
    prompt_tokens: int,
    output_tokens: int,
) -> Throughput:
    """The fit speed model at a full batch: each sequence half way through its answer."""
    one = prompt_tokens + output_tokens // 2
    step = decode(sized.parts, sized.placement, hw, sized.inputs, cal, fill=parallel * one).expected
    single = (
        step
        if parallel == 1
        else decode(sized.parts, sized.placement, hw, sized.inputs, cal, fill=one).expected
    )
    pre = prefill(sized.parts, sized.placement, hw, sized.inputs, cal, prompt=max(prompt_tokens, 1)).expected
    return Throughput(
        parallel=parallel,
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
        prefill_tok_s=pre,
        step_per_s=step,
        calibrated=cal.measured,
        compute_cap_tok_s=pre * CPU_DECODE_BATCH_EFFICIENCY if sized.placement.gpu_layers == 0 else 0.0,
        single_tok_s=single,
    )
