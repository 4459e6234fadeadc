"""What the installed llama.cpp build can use: GPU offload support and its backend devices.

``llama_supports_gpu_offload`` answers "was this built with CUDA/Metal/ROCm/Vulkan"; the ggml
backend registry lists the devices it actually found, e.g. CUDA0, Metal, Vulkan0, with the memory
llama.cpp sees on each. Both are C functions of llama.cpp that the xllamacpp extension exports
(it links llama.cpp statically), reached through ctypes.
"""

from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass
from pathlib import Path

from kennel.hardware.profile import LlamaBuild


@dataclass(frozen=True)
class BackendDevice:
    name: str
    description: str
    kind: str  # "cpu", "gpu", "igpu", "accel"
    free: int
    total: int


_DEV_TYPES = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel"}


def engine_library() -> Path | None:
    """The compiled llama.cpp: the xllamacpp extension module."""
    try:
        from xllamacpp import xllamacpp as ext
    except ImportError:
        return None
    return Path(ext.__file__)


def _ggml_lib() -> ctypes.CDLL | None:
    path = engine_library()
    if path is None:
        return None
    try:
        return ctypes.CDLL(str(path))
    except OSError:
        return None


def backend_devices() -> list[BackendDevice]:
    lib = _ggml_lib()
    if lib is None:
        return []
    try:
        lib.ggml_backend_dev_count.restype = ctypes.c_size_t
        lib.ggml_backend_dev_get.restype = ctypes.c_void_p
        lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
        lib.ggml_backend_dev_name.restype = ctypes.c_char_p
        lib.ggml_backend_dev_name.argtypes = [ctypes.c_void_p]
        lib.ggml_backend_dev_description.restype = ctypes.c_char_p
        lib.ggml_backend_dev_description.argtypes = [ctypes.c_void_p]
        lib.ggml_backend_dev_type.restype = ctypes.c_int
        lib.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
        lib.ggml_backend_dev_memory.argtypes = [
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_size_t),
            ctypes.POINTER(ctypes.c_size_t),
        ]
        devices = []
        for i in range(lib.ggml_backend_dev_count()):
            dev = lib.ggml_backend_dev_get(i)
            free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
            lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
            devices.append(
                BackendDevice(
                    name=(lib.ggml_backend_dev_name(dev) or b"").decode(),
                    description=(lib.ggml_backend_dev_description(dev) or b"").decode(),
                    kind=_DEV_TYPES.get(lib.ggml_backend_dev_type(dev), "other"),
                    free=int(free.value),
                    total=int(total.value),
                )
            )
        return devices
    except (AttributeError, OSError):
        return []


def probe_llama_build() -> LlamaBuild:
    lib = _ggml_lib()
    if lib is None:
        return LlamaBuild(installed=False)
    import xllamacpp

    lib.llama_print_system_info.restype = ctypes.c_char_p
    info = (lib.llama_print_system_info() or b"").decode(errors="replace").strip()
    devices = backend_devices()

    def supports(name: str) -> bool:
        fn = getattr(lib, f"llama_supports_{name}")
        fn.restype = ctypes.c_bool
        return bool(fn())

    return LlamaBuild(
        installed=True,
        version=getattr(xllamacpp, "__version__", None),
        gpu_offload=supports("gpu_offload"),
        mmap=supports("mmap"),
        mlock=supports("mlock"),
        rpc=supports("rpc"),
        backends=tuple(d.name for d in devices) or tuple(_backends_from_info(info)),
        system_info=info,
    )


def _backends_from_info(info: str) -> list[str]:
    found = ["CPU"]
    for name in ("CUDA", "METAL", "HIP", "VULKAN", "SYCL", "CANN", "MUSA", "OPENCL"):
        if re.search(rf"\b{name}\s*=\s*1", info):
            found.append(name)
    return found
