"""GPU probes per vendor. Each returns what it finds and stays quiet when its library or tool is
missing: a machine without NVIDIA drivers is normal, not an error."""

from __future__ import annotations

import contextlib
import importlib
import json
import platform
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kennel.hardware.cpu import sysctl_value
from kennel.hardware.profile import GpuInfo

_TIMEOUT = 10


def _run(args: list[str]) -> str | None:
    if not shutil.which(args[0]):
        return None
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


# -- NVIDIA -------------------------------------------------------------------------------


def probe_nvidia(nvml: Any = None) -> list[GpuInfo]:
    """NVIDIA GPUs through NVML. ``nvml`` is the pynvml module (injected by tests)."""
    if nvml is None:
        try:
            nvml = importlib.import_module("pynvml")  # nvidia-ml-py; absent on some platforms
        except ImportError:
            return []
    try:
        nvml.nvmlInit()
    except Exception:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...: no usable NVIDIA GPU
        return []
    try:
        return [_nvidia_device(nvml, i) for i in range(nvml.nvmlDeviceGetCount())]
    except Exception:
        return []
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _nvidia_device(nvml: Any, i: int) -> GpuInfo:
    h = nvml.nvmlDeviceGetHandleByIndex(i)
    mem = nvml.nvmlDeviceGetMemoryInfo(h)
    cc = None
    with contextlib.suppress(Exception):
        major, minor = nvml.nvmlDeviceGetCudaComputeCapability(h)
        cc = f"{major}.{minor}"
    cuda = driver = None
    with contextlib.suppress(Exception):
        v = int(nvml.nvmlSystemGetCudaDriverVersion())
        cuda = f"{v // 1000}.{v % 1000 // 10}"
    with contextlib.suppress(Exception):
        driver = _text(nvml.nvmlSystemGetDriverVersion())
    bandwidth = None
    try:
        bus = nvml.nvmlDeviceGetMemoryBusWidth(h)
        clock = nvml.nvmlDeviceGetMaxClockInfo(h, nvml.NVML_CLOCK_MEM)
        bandwidth = bus / 8 * clock * 2 / 1000  # double data rate; GB/s
    except Exception:
        pass
    name = _text(nvml.nvmlDeviceGetName(h))
    unified = "orin" in name.lower() or "tegra" in name.lower() or "gb10" in name.lower()
    return GpuInfo(
        index=i,
        vendor="nvidia",
        name=name,
        backend="cuda",
        total_memory=int(mem.total),
        free_memory=int(mem.free),
        bandwidth_gbs=bandwidth,
        driver=driver,
        runtime_version=cuda,
        compute_capability=cc,
        unified=unified,
        spec_source="NVML (bus width x max memory clock)" if bandwidth else None,
    )


# -- AMD ----------------------------------------------------------------------------------


def probe_amd(sysfs: Path = Path("/sys/class/drm")) -> list[GpuInfo]:
    """AMD GPUs: rocm-smi's JSON when installed, else the amdgpu driver's sysfs counters."""
    out = _run(["rocm-smi", "--showproductname", "--showmeminfo", "vram", "--showdriverversion", "--json"])
    if out:
        try:
            return _parse_rocm_smi(json.loads(out))
        except (ValueError, KeyError, TypeError):
            pass
    return _amd_sysfs(sysfs)


def _parse_rocm_smi(doc: dict[str, Any]) -> list[GpuInfo]:
    driver = None
    gpus: list[GpuInfo] = []
    for key, card in doc.items():
        if key == "system":
            driver = card.get("Driver version")
            continue
        if not key.startswith("card"):
            continue
        total = int(card.get("VRAM Total Memory (B)", 0))
        used = int(card.get("VRAM Total Used Memory (B)", 0))
        name = card.get("Card Series") or card.get("Card SKU") or card.get("Card model") or "AMD GPU"
        gpus.append(
            GpuInfo(
                index=len(gpus),
                vendor="amd",
                name=str(name),
                backend="rocm",
                total_memory=total,
                free_memory=max(total - used, 0),
                driver=driver,
            )
        )
    return gpus


