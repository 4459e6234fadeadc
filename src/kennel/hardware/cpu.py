"""CPU and system memory, from /proc, sysctl and psutil; container limits respected."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import psutil

from kennel.hardware.profile import CpuInfo, MemoryInfo

# SIMD features llama.cpp's CPU backend uses, as /proc/cpuinfo spells them
SIMD_FLAGS = (
    "sse3",
    "ssse3",
    "sse4_1",
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_int8",
    "amx_bf16",
    "neon",
    "asimd",
    "asimddp",
    "sve",
    "sve2",
    "i8mm",
    "bf16",
    "dotprod",
    "fphp",
)
# macOS hw.optional keys for the ARM features llama.cpp checks
_MAC_FEATURES = {
    "FEAT_DotProd": "dotprod",
    "FEAT_I8MM": "i8mm",
    "FEAT_BF16": "bf16",
    "AdvSIMD": "neon",
    "FEAT_FP16": "fphp",
}


def sysctl_value(key: str) -> str | None:
    try:
        out = subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def _proc_cpuinfo() -> dict[str, str]:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return {}
    info: dict[str, str] = {}
    for line in text.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            info.setdefault(k.strip(), v.strip())
    return info


def usable_threads() -> int:
    """CPUs this process may run on (affinity and cgroup quota), not just what the box has."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return n


def probe_cpu() -> CpuInfo:
    info = _proc_cpuinfo()
    arch = platform.machine().lower()
    model = info.get("model name") or info.get("Hardware") or info.get("Model") or ""
    raw_flags = set((info.get("flags") or info.get("Features") or "").split())
    if platform.system() == "Darwin":
        model = sysctl_value("machdep.cpu.brand_string") or model
        for key, flag in _MAC_FEATURES.items():
            if sysctl_value(f"hw.optional.arm.{key}") == "1" or sysctl_value(f"hw.optional.{key}") == "1":
                raw_flags.add(flag)
        if arch == "arm64":
            raw_flags.add("neon")
    if "pni" in raw_flags:
        raw_flags.add("sse3")
    if "asimd" in raw_flags:
        raw_flags.add("neon")
    if "asimddp" in raw_flags:
        raw_flags.add("dotprod")
    flags = tuple(f for f in SIMD_FLAGS if f in raw_flags)
    threads = usable_threads()
    cores = psutil.cpu_count(logical=False) or threads
    freq = None
    try:
        f = psutil.cpu_freq()
        freq = float(f.max or f.current) if f else None
    except (OSError, NotImplementedError, AttributeError):
        freq = None
    return CpuInfo(
        model=model or platform.processor() or arch,
        arch=arch,
        cores=min(cores, threads),
        threads=threads,
        flags=flags,
        freq_mhz=freq or None,
    )


def _cgroup_memory_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = Path(path).read_text().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < 1 << 60:
            return int(raw)
    return None


def probe_memory() -> MemoryInfo:
    vm = psutil.virtual_memory()
    total, available = int(vm.total), int(vm.available)
    limit = _cgroup_memory_limit()
    if limit is not None and limit < total:
        total, available = limit, min(available, limit)
    return MemoryInfo(total=total, available=available)
