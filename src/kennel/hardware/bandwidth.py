"""System memory bandwidth by a short multi-threaded copy test, cached per machine.

Decode speed on a CPU is bounded by how fast weights stream from RAM, so kennel measures it
rather than guessing from DIMM specs. numpy's copy releases the GIL, so a few threads copying
their own slices load every memory channel. The figure counts read and write traffic (2 bytes
moved per byte copied), as STREAM's Copy does.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kennel.hardware.profile import CpuInfo
from kennel.jsonfile import read_section, write_section

BUFFER_BYTES = 256 * 1024 * 1024
REPEATS = 5


@dataclass(frozen=True)
class BandwidthResult:
    gbs: float
    threads: int
    seconds: float


def measure_bandwidth(
    *, threads: int, buffer_bytes: int = BUFFER_BYTES, repeats: int = REPEATS
) -> BandwidthResult:
    """Best-of-``repeats`` aggregate copy bandwidth in GB/s (10^9 bytes)."""
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
    cache: Path, cpu: CpuInfo, total_ram: int, *, remeasure: bool = False
) -> BandwidthResult:
    """The measured bandwidth for this machine, measuring once and keeping it in ``cache``."""
    key = _machine_key(cpu, total_ram)
    data = read_section(cache, "bandwidth")
    if not isinstance(data, dict):
        data = {}
    if not remeasure and key in data:
        row = data[key]
        return BandwidthResult(gbs=float(row["gbs"]), threads=int(row["threads"]), seconds=0.0)
    result = measure_bandwidth(threads=cpu.threads)
    data[key] = {"gbs": round(result.gbs, 2), "threads": result.threads, "measured_at": time.time()}
    write_section(cache, "bandwidth", data)
    return result