def _amd_sysfs(root: Path) -> list[GpuInfo]:
    gpus: list[GpuInfo] = []
    for card in sorted(root.glob("card[0-9]*")):
        dev = card / "device"
        try:
            if (dev / "vendor").read_text().strip() != "0x1002":
                continue
            total = int((dev / "mem_info_vram_total").read_text())
            used = int((dev / "mem_info_vram_used").read_text())
        except (OSError, ValueError):
            continue
        name = "AMD GPU"
        with contextlib.suppress(OSError):
            name = (dev / "product_name").read_text().strip() or name
        gpus.append(
            GpuInfo(
                index=len(gpus),
                vendor="amd",
                name=name,
                backend="rocm",
                total_memory=total,
                free_memory=max(total - used, 0),
            )
        )
    return gpus


# -- Apple Silicon ------------------------------------------------------------------------


def metal_working_set(ram: int, wired_limit_mb: int | None) -> int:
    """Metal's recommendedMaxWorkingSetSize: the iogpu.wired_limit_mb override if set, else about
    two thirds of RAM up to 36 GiB machines and three quarters above (as llama.cpp logs show)."""
    if wired_limit_mb and wired_limit_mb > 0:
        return wired_limit_mb * 1024 * 1024
    return int(ram * (0.75 if ram > 36 * 2**30 else 2 / 3))


def probe_apple(
    sysctl: Callable[[str], str | None] | None = None, system: str | None = None
) -> list[GpuInfo]:
    system = system or platform.system()
    if system != "Darwin":
        return []
    sysctl = sysctl or sysctl_value
    brand = sysctl("machdep.cpu.brand_string") or ""
    if not brand.startswith("Apple"):
        return []
    ram = int(sysctl("hw.memsize") or 0)
    wired = sysctl("iogpu.wired_limit_mb")
    limit = metal_working_set(ram, int(wired) if wired and wired.isdigit() else None)
    return [
        GpuInfo(
            index=0,
            vendor="apple",
            name=brand.replace("Apple ", "Apple ").strip(),
            backend="metal",
            total_memory=ram,
            free_memory=ram,
            unified=True,
            working_set_limit=limit,
            runtime_version=sysctl("kern.osproductversion"),
        )
    ]


# -- Intel --------------------------------------------------------------------------------


def probe_intel(sysfs: Path = Path("/sys/class/drm")) -> list[GpuInfo]:
    """Intel discrete GPUs: xpu-smi when installed, else the i915/xe driver's sysfs."""
    out = _run(["xpu-smi", "discovery", "-j"])
    if out:
        try:
            doc = json.loads(out)
            return [
                GpuInfo(
                    index=i,
                    vendor="intel",
                    name=str(d.get("device_name", "Intel GPU")),
                    backend="sycl",
                    total_memory=int(d.get("memory_physical_size_byte", 0)),
                    free_memory=int(d.get("memory_free_size_byte", d.get("memory_physical_size_byte", 0))),
                )
                for i, d in enumerate(doc.get("device_list", []))
            ]
        except (ValueError, TypeError, AttributeError):
            pass
    gpus: list[GpuInfo] = []
    for card in sorted(sysfs.glob("card[0-9]*")):
        dev = card / "device"
        try:
            if (dev / "vendor").read_text().strip() != "0x8086":
                continue
            total = (
                int((dev / "tile0" / "gt0" / "lmem_total_bytes").read_text())
                if (dev / "tile0").exists()
                else 0
            )
        except (OSError, ValueError):
            continue
        if total:  # integrated GPUs have no local memory; llama.cpp would share RAM through SYCL/Vulkan
            gpus.append(
                GpuInfo(
                    index=len(gpus),
                    vendor="intel",
                    name="Intel GPU",
                    backend="sycl",
                    total_memory=total,
                    free_memory=total,
                )
            )
    return gpus
