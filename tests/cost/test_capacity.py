"""Capacity of one box: by hand from a throughput curve, and from `kennel fit`'s speed model."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kennel.catalog.resolve import resolve
from kennel.cost.capacity import from_curve, size_box, stream_tok_s, ttft_p95
from kennel.cost.workload import Targets
from kennel.fit.estimate import default_run, estimate
from kennel.fit.speed import DECODE_CONTEXT, PREFILL_TOKENS
from kennel.fit.throughput import CPU_DECODE_BATCH_EFFICIENCY, Throughput
from kennel.hardware.whatif import what_if


def tp(n: int, step: float, prefill: float = 1000.0, prompt: int = 500, output: int = 200) -> Throughput:
    return Throughput(
        parallel=n,
        prompt_tokens=prompt,
        output_tokens=output,
        prefill_tok_s=prefill,
        step_per_s=step,
        calibrated=False,
    )


def test_latency_at_a_batch_by_hand() -> None:
    one = tp(1, 25.0)
    # alone: its prompt (0.5 s) and one decode step (0.04 s); it streams at the step rate
    assert ttft_p95(one) == pytest.approx(0.5 + 0.04)
    assert stream_tok_s(one) == pytest.approx(25.0)
    four = tp(4, 20.0)
    # with others running, one prompt is ahead of it: 2 x 0.5 s + 0.05 s
    assert ttft_p95(four) == pytest.approx(1.05)
    # 4 x 20 = 80 tok/s; a request costs the box 0.5 + 200/80 = 3 s -> 1/3 request/s; the box spends
    # 1/3 x 0.5 = 1/6 of its time on newcomers' prompts, so each request streams at 20 x 5/6
    assert four.rps == pytest.approx(1 / 3)
    assert stream_tok_s(four) == pytest.approx(20 * 5 / 6)


def test_capacity_is_the_largest_batch_within_the_targets() -> None:
    curve = [tp(1, 30.0), tp(2, 28.0), tp(3, 26.0), tp(4, 20.0), tp(5, 19.0)]
    targets = Targets(ttft_p95_s=2.0, min_tok_s=18.0)
    cap = from_curve(curve, targets, quant="Q4_K_M", replicas=2, gpus_per_replica=1)
    # 3 at once: 78 tok/s, 0.5 + 200/78 = 3.064 s a request, streams at 26 x (1 - 0.5/3.064) = 21.8
    # 4 at once: 80 tok/s, 3 s a request, streams at 20 x 5/6 = 16.7 < 18: the box stops at 3
    assert cap.meets and cap.parallel == 3 and cap.max_parallel == 5
    assert cap.rps == pytest.approx(2 / (0.5 + 200 / 78))  # two replicas
    assert cap.sequences == 6


def test_a_box_too_slow_for_one_request_says_why() -> None:
    cap = from_curve([tp(1, 9.0, prefill=200.0)], Targets(2.0, 15.0), quant="Q4_K_M")
    assert not cap.meets and cap.rps == 0.0
    assert "9.0 tok/s < 15" in cap.reason and "2.6 s > 2 s" in cap.reason  # 500/200 + 1/9


def test_one_request_agrees_with_kennel_fit() -> None:
    """The capacity model's single request is fit's estimate, for a GPU box and a CPU box."""
    shape = resolve("qwen2.5-7b").shape
    run = default_run(shape)
    for hw in (what_if(gpu="RTX 4090"), what_if(cpu_cores=16, ram_bandwidth_gbs=200.0)):
        fit = estimate(shape, hw, run, include_engines=False, only=("Q4_K_M",), with_max_context=False)
        option = next(o for o in fit.options if o.quant == "Q4_K_M")
        # fit quotes decode with DECODE_CONTEXT tokens in the cache and prefill of PREFILL_TOKENS;
        # the throughput model's one request holds its prompt and half its answer
        cap = size_box(
            shape,
            hw,
            run,
            prompt_tokens=PREFILL_TOKENS,
            output_tokens=2 * (DECODE_CONTEXT - PREFILL_TOKENS),
            targets=Targets(1e9, 1e-9),
            quant="Q4_K_M",
        )
        assert cap.single is not None
        assert cap.single.step_per_s == pytest.approx(option.decode_tok_s.expected, rel=1e-9)
        assert cap.single.prefill_tok_s == pytest.approx(option.prefill_tok_s.expected, rel=1e-9)


def test_quantization_replicas_and_fit() -> None:
    shape = resolve("qwen2.5-7b").shape
    run = default_run(shape)
    sizes = {"prompt_tokens": 800, "output_tokens": 300, "targets": Targets(2.0, 15.0)}
    # a 7B at Q8_0 fits one 24 GB card, so a 4-GPU box runs four replicas of it
    four = size_box(shape, what_if(gpu="RTX 4090", gpu_count=4), run, **sizes)  # type: ignore[arg-type]
    one = size_box(shape, what_if(gpu="RTX 4090"), run, **sizes)  # type: ignore[arg-type]
    assert four.quant == one.quant == "Q8_0"
    assert (four.replicas, four.gpus_per_replica, one.replicas) == (4, 1, 1)
    assert four.rps == pytest.approx(4 * one.rps)
    # a 70B fits one 24 GB card at no 4-bit quantization: two replicas of two cards
    big = resolve("llama-3.1-70b").shape
    cap = size_box(big, what_if(gpu="RTX 4090", gpu_count=4), default_run(big), **sizes)  # type: ignore[arg-type]
    assert cap.quant is not None and cap.gpus_per_replica >= 2 and cap.replicas * cap.gpus_per_replica <= 4
    # nothing of 4 bits or more fits an 8 GB card with a 70B
    none = size_box(big, what_if(gpu="RTX 4060"), default_run(big), **sizes)  # type: ignore[arg-type]
    assert none.quant is None and not none.meets and "does not fit" in none.reason
    # a fixed --quant is held even where a better one would fit
    held = size_box(shape, what_if(gpu="RTX 4090"), run, quant="Q4_K_M", **sizes)  # type: ignore[arg-type]
    assert held.quant == "Q4_K_M"


def test_the_throughput_curve_grows_with_the_batch_until_compute_bound() -> None:
    shape = resolve("qwen2.5-7b").shape
    cap = size_box(
        shape,
        what_if(cpu_cores=8, ram_bandwidth_gbs=100.0),
        replace(default_run(shape), ctx=4096),
        prompt_tokens=200,
        output_tokens=100,
        targets=Targets(1e9, 1e-9),
        quant="Q4_K_M",
        max_parallel=16,
    )
    aggregate = [t.aggregate_tok_s for t in cap.curve]
    assert aggregate == sorted(aggregate)  # more requests at once never lower the total
    assert cap.curve[-1].compute_bound  # a CPU reaches its arithmetic limit within 16
    last = cap.curve[-1]  # there a CPU's batch decodes at a quarter of its prefill rate
    assert aggregate[-1] == pytest.approx(
        max(last.prefill_tok_s * CPU_DECODE_BATCH_EFFICIENCY, last.single_tok_s)
    )
