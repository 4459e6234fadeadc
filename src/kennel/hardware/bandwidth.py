"""System memory bandwidth by a short multi-threaded copy test, cached per machine.

Decode speed on a CPU is bounded by how fast weights stream from RAM, so kennel measures it
rather than guessing from DIMM specs. numpy's copy releases the GIL, so a few threads copying
their own slices load every memory channel. The figure counts read and write traffic (2 bytes
moved per byte copied), as STREAM's Copy does.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kennel.hardware.profile import CpuInfo
from kennel.jsonfile import read_section, write_section

BUFFER_BYTES = 256 * 1024 * 1024
REPEATS = 5
PASSES = 3  # a shared machine's bandwidth moves by a third from one minute to the next: keep the best
STALE_AFTER = 30 * 86400.0  # seconds; RAM and BIOS settings change rarely
BUSY = 0.5  # load average per core above which a measurement is taken again when the machine is calmer


@dataclass(frozen=True)
class BandwidthResult:
    gbs: float
    threads: int
    seconds: float
    measured_at: float = 0.0  # time.time()
    load: float = 0.0  # 1-minute load average per core when measured


def measure_bandwidth(
    *, threads: int, buffer_bytes: int = BUFFER_BYTES, repeats: int = REPEATS, passes: int = PASSES
) -> BandwidthResult:
    """The best of ``passes`` x ``repeats`` aggregate copies, in GB/s (10^9 bytes), on every
    hardware thread, as llama.cpp reads weights on all cores."""
    load = _load_per_core()
    results = []
    for i in range(passes):
        if i:
            time.sleep(0.2)  # a burst from another tenant seldom lasts through all passes
        results.append(_one_pass(threads=threads, buffer_bytes=buffer_bytes, repeats=repeats))
    best = max(results, key=lambda r: r.gbs)
    return BandwidthResult(best.gbs, best.threads, sum(r.seconds for r in results), time.time(), load)


def _load_per_core() -> float:
    try:
        return os.getloadavg()[0] / max(os.cpu_count() or 1, 1)
    except OSError:
        return 0.0


def _one_pass(*, threads: int, buffer_bytes: int, repeats: int) -> BandwidthResult:
    threads = max(1, min(threads, 16))
    per = max(buffer_bytes // threads // 8, 1 << 16)
    src = [np.ones(per, dtype=np.float64) for _ in range(threads)]
    dst = [np.empty_like(s) for s in src]
    for s, d in zip(src, dst, strict=True):  # fault the pages in before timing
        np.copyto(d, s)
    best = float("inf")
    start_all = time.perf_counter()
    for _ in range(repeats):
        barrier = threading.Barrier(threads + 1)

        def work(i: int, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            np.copyto(dst[i], src[i])

        pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for t in pool:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in pool:
            t.join()
        best = min(best, time.perf_counter() - t0)
    moved = 2 * per * 8 * threads
    return BandwidthResult(gbs=moved / best / 1e9, threads=threads, seconds=time.perf_counter() - start_all)


def _machine_key(cpu: CpuInfo, total_ram: int) -> str:
    return f"{cpu.model}|{cpu.threads}|{total_ram // 2**30}"


def cached_bandwidth(
    cache: Path,
    cpu: CpuInfo,
    total_ram: int,
    *,
    remeasure: bool = False,
    measure: Callable[..., BandwidthResult] = measure_bandwidth,
    now: Callable[[], float] = time.time,
) -> BandwidthResult:
    """The measured bandwidth for this machine, kept in ``cache`` with when and under what load
    it was measured. Measured again when asked, when stale, or when the kept figure was taken on
    a busy machine and this one is calmer; of two measurements on a calm machine the higher
    stays (a copy test only ever under-reads the hardware)."""
    key = _machine_key(cpu, total_ram)
    data = read_section(cache, "bandwidth")
    if not isinstance(data, dict):
        data = {}
    row = data.get(key)
    kept = None
    if isinstance(row, dict) and "gbs" in row:
        kept = BandwidthResult(
            float(row["gbs"]),
            int(row.get("threads", cpu.threads)),
            0.0,
            float(row.get("measured_at", 0.0)),
            float(row.get("load", 0.0)),
        )
    stale = kept is None or now() - kept.measured_at > STALE_AFTER
    busy_then = kept is not None and kept.load > BUSY and _load_per_core() < kept.load
    if not (remeasure or stale or busy_then):
        return kept  # type: ignore[return-value]
    result = measure(threads=cpu.threads)
    if kept is not None and not stale and not remeasure and kept.gbs > result.gbs:
        result = BandwidthResult(kept.gbs, kept.threads, result.seconds, result.measured_at, result.load)
    data[key] = {
        "gbs": round(result.gbs, 2),
        "threads": result.threads,
        "measured_at": result.measured_at,
        "load": round(result.load, 2),
    }
    write_section(cache, "bandwidth", data)
    return result
