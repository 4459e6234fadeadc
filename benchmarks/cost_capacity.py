"""`kennel cost`'s capacity model against a measurement: 1, 2, 4, 8 requests at once, this machine.

    python benchmarks/cost_capacity.py [--model qwen2.5-0.5b:Q4_K_M] [--streams 1,2,4,8]
        [--prompt 256] [--output 64] [--rounds 3] [--threads N] [--llama-server PATH]

Builds the catalog model's exact shape at the quantization with random weights (cached in
KENNEL_HOME/synthetic), starts llama.cpp's own llama-server on it with one slot per stream of the
largest level, and for each level N sends N completions at once: a prompt of exactly --prompt
token ids and --output tokens (end of text ignored, no prompt cache), --rounds times. Measured,
from llama-server's own per-request timings: the decode rate each request got, the decode rate of
the N together, the prompt rate, and the wall time of the N requests.

Estimated: kennel.fit.throughput at N requests (the function `kennel cost` and `kennel deploy k8s`
size with), uncalibrated, on this machine as `kennel hw` sees it, for the same request sizes. The
requests start together, so the estimate of their wall time is their N prompts one after another
(prefill is compute-bound) and then their answers decoded together.

The N=1 row is the anchor: it says how far the single-request speed model is off on this machine
(what `kennel fit --measure` calibrates away). What the capacity model claims is how the figures
move with N, so read each row's ratio against the anchor's, not against 1.0. Nothing here asserts
a speed; the figures are printed side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import statistics
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
from gguf import LlamaFileType

from kennel.catalog.entries import get
from kennel.engines.llamacpp_tools import find_tool
from kennel.fit.estimate import default_run, size_option
from kennel.fit.measure import synthetic_model
from kennel.fit.quant import scheme, tensor_types
from kennel.fit.serving import default_threads, with_threads
from kennel.fit.speed import Calibration
from kennel.fit.throughput import Throughput, throughput
from kennel.hardware.probe import probe
from kennel.settings import KennelHome


@dataclass
class Level:
    """What N requests at once got, over the rounds."""

    decode: list[float]  # tokens/s each request decoded at
    prompt: list[float]  # tokens/s of the N prompts together, one figure a round
    wall: list[float]  # seconds from sending the N requests to the last answer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"llama-server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("llama-server did not come up")


async def one_level(url: str, n: int, prompt: int, output: int, vocab: int, rng: random.Random) -> Level:
    """N completions sent at once; llama-server's timings for each."""

    def body() -> dict[str, Any]:
        # random ids from the middle of the vocabulary: no special tokens, no prompt-cache hits
        ids = [rng.randrange(1000, vocab - 1000) for _ in range(prompt)]
        return {
            "prompt": ids,
            "n_predict": output,
            "ignore_eos": True,
            "cache_prompt": False,
            "temperature": 0,
        }

    async with httpx.AsyncClient(timeout=httpx.Timeout(900.0)) as client:
        t0 = time.perf_counter()
        answers = await asyncio.gather(*(client.post(url + "/completion", json=body()) for _ in range(n)))
        wall = time.perf_counter() - t0
    timings = []
    for a in answers:
        a.raise_for_status()
        timings.append(a.json()["timings"])
    decode = [t["predicted_n"] / (t["predicted_ms"] / 1000) for t in timings if t["predicted_ms"] > 0]
    # the N prompts are processed in the same batches: their tokens over the longest prompt time
    prompt_rate = sum(t["prompt_n"] for t in timings) / (max(t["prompt_ms"] for t in timings) / 1000)
    return Level(decode, [prompt_rate], [wall])


def merge(a: Level | None, b: Level) -> Level:
    if a is None:
        return b
    return Level(a.decode + b.decode, a.prompt + b.prompt, a.wall + b.wall)


