"""How many requests one box answers a second within the latency targets, and at which quantization.

The speeds are `kennel fit`'s, batched by kennel.fit.throughput (the function `kennel deploy k8s`
sizes replicas with): with N requests decoded together, a decode step reads the weights once and
every request's cache (memory-bound, so the step rate falls slowly as N grows), and the tokens a
second can never beat the arithmetic rate prefill runs at (compute-bound). A box serves the most
requests at once that memory allows without pushing layers off the GPU (`kennel serve`'s rule)
and that still meet the targets at that load; its capacity is the request rate it completes so.

A box of several GPUs runs one replica per GPU when the model fits one (llama.cpp splits a model
over GPUs by layers, which adds memory, not speed), else one per group of GPUs it fits in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from gguf import LlamaFileType

from kennel.cost.workload import Targets
from kennel.fit.estimate import GOOD_ENOUGH, RECOMMENDABLE, size_option
from kennel.fit.memory import RunConfig
from kennel.fit.quant import scheme, tensor_types
from kennel.fit.serving import serve_parallel
from kennel.fit.speed import Calibration
from kennel.fit.throughput import Throughput, throughput
from kennel.hardware.profile import HardwareProfile
from kennel.model.shape import ModelShape
from kennel.units import fmt_bytes

# best quality first, and no lower than 4 bits: a cheaper box at 2-3 bits would win on price by
# answering worse, which is not the comparison a team asks for (--quant holds any one fixed)
QUANTS = tuple(q for q in RECOMMENDABLE if q in GOOD_ENOUGH)
MAX_PARALLEL = 64  # requests decoded together per replica; kennel serve's own default is lower


def ttft_p95(tp: Throughput) -> float:
    """Time to the first token of a 95th-percentile request with ``tp.parallel`` requests running:
    once the box serves more than one, such a request finds another prompt being processed ahead
    of it; then its own prompt, then one decode step of the batch."""
    ahead = 1 if tp.parallel > 1 else 0
    return (1 + ahead) * tp.prefill_s + 1 / tp.step_per_s


def stream_tok_s(tp: Throughput) -> float:
    """Tokens a second one request streams at with the box full at its capacity: the batch's
    decode rate, less the share of time the box spends on newcomers' prompts, which continuous
    batching slips in between decode steps (with one slot, newcomers wait for it instead)."""
    if tp.parallel == 1:
        return tp.per_request_tok_s
    return tp.per_request_tok_s * max(0.0, 1.0 - tp.rps * tp.prefill_s)


def meets(tp: Throughput, targets: Targets) -> bool:
    return stream_tok_s(tp) >= targets.min_tok_s and ttft_p95(tp) <= targets.ttft_p95_s


@dataclass(frozen=True)
class Capacity:
    """What one box carries (load-independent: the load only decides how many boxes)."""

    quant: str | None  # None: the model fits at no quantization tried
    replicas: int  # servers in the box (one per GPU or group of GPUs)
    gpus_per_replica: int
    max_parallel: int  # per replica: what memory allows
    parallel: int  # per replica: the most that still meet the targets; 0 when one alone does not
    single: Throughput | None  # one request alone
    best: Throughput | None  # at ``parallel`` (at one request when the targets fail)
    reason: str = ""  # why it fails the targets, when it does
    curve: tuple[Throughput, ...] = ()  # per replica, 1 .. max_parallel requests at once

    @property
    def meets(self) -> bool:
        return self.parallel >= 1 and self.best is not None

    @property
    def rps(self) -> float:
        """Requests a second the box completes within the targets."""
        return self.replicas * self.best.rps if self.meets and self.best is not None else 0.0

    @property
    def sequences(self) -> int:
        return self.replicas * self.parallel


def from_curve(
    curve: Sequence[Throughput],
    targets: Targets,
    *,
    quant: str | None,
    replicas: int = 1,
    gpus_per_replica: int = 0,
) -> Capacity:
    """The capacity a throughput curve (1, 2, ... requests at once) gives under ``targets``: the
    largest N such that N and every smaller batch meet them."""
    if not curve:
        return Capacity(quant, 0, gpus_per_replica, 0, 0, None, None, "nothing to run")
    parallel = 0
    for tp in curve:
        if not meets(tp, targets):
            break
        parallel = tp.parallel
    single = curve[0]
    best = curve[parallel - 1] if parallel else single
    reason = ""
    if not parallel:
        slow = []
        if single.per_request_tok_s < targets.min_tok_s:
            slow.append(
                f"one request streams at {single.per_request_tok_s:.1f} tok/s < {targets.min_tok_s:g}"
            )
        if ttft_p95(single) > targets.ttft_p95_s:
            slow.append(f"its first token takes {ttft_p95(single):.1f} s > {targets.ttft_p95_s:g} s")
        reason = "; ".join(slow)
    return Capacity(
        quant, replicas, gpus_per_replica, len(curve), parallel, single, best, reason, tuple(curve)
    )


def _with_gpus(hw: HardwareProfile, k: int) -> HardwareProfile:
    return replace(hw, gpus=hw.gpus[:k]) if k and len(hw.gpus) > k else hw


def _choices(shape: ModelShape, quant: str | None) -> list[tuple[str, dict[str, int] | None]]:
    if shape.source_kind == "gguf":  # a file is what it is
        return [(shape.file_type or "file", None)]
    names = (scheme(quant).name,) if quant else QUANTS
    return [(q, tensor_types(shape, LlamaFileType(scheme(q).ftype or 0))) for q in names]


def size_box(
    shape: ModelShape,
    hw: HardwareProfile,
    run: RunConfig,
    *,
    prompt_tokens: int,
    output_tokens: int,
    targets: Targets,
    calibration: Calibration | None = None,
    quant: str | None = None,
    max_parallel: int = MAX_PARALLEL,
) -> Capacity:
    """The best quantization (4 bits or more unless ``quant`` says) that fits fully in the box's fast
    memory and meets the targets for one request, at the replicas that quantization allows; if none
    meets them, the best that fits, marked as failing."""
    cal = calibration or Calibration()
    base = replace(run, parallel=1).validated(shape)
    full = "gpu" if hw.gpus else "cpu"
    discrete = bool(hw.gpus) and not hw.unified_memory
    widths = [k for k in (1, 2, 4, 8, 16, 32, 64) if k <= len(hw.gpus) and len(hw.gpus) % k == 0]
    fallback: Capacity | None = None
    smallest: tuple[str, int] | None = None
    for name, types in _choices(shape, quant):
        width = 0
        for k in widths if discrete else [len(hw.gpus)]:
            sized = size_option(shape, _with_gpus(hw, k), base, types)
            if sized.placement.fits == full:
                width = k
                break
        else:
            need = sized.memory.total
            if smallest is None or need < smallest[1]:
                smallest = (name, need)
            continue
        replica_hw = _with_gpus(hw, width)
        most = serve_parallel(shape, replica_hw, base, types, cap=max_parallel)
        curve = [
            throughput(sized, replica_hw, cal, n, prompt_tokens, output_tokens) for n in range(1, most + 1)
        ]
        replicas = len(hw.gpus) // width if discrete and width else 1
        cap = from_curve(curve, targets, quant=name, replicas=replicas, gpus_per_replica=width)
        if cap.meets:
            return cap
        fallback = fallback or cap
    if fallback is not None:
        return fallback
    what = f"{smallest[0]} needs {fmt_bytes(smallest[1])}" if smallest else "no quantization was sized"
    return Capacity(None, 0, 0, 0, 0, None, None, f"does not fit: {what}")
