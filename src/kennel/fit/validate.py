"""Compare kennel's memory estimate with what llama.cpp allocates for a real load.

On x86 CPUs llama.cpp copies Q4_0/Q4_K/IQ4_NL tensors into a CPU_REPACK buffer in an interleaved
layout while the mapped file still spans them; its log then counts those tensors twice. The
mapped pages of repacked tensors are clean file pages the kernel can drop, so the comparison
uses the mapped buffers and reports the repack copy on its own.

Used by the test suite (every shape must match) and by benchmarks/fit_memory.py, which prints the
same comparison as a table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kennel.engines.llamacpp_bench import load_buffers
from kennel.fit.memory import RunConfig, compute_buffer, kv_cache_per_layer, output_buffer
from kennel.model.gguf_header import read_header
from kennel.model.gguf_shape import shape_from_gguf
from kennel.model.sources import FileSource


@dataclass(frozen=True)
class Comparison:
    label: str
    weights_est: int
    weights_file: int  # sum of tensor bytes in the header
    weights_llama: int  # mapped/allocated model buffers, without CPU_REPACK's rearranged copies
    repack_llama: int
    kv_est: int
    kv_llama: int
    compute_est: int
    compute_llama: int
    output_est: int
    output_llama: int

    @property
    def total_est(self) -> int:
        return self.weights_est + self.kv_est + self.compute_est + self.output_est

    @property
    def total_llama(self) -> int:
        return self.weights_llama + self.kv_llama + self.compute_llama + self.output_llama

    @staticmethod
    def rel(a: int, b: int) -> float:
        return abs(a - b) / b if b else float(a != 0)


def compare(path: Path, run: RunConfig, *, label: str = "") -> Comparison:
    """Estimate ``path`` under ``run`` from its header, load it in llama.cpp (CPU), compare."""
    header = read_header(FileSource(path))
    shape = shape_from_gguf(header)
    run = run.validated(shape)
    bufs = load_buffers(path, shape, run, n_gpu_layers=0)
    compute, _ = compute_buffer(shape, run, alignment=32)
    return Comparison(
        label=label or path.name,
        weights_est=sum(t.nbytes for t in shape.tensors),
        weights_file=header.tensor_bytes,
        weights_llama=sum(v for k, v in bufs.model.items() if not k.endswith("_REPACK")),
        repack_llama=sum(v for k, v in bufs.model.items() if k.endswith("_REPACK")),
        kv_est=sum(kv_cache_per_layer(shape, run)),
        kv_llama=sum(bufs.kv.values()),
        compute_est=compute,
        compute_llama=sum(bufs.compute.values()),
        output_est=output_buffer(shape, run),
        output_llama=sum(bufs.output.values()),
    )
