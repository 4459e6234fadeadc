"""kennel's memory estimate against the buffers llama.cpp allocates, for every shape the tests use.

    python benchmarks/fit_memory.py

Writes each generated model to a temporary folder, loads it in llama.cpp on the CPU, and prints
weights, KV cache, compute buffer and total: estimate / llama.cpp / difference. Then the
quantized models of tests/fit/test_repack.py: the CPU_REPACK buffer llama.cpp fills with
repacked copies of weights on this CPU, against kennel's prediction, and the totals with it.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fit.test_against_llama import CASES
from tests.fit.test_repack import LLAMA_CASES

from kennel.fit.memory import RunConfig
from kennel.fit.quant import tensor_types
from kennel.fit.repack import rules_for
from kennel.fit.validate import Comparison, compare, this_machine
from kennel.model.synthetic import synthetic_shape, write_synthetic_gguf

MiB = 2**20


def _cell(est: int, real: int) -> str:
    return f"{est / MiB:8.2f} {real / MiB:8.2f} {Comparison.rel(est, real) * 100:5.2f}%"


def main() -> None:
    print(
        f"{'shape':38s} {'weights est / llama / diff':>26s}  {'KV cache':>24s}  "
        f"{'compute':>24s}  {'total':>24s}"
    )
    worst = 0.0
    with tempfile.TemporaryDirectory() as d:
        for i, (label, kw, run) in enumerate(CASES):
            path = write_synthetic_gguf(Path(d) / f"m{i}.gguf", synthetic_shape(**kw))
            c = compare(path, run, label=label)
            worst = max(worst, Comparison.rel(c.total_est, c.total_llama))
            print(
                f"{label:38s} {_cell(c.weights_est, c.weights_llama)}  {_cell(c.kv_est, c.kv_llama)}  "
                f"{_cell(c.compute_est, c.compute_llama)}  {_cell(c.total_est, c.total_llama)}",
                flush=True,
            )
        print(f"(MiB; llama.cpp prints two decimals.) Worst total difference: {worst * 100:.2f}%")
        rules = rules_for(this_machine())
        print(f"\nCPU repack on this machine: {'/'.join(rules.types()) or 'nothing'} (ctx 1024)")
        print(f"{'quantized model':38s} {'mapped est / llama / diff':>26s}  {'repack':>24s}  {'total':>24s}")
        worst = 0.0
        for i, (label, kw, ftype, override) in enumerate(LLAMA_CASES):
            shape = synthetic_shape(**kw)
            types = {**tensor_types(shape, ftype), **{k: int(v) for k, v in override.items()}}
            path = write_synthetic_gguf(
                Path(d) / f"q{i}.gguf", shape, tensor_types=types, file_type=int(ftype)
            )
            c = compare(path, RunConfig(ctx=1024), label=label)
            worst = max(worst, Comparison.rel(c.total_est, c.total_llama))
            print(
                f"{label:38s} {_cell(c.mapped_est, c.weights_llama)}  {_cell(c.repack_est, c.repack_llama)}  "
                f"{_cell(c.total_est, c.total_llama)}",
                flush=True,
            )
    print(
        "(kennel's total counts the file's tensor bytes, llama.cpp maps only the span up to the last "
        f"tensor it does not repack.) Worst total difference: {worst * 100:.2f}%"
    )


if __name__ == "__main__":
    main()