def estimate(tp: Throughput, n: int) -> tuple[float, float, float, float]:
    """(decode per request, decode of the N, prompt rate, wall) by the throughput model."""
    per = tp.per_request_tok_s
    wall = n * tp.prompt_tokens / tp.prefill_tok_s + tp.output_tokens / per
    return per, tp.aggregate_tok_s, tp.prefill_tok_s, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-0.5b:Q4_K_M", help="catalog NAME:QUANT to build")
    ap.add_argument("--streams", default="1,2,4,8", help="requests at once, per level")
    ap.add_argument("--prompt", type=int, default=256, help="prompt tokens per request")
    ap.add_argument("--output", type=int, default=64, help="output tokens per request")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: every physical core)")
    ap.add_argument(
        "--llama-server", type=Path, default=None, help="a llama-server binary (default: the venv's)"
    )
    args = ap.parse_args()
    name, _, quant = args.model.partition(":")
    quant = quant or "Q4_K_M"
    levels = [int(n) for n in args.streams.split(",")]
    home = KennelHome.from_env().ensure()
    hw = probe(home)
    threads = args.threads or default_threads(hw)
    hw = with_threads(hw, threads)
    shape = get(name).shape()
    path = synthetic_model(home, shape, quant)
    binary = args.llama_server or find_tool("llama-server")
    if binary is None:
        raise SystemExit("no llama-server: run scripts/install.sh, or give --llama-server PATH")
    slots = max(levels)
    ctx = (args.prompt + args.output + 255) // 256 * 256
    print(
        f"machine: {hw.describe()}; RAM bandwidth {hw.memory.bandwidth_gbs} GB/s "
        f"({hw.memory.bandwidth_source})"
    )
    print(
        f"model: {name} {quant} shape, random weights ({path.stat().st_size / 2**20:.0f} MiB); llama-server "
        f"{slots} slots x ctx {ctx}, {threads} threads; {args.prompt} prompt + {args.output} output tokens a "
        f"request; {args.rounds} rounds"
    )
    run = replace(default_run(shape, ctx=ctx), parallel=slots)
    types = tensor_types(shape, LlamaFileType(scheme(quant).ftype or 0))
    sized = size_option(shape, hw, run, types)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [str(binary), "-m", str(path), "--port", str(port), "-np", str(slots), "-c", str(ctx * slots)]
    cmd += ["-t", str(threads), "-fa", "on", "--no-webui", "--cache-ram", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rng = random.Random(0)
    measured: dict[int, Level] = {}
    try:
        wait_ready(url, proc)
        asyncio.run(one_level(url, 1, 32, 8, shape.n_vocab, rng))  # unmeasured: pages the weights in
        for r in range(args.rounds):
            for n in levels:
                got = asyncio.run(one_level(url, n, args.prompt, args.output, shape.n_vocab, rng))
                measured[n] = merge(measured.get(n), got)
                print(
                    f"  round {r + 1}, {n} at once: decode {statistics.median(got.decode):6.1f} tok/s each, "
                    f"wall {got.wall[0]:5.2f} s",
                    flush=True,
                )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print()
    cols = ("decode each", "decode all", "prompt", "wall s")
    head = f"{'at once':>7} | " + " | ".join(f"{c + ': est':>16} {'meas':>6} {'ratio':>5}" for c in cols)
    print(head)
    print("-" * len(head))
    anchor: float | None = None
    for n in levels:
        tp = throughput(sized, hw, Calibration(), n, args.prompt, args.output)
        per, total, pre, wall = estimate(tp, n)
        m = measured[n]
        m_per = statistics.median(m.decode)
        m_total = m_per * n
        m_pre = statistics.median(m.prompt)
        m_wall = statistics.median(m.wall)
        anchor = anchor if anchor is not None else m_per / per
        pairs = ((per, m_per), (total, m_total), (pre, m_pre), (wall, m_wall))
        cells = " | ".join(f"{e:16.2f} {m:6.1f} {m / e:5.2f}" for e, m in pairs)
        print(f"{n:>7} | {cells}" + ("   (compute-bound)" if tp.compute_bound else ""))
    print()
    print(
        f"anchor: at 1 request the decode ratio is {anchor:.2f}; the model's claim is the change with N, "
        "so a decode ratio that stays near the anchor means it scales as estimated."
    )


if __name__ == "__main__":
    main()
