"""What llama.cpp says while it loads a model: the buffers it allocated, read from its log.

Those lines ("CPU_Mapped model buffer size = 4.08 MiB", "CUDA0 KV buffer size = ...") are the
ground truth for two things: the memory a loaded model holds (the engine reports it; the pool
believes it over the fit estimate) and the fit tests, which compare every buffer with kennel's
prediction.

xllamacpp has no log callback: each ``Server`` re-installs llama.cpp's own logger, which writes
to the process's stderr (fd 2) above a verbosity threshold. So a load in the server process is
captured at the file-descriptor level, under a lock (one load at a time), and afterwards the
threshold is lowered through the one symbol xllamacpp exports for it, so serving stays quiet.
Measuring runs load in a child process instead and read its stderr.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from kennel.engines.base import Memory

_BUFFERS = {
    "model": re.compile(r"(\S+) model buffer size =\s+([\d.]+) MiB"),
    "kv": re.compile(r"(\S+) KV buffer size =\s+([\d.]+) MiB"),
    "compute": re.compile(r"(\S+) compute buffer size =\s+([\d.]+) MiB"),
    "output": re.compile(r"(\S+)\s+output buffer size =\s+([\d.]+) MiB"),
    "recurrent": re.compile(r"(\S+) RS buffer size =\s+([\d.]+) MiB"),
}
# a GPU buffer is named after its backend and device number (CUDA0, ROCm1, Vulkan0, MTL0);
# host-side ones (CPU, CPU_Mapped, CPU_REPACK, CUDA_Host) live in RAM
_GPU_BUFFER = re.compile(r"^(?:CUDA|ROCm|Vulkan|MTL|Metal|SYCL|CANN|MUSA)(\d*)$")
# llama.cpp's log lines: "0.00.013.152 I srv ..." (timestamp, level letter)
_LOG_LINE = re.compile(r"^(?:\x1b\[[0-9;]*m)?\d+\.\d+\.\d+\.\d+(?:\x1b\[[0-9;]*m)? ")
# what Python writes to stderr (logging, uvicorn, tracebacks), told apart from the continuation
# lines of a multi-line llama.cpp message (the chat template it prints, for one)
_PYTHON_LINE = re.compile(
    r"^(?:\d{4}-\d\d-\d\d[ T]|[A-Z]+:\s|Traceback |  File \"|\w+(?:\.\w+)*(?:Error|Exception|Warning): )"
)
LOADED_MARK = "init: listening on"  # the last line llama.cpp logs for a successful load
FAILED_MARKS = ("exiting due to", "failed to initialize", "Failed to init")
LOG_NAME = "llama-load.log"


@dataclass(frozen=True)
class LlamaBuffers:
    """Buffer sizes in bytes as llama.cpp logged them (printed in MiB with two decimals)."""

    model: dict[str, int] = field(default_factory=dict)
    kv: dict[str, int] = field(default_factory=dict)
    compute: dict[str, int] = field(default_factory=dict)
    output: dict[str, int] = field(default_factory=dict)
    recurrent: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(sum(d.values()) for d in self._parts())

    def _parts(self) -> tuple[dict[str, int], ...]:
        return (self.model, self.kv, self.compute, self.output, self.recurrent)

    @property
    def found(self) -> bool:
        return bool(self.model)

    @classmethod
    def from_log(cls, text: str) -> LlamaBuffers:
        found: dict[str, dict[str, int]] = {k: defaultdict(int) for k in _BUFFERS}
        for kind, pat in _BUFFERS.items():
            for name, mib in pat.findall(text):
                found[kind][name] += round(float(mib) * 2**20)
        return cls(**{k: dict(v) for k, v in found.items()})

    def memory(self) -> Memory:
        """RAM and VRAM per GPU, every buffer counted. On x86 and ARM llama.cpp copies the
        weights the CPU multiplies with into a CPU_REPACK (or AMX) buffer while the mapped file
        still spans them; the mapped pages, read during the load, stay resident like the rest of
        the mapping, so the process holds both (kennel.fit.repack)."""
        ram = 0
        vram: dict[int, int] = defaultdict(int)
        for part in self._parts():
            for name, size in part.items():
                m = _GPU_BUFFER.match(name)
                if m:
                    vram[int(m.group(1) or 0)] += size
                else:
                    ram += size
        n = max(vram) + 1 if vram else 0
        return Memory(ram=ram, vram=tuple(vram.get(i, 0) for i in range(n)))


class LoadLog:
    """Captures fd 2 while llama.cpp loads a model, one load at a time per process (share one
    LoadLog per process). With a ``folder``, the last load's whole log stays there as
    ``llama-load.log``: what llama.cpp said before a crash is not lost."""

    def __init__(self, folder: Path | None = None) -> None:
        self._lock = threading.Lock()
        self._set_threshold = _threshold_setter()
        self._folder = folder

    @property
    def can_quiet(self) -> bool:
        return self._set_threshold is not None

    @contextlib.contextmanager
    def capture(self, *, timeout: float = 5.0) -> Iterator[list[str]]:
        """Within the block fd 2 goes to a temporary file; on leaving, the llama.cpp lines are put
        in the yielded list, anything else written meanwhile (other threads' logging) goes on to
        the real stderr, and llama.cpp is told to log nothing more."""
        out: list[str] = []
        with self._lock, self._file() as tmp:
            sys.stderr.flush()
            saved = os.dup(2)
            os.dup2(tmp.fileno(), 2)
            try:
                yield out
            finally:
                # llama.cpp logs from a worker thread: wait for its last load line before reading
                deadline = time.monotonic() + timeout
                while True:
                    tmp.seek(0)
                    text = tmp.read().decode("utf-8", errors="replace")
                    done = LOADED_MARK in text or any(m in text for m in FAILED_MARKS)
                    if done or time.monotonic() > deadline:
                        break
                    time.sleep(0.01)
                if self._set_threshold is not None:
                    # nothing more: kennel logs each request itself, and a failed one reaches its
                    # client (and the request log) as an error, not as llama.cpp noise on the terminal
                    self._set_threshold(0)
                    time.sleep(0.02)  # lines other models queued meanwhile are written here too
                    tmp.seek(0)
                    text = tmp.read().decode("utf-8", errors="replace")
                sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                rest: list[str] = []
                llama = False
                for line in text.splitlines(keepends=True):
                    if _LOG_LINE.match(line):
                        llama = True
                    elif _PYTHON_LINE.match(line) or not llama:
                        llama = False
                    (out if llama else rest).append(line)
                if rest:
                    sys.stderr.write("".join(rest))
                    sys.stderr.flush()

    def _file(self) -> IO[bytes]:
        if self._folder is None:
            return tempfile.TemporaryFile(mode="w+b")
        self._folder.mkdir(parents=True, exist_ok=True)
        return (self._folder / LOG_NAME).open("w+b")


def _threshold_setter() -> Callable[[int], None] | None:
    """``common_log_set_verbosity_thold(int)`` from the xllamacpp extension, which exports
    llama.cpp's symbols (a C++ name, so it is looked up mangled); None if this build lacks it."""
    try:
        from kennel.engines.llamacpp_params import xllamacpp

        lib = ctypes.CDLL(xllamacpp().xllamacpp.__file__)
        fn = lib._Z30common_log_set_verbosity_tholdi
    except (ImportError, OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = None
    return fn
