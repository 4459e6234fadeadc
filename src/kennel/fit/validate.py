"""Compare kennel's memory estimate with what llama.cpp allocates for a real load.

On x86 and ARM CPUs llama.cpp copies the weights it multiplies with into a CPU_REPACK buffer in
an interleaved layout (kennel.fit.repack) while the mapped file still spans them. The process
holds both, and so does kennel's estimate: the comparison checks the repack buffer byte for byte
(to the log's two decimals) and counts it in both totals. The mapped buffer itself covers the
file from the first to the last tensor read in place, so repacked tensors at either end of the
file fall out of it; ``mapped_est`` predicts that span, while kennel's weights stay the file's
tensor bytes (an overestimate by those few end tensors at most).

Used by the test suite (every shape must match) and by benchmarks/fit_memory.py, which prints the
same comparison as a table.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from kennel.fit.estimate import size_option
from kennel.fit.llamacpp_run import load_buffers
from kennel.fit.memory import RunConfig
from kennel.fit.repack import copied_tensors, rules_for
from kennel.hardware.cpu import probe_cpu, probe_memory
from kennel.hardware.llamacpp import probe_llama_build
from kennel.hardware.profile import HardwareProfile
from kennel.model.gguf_header import GGUFHeader, read_header
from kennel.model.gguf_shape import shape_from_gguf
from kennel.model.sources import FileSource


@dataclass(frozen=True)
class Comparison:
    label: str
    weights_est: int  # kennel's weights: the file's tensor bytes
    weights_file: int  # sum of tensor bytes in the header
    mapped_est: int  # the span of the file llama.cpp maps for the tensors it uses in place
    weights_llama: int  # mapped/allocated model buffers, the CPU's extra (repack) ones aside
    repack_est: int
    repack_llama: int  # CPU_REPACK (and AMX) model buffers
    kv_est: int
    kv_llama: int
    compute_est: int
    compute_llama: int
    output_est: int
    output_llama: int

    @property
    def total_est(self) -> int:
        return self.weights_est + self.repack_est + self.kv_est + self.compute_est + self.output_est

    @property
    def total_llama(self) -> int:
        return self.weights_llama + self.repack_llama + self.kv_llama + self.compute_llama + self.output_llama

    @staticmethod
    def rel(a: int, b: int) -> float:
        return abs(a - b) / b if b else float(a != 0)


@cache
def this_machine() -> HardwareProfile:
    """This machine as the loads see it: its CPU and the llama.cpp build, no GPU (they load with
    no layer offloaded); a GPU backend in the build still turns repacking off, as in llama.cpp."""
    return HardwareProfile(source="probed", cpu=probe_cpu(), memory=probe_memory(), llama=probe_llama_build())


def _is_extra(buffer: str) -> bool:
    return buffer.endswith("_REPACK") or buffer == "AMX"


def mapped_span(header: GGUFHeader, copied: frozenset[str]) -> int:
    """Bytes of the CPU_Mapped buffer: from the first to the end of the last tensor left in place."""
    kept = [t for t in header.tensors if t.name not in copied]
    if not kept:
        return 0
    return max(t.offset + t.nbytes for t in kept) - min(t.offset for t in kept)


def compare(path: Path, run: RunConfig, *, label: str = "", hw: HardwareProfile | None = None) -> Comparison:
    """Estimate ``path`` under ``run`` as `kennel fit` does (on ``hw``, this machine by default),
    load it in llama.cpp (CPU), compare."""
    header = read_header(FileSource(path))
    shape = shape_from_gguf(header)
    run = run.validated(shape)
    hw = hw or this_machine()
    m = size_option(shape, hw, run, None).memory
    bufs = load_buffers(path, shape, run, n_gpu_layers=0)
    return Comparison(
        label=label or path.name,
        weights_est=m.weights,
        weights_file=header.tensor_bytes,
        mapped_est=mapped_span(header, copied_tensors(shape, None, rules_for(hw))),
        weights_llama=sum(v for k, v in bufs.model.items() if not _is_extra(k)),
        repack_est=m.repack,
        repack_llama=sum(v for k, v in bufs.model.items() if _is_extra(k)),
        kv_est=m.kv_cache,
        kv_llama=sum(bufs.kv.values()),
        compute_est=m.compute,
        compute_llama=sum(bufs.compute.values()),
        output_est=m.output_buffer,
        output_llama=sum(bufs.output.values()),
    )
