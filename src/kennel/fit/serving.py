"""How `kennel serve` runs a model, decided in one place so `kennel fit` and `kennel serve`
agree: how many requests it decodes together, and on how many CPU threads."""

from __future__ import annotations

from dataclasses import replace

from kennel.fit.estimate import size_option
from kennel.fit.memory import RunConfig
from kennel.hardware.profile import HardwareProfile
from kennel.model.shape import ModelShape

MAX_PARALLEL = 8  # beyond this a small team gains little and every request's cache shrinks the rest


def default_threads(hw: HardwareProfile) -> int:
    """Every physical core, for decoding and prompt processing alike, as llama.cpp's own tools do
    (llama-cpp-python's half-the-cores default left a server half idle)."""
    return max(hw.cpu.cores, 1)


def with_threads(hw: HardwareProfile, threads: int | None) -> HardwareProfile:
    """``hw`` as the speed model sees it when llama.cpp runs on ``threads`` of its cores."""
    if not threads or threads >= hw.cpu.cores:
        return hw
    return replace(hw, cpu=replace(hw.cpu, cores=threads))


def serve_parallel(
    shape: ModelShape,
    hw: HardwareProfile,
    run: RunConfig,
    types: dict[str, int] | None = None,
    *,
    cap: int = MAX_PARALLEL,
) -> int:
    """The most requests (up to ``cap``) decoded together whose one shared cache of
    ``parallel x ctx`` tokens still gives the placement a single request gets: the same class
    (GPU, partial, CPU) and no fewer layers on the GPU. More sequences than that would push
    layers off the GPU, which costs every request more than waiting in the queue does."""

    def placement(n: int) -> tuple[str, int]:
        p = size_option(shape, hw, replace(run, parallel=n), types).placement
        return p.fits, p.gpu_layers

    fits, layers = placement(1)
    if fits == "no":
        return 1
    lo, hi = 1, cap
    while lo < hi:  # the placement only gets worse as the cache grows
        mid = (lo + hi + 1) // 2
        f, g = placement(mid)
        if f == fits and g >= layers:
            lo = mid
        else:
            hi = mid - 1
    return lo
