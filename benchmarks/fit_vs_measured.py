"""Estimated against measured speed on this machine, for a few real model shapes.

    python benchmarks/fit_vs_measured.py [--models tinyllama-1.1b,qwen2.5-0.5b] [--quant Q4_K_M]

Each model is built locally at its exact shape and quantization with random weights (cached in
KENNEL_HOME/synthetic), timed with a 512-token prompt and 64 generated tokens, and compared with
kennel's *uncalibrated* estimate for the same run. Nothing is recorded as calibration.
"""

from __future__ import annotations

import argparse
import time

from kennel.catalog.resolve import resolve
from kennel.fit.estimate import default_run
from kennel.fit.measure import measure
from kennel.fit.speed import UNCALIBRATED
from kennel.hardware.probe import probe
from kennel.settings import KennelHome
from kennel.units import fmt_bytes

DEFAULT_MODELS = (
    "qwen2.5-0.5b:Q8_0",
    "llama-3.2-1b:Q4_K_M",
    "tinyllama-1.1b:Q4_K_M",
    "qwen2.5-0.5b:Q4_0",
    "llama-3.2-3b:Q4_K_M",
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated NAME:QUANT")
    ap.add_argument("--ctx", type=int, default=2048)
    args = ap.parse_args()
    home = KennelHome.from_env().ensure()
    hw = probe(home)
    print(
        f"machine: {hw.describe()}; RAM bandwidth {hw.memory.bandwidth_gbs} GB/s "
        f"({hw.memory.bandwidth_source})"
    )
    print(
        f"{'model':28s} {'quant':7s} {'weights':>9s} {'decode est':>10s} {'measured':>9s} {'ratio':>6s} "
        f"{'prefill est':>11s} {'measured':>9s} {'ratio':>6s} {'build s':>7s}  inside the printed range"
    )
    low, high = UNCALIBRATED
    outside = 0
    for item in args.models.split(","):
        name, quant = item.split(":")
        shape = resolve(name).shape
        t0 = time.perf_counter()
        m = measure(shape, hw, default_run(shape, ctx=args.ctx), quant=quant, home=home, record=False)
        b = m.bench
        inside = [low <= r <= high for r in (m.decode_ratio, m.prefill_ratio)]
        outside += inside.count(False)
        print(
            f"{name:28s} {quant:7s} {fmt_bytes(m.estimated_buffers):>9s} "
            f"{m.estimated_decode:10.1f} {b.decode_tok_s:9.1f} {m.decode_ratio:6.2f} "
            f"{m.estimated_prefill:11.1f} {b.prefill_tok_s:9.1f} {m.prefill_ratio:6.2f} "
            f"{time.perf_counter() - t0:7.1f}  "
            f"decode {'yes' if inside[0] else 'NO'}, prefill {'yes' if inside[1] else 'NO'}",
            flush=True,
        )
    print(f"printed range: {low}-{high}x of the estimate; {outside} figure(s) outside it")


if __name__ == "__main__":
    main()
