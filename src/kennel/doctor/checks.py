"""`kennel doctor`: each check says ok, warn or fail, and how to fix what is wrong.

Checks are pure functions of a DoctorContext, which holds everything probed from the machine;
tests build contexts by hand (a fake GPU, a taken port) instead of needing that hardware.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import psutil

from kennel.hardware.profile import HardwareProfile
from kennel.settings import KennelHome
from kennel.units import GiB, fmt_bytes

Status = Literal["ok", "warn", "fail"]
DEFAULT_PORT = 8484
ENGINE = "xllamacpp"  # the package that carries llama.cpp


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class DoctorContext:
    hw: HardwareProfile
    home: KennelHome
    env: dict[str, str]
    port: int = DEFAULT_PORT
    disk_free: int | None = None
    nvidia_present: bool = False  # a device node or /proc entry exists, whether or not NVML works
    nvidia_smi: bool = False
    cuda_runtime: str | None = None  # CUDA runtime the llama.cpp build links, e.g. "12.4"
    smallest_model_bytes: int = int(0.4 * GiB)
    smallest_model_name: str = "qwen2.5-0.5b"
    port_free: Callable[[int], bool] | None = None
    extra: dict[str, str] = field(default_factory=dict)


def _reinstall(backend: str) -> str:
    return f"bash scripts/install.sh --gpu {backend}   (rebuilds llama.cpp for {backend}, about 10 minutes)"


def check_llama_installed(c: DoctorContext) -> Check:
    lb = c.hw.llama
    if lb is None or not lb.installed:
        return Check(
            "llama.cpp",
            "fail",
            f"{ENGINE} (llama.cpp) is not installed; kennel cannot run models.",
            "bash scripts/install.sh",
        )
    return Check("llama.cpp", "ok", f"{ENGINE} {lb.version}, devices: {', '.join(lb.backends) or 'CPU'}")


def check_gpu_offload(c: DoctorContext) -> Check:
    lb = c.hw.llama
    if not c.hw.gpus:
        if c.nvidia_present:
            return Check(
                "GPU offload",
                "warn",
                "An NVIDIA device is present but kennel could not query it, so models will run on the CPU.",
                "Install the NVIDIA driver and nvidia-ml-py, then run `kennel doctor` again.",
            )
        return Check("GPU offload", "ok", "No GPU found; models run on the CPU.")
    backend = c.hw.gpus[0].backend
    if lb is not None and lb.installed and not lb.gpu_offload:
        return Check(
            "GPU offload",
            "fail",
            f"{c.hw.gpus[0].name} is present but this llama.cpp build cannot use it (CPU-only build).",
            _reinstall(backend),
        )
    return Check("GPU offload", "ok", f"llama.cpp can offload to {c.hw.gpus[0].name} ({backend}).")


def check_visible_devices(c: DoctorContext) -> Check:
    raw = c.env.get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return Check("CUDA_VISIBLE_DEVICES", "ok", "not set: all GPUs visible.")
    nvidia = [g for g in c.hw.gpus if g.vendor == "nvidia"]
    if raw.strip() in ("", "-1", "none", "NoDevFiles"):
        status: Status = "fail" if nvidia or c.nvidia_present else "warn"
        return Check(
            "CUDA_VISIBLE_DEVICES",
            status,
            f"set to {raw!r}: CUDA sees no GPU at all.",
            "unset CUDA_VISIBLE_DEVICES (or list the GPUs to use, e.g. CUDA_VISIBLE_DEVICES=0,1)",
        )
    ids = [x.strip() for x in raw.split(",") if x.strip()]
    numeric = [int(x) for x in ids if x.isdigit()]
    if nvidia and numeric and max(numeric) >= len(nvidia):
        return Check(
            "CUDA_VISIBLE_DEVICES",
            "fail",
            f"lists GPU {max(numeric)} but only {len(nvidia)} exist.",
            f"set CUDA_VISIBLE_DEVICES to indices below {len(nvidia)}, or unset it",
        )
    if nvidia and len(ids) < len(nvidia):
        return Check(
            "CUDA_VISIBLE_DEVICES",
            "warn",
            f"{raw!r} hides {len(nvidia) - len(ids)} of {len(nvidia)} GPUs from llama.cpp.",
            "unset CUDA_VISIBLE_DEVICES to use every GPU",
        )
    return Check("CUDA_VISIBLE_DEVICES", "ok", f"{raw!r}")


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:2])


def check_driver(c: DoctorContext) -> Check:
    nvidia = [g for g in c.hw.gpus if g.vendor == "nvidia"]
    if not nvidia:
        return Check("NVIDIA driver", "ok", "no NVIDIA GPU.")
    driver_cuda = nvidia[0].runtime_version
    if c.cuda_runtime and driver_cuda and _version_tuple(driver_cuda) < _version_tuple(c.cuda_runtime):
        return Check(
            "NVIDIA driver",
            "fail",
            f"driver {nvidia[0].driver} supports CUDA {driver_cuda}, "
            f"but llama.cpp was built with CUDA {c.cuda_runtime}.",
            f"update the NVIDIA driver to one supporting CUDA {c.cuda_runtime}, or rebuild llama.cpp with "
            f"the CUDA toolkit {driver_cuda} (bash scripts/install.sh --gpu cuda)",
        )
    return Check(
        "NVIDIA driver",
        "ok",
        f"driver {nvidia[0].driver or '?'} (CUDA {driver_cuda or '?'})"
        + (f", build uses CUDA {c.cuda_runtime}" if c.cuda_runtime else ""),
    )


def check_nvml(c: DoctorContext) -> Check:
    if not c.nvidia_present:
        return Check("NVML / nvidia-smi", "ok", "no NVIDIA device nodes.")
    has_nvml = any(g.vendor == "nvidia" for g in c.hw.gpus)
    if has_nvml and c.nvidia_smi:
        return Check("NVML / nvidia-smi", "ok", "both available.")
    missing = [n for n, ok in (("NVML (libnvidia-ml)", has_nvml), ("nvidia-smi", c.nvidia_smi)) if not ok]
    return Check(
        "NVML / nvidia-smi",
        "warn",
        f"NVIDIA device present but {' and '.join(missing)} missing.",
        "install the NVIDIA driver utilities (e.g. apt install nvidia-utils-<version>) "
        "and pip install nvidia-ml-py",
    )


def check_disk(c: DoctorContext) -> Check:
    free = c.disk_free
    if free is None:
        return Check("disk", "warn", f"cannot read free space of {c.home.root}.")
    need = c.smallest_model_bytes
    where = f"{fmt_bytes(free)} free in {c.home.root}"
    if free < need:
        return Check(
            "disk",
            "fail",
            f"{where}; the smallest recommended model ({c.smallest_model_name}) needs {fmt_bytes(need)}.",
            "free disk space, or point KENNEL_HOME at a larger disk",
        )
    if free < 4 * need + 2 * GiB:
        return Check(
            "disk",
            "warn",
            f"{where}: enough for small models only.",
            "free space or move KENNEL_HOME to a larger disk",
        )
    return Check("disk", "ok", where)


def check_ram(c: DoctorContext) -> Check:
    m = c.hw.memory
    need = c.smallest_model_bytes + 512 * 2**20
    if m.total < need:
        return Check(
            "RAM",
            "fail",
            f"{fmt_bytes(m.total)} total; even {c.smallest_model_name} needs about {fmt_bytes(need)}.",
            "add memory, or run kennel on a bigger machine",
        )
    if m.available < need:
        return Check(
            "RAM",
            "fail",
            f"only {fmt_bytes(m.available)} of {fmt_bytes(m.total)} available.",
            "close memory-hungry programs",
        )
    if m.available < 4 * GiB:
        return Check(
            "RAM",
            "warn",
            f"{fmt_bytes(m.available)} available: only very small models will run.",
            "close other programs or add memory",
        )
    return Check("RAM", "ok", f"{fmt_bytes(m.available)} available of {fmt_bytes(m.total)}")


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on every address ``host`` stands for ("" or 0.0.0.0: all)."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return True  # an unknown host fails at bind time with its own message
    for family, kind, proto, _, addr in infos:
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            try:
                s.bind(addr)
            except OSError:
                return False
    return True


def port_holder(port: int) -> str | None:
    """Which process listens on ``port``, when the system lets us see it: "kennel serve (pid 123)"."""
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return None
    for c in conns:
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
            try:
                proc = psutil.Process(c.pid)
                cmd = command_line(proc.cmdline()) or proc.name()
            except psutil.Error:
                cmd = "a process"
            return f"{cmd} (pid {c.pid})"
    return None


def command_line(argv: list[str], limit: int = 120) -> str:
    """A process's command as a person would have typed it: ``kennel serve --model m --port 8484``
    rather than ``/srv/venv/bin/python /srv/venv/bin/kennel serve``, cut at ``limit`` characters."""
    if len(argv) > 1 and Path(argv[0]).name.startswith("python") and not argv[1].startswith("-"):
        argv = argv[1:]  # a script run by its interpreter: the script is the program
    if not argv:
        return ""
    text = " ".join([Path(argv[0]).name, *argv[1:]])
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_port(c: DoctorContext) -> Check:
    free = (c.port_free or port_is_free)(c.port)
    if not free:
        return Check(
            "serving port",
            "fail",
            f"127.0.0.1:{c.port} is already in use" + (f" by {h}." if (h := port_holder(c.port)) else "."),
            f"stop the program using it (e.g. `ss -ltnp | grep {c.port}`), "
            "or serve on another port with --port",
        )
    return Check("serving port", "ok", f"127.0.0.1:{c.port} is free.")


def check_home(c: DoctorContext) -> Check:
    root = c.home.root
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".doctor-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        return Check(
            "KENNEL_HOME",
            "fail",
            f"{root} is not writable: {exc.strerror}.",
            "fix its permissions or set KENNEL_HOME to a writable folder",
        )
    return Check("KENNEL_HOME", "ok", str(root))


ALL_CHECKS = (
    check_llama_installed,
    check_gpu_offload,
    check_visible_devices,
    check_driver,
    check_nvml,
    check_disk,
    check_ram,
    check_port,
    check_home,
)


def run_checks(c: DoctorContext) -> list[Check]:
    return [check(c) for check in ALL_CHECKS]


# -- probing the machine for the context --------------------------------------------------


def nvidia_present() -> bool:
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidia0").exists()


def cuda_runtime_of_build() -> str | None:
    """The CUDA runtime version libggml-cuda links against, if this build has one."""
    from kennel.hardware.llamacpp import engine_library

    lib = engine_library()
    if lib is None or not shutil.which("ldd"):
        return None
    try:
        out = subprocess.run(
            ["ldd", str(lib)], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"(\S*libcudart\.so\S*) => (\S+)", out)
    if not m:
        return None
    try:
        cudart = ctypes.CDLL(m.group(2))
        v = ctypes.c_int(0)
        if cudart.cudaRuntimeGetVersion(ctypes.byref(v)) != 0:
            return None
        return f"{v.value // 1000}.{v.value % 1000 // 10}"
    except (OSError, AttributeError):
        return None
