"""llama.cpp's command-line tools built from the same tree as the engine (scripts/install.sh puts
``llama-server`` and ``llama-quantize`` next to the virtual environment's python): one llama.cpp
for serving, quantizing and benchmarking."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from kennel.errors import MeasureError

TOOLS_ENV = "KENNEL_LLAMA_BIN"  # a folder holding llama-server and llama-quantize


def find_tool(name: str) -> Path | None:
    """``name`` from $KENNEL_LLAMA_BIN, else beside this Python (the venv's bin), else on PATH."""
    folders = [os.environ.get(TOOLS_ENV), str(Path(sys.executable).parent)]
    for folder in folders:
        if folder and (p := Path(folder) / name).is_file() and os.access(p, os.X_OK):
            return p
    found = shutil.which(name)
    return Path(found) if found else None


def quantize(src: Path, dst: Path, ftype: str, *, pure: bool = False, threads: int = 2) -> None:
    """``llama-quantize`` from ``src`` to ``dst`` as ``ftype`` (a llama.cpp name such as Q4_K_M)."""
    tool = find_tool("llama-quantize")
    if tool is None:
        raise MeasureError(
            "llama-quantize is not installed, so kennel cannot make quantized blocks.",
            hint="Run scripts/install.sh (it builds llama.cpp's tools beside the engine).",
        )
    args = [str(tool), *(["--pure"] if pure else []), str(src), str(dst), ftype, str(threads)]
    done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=600)
    if done.returncode != 0:
        tail = " ".join(done.stderr.strip().splitlines()[-2:])[-300:]
        raise MeasureError(f"llama.cpp could not quantize to {ftype}: {tail}")
