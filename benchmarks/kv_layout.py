"""KV cache layout for parallel requests: one cache shared by all (llama.cpp's ``--kv-unified``)
against a cache per request (its streams, what kennel runs), same file, same run.

    python benchmarks/kv_layout.py [--model qwen2.5-0.5b:Q4_K_M] [--clients 8] [--rounds 4]
        [--history 0,1500] [--max-tokens 64] [--parallel 8] [--ctx 4096] [--llama-server PATH]

Both are llama-server (the one scripts/install.sh builds beside the venv's python, from the
llama.cpp tree kennel runs in process) on the catalog model's shape with random weights, with the
same slots, context per request, threads, flash attention and prompt cache; they differ only in
the layout. For each --history (tokens of a conversation each user has had before, its own text),
--clients users each send --requests streaming chat requests one after another; the layouts take
turns, the order alternating between rounds. Reported: generated tok/s (median of the rounds'
paired ratios) and time per output token after the first.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
from serve_load import (  # type: ignore[import-not-found]
    TOPICS,
    Level,
    llama_server_cmd,
    paused,
    pct,
    run_level,
    wait_ready,
)

from kennel.catalog.entries import get
from kennel.engines.llamacpp_tools import find_tool
from kennel.fit.measure import synthetic_model
from kennel.fit.serving import default_threads
from kennel.hardware.probe import probe
from kennel.settings import KennelHome


def history_text(url: str, user: int, tokens: int) -> str:
    """About ``tokens`` tokens of earlier conversation, different for every user (so no user's
    history comes from another's cache), counted by the server's own /tokenize."""
    unit = f"User {user} said earlier: the order for {TOPICS[user % len(TOPICS)]} shipped on day {{}}. "
    per_unit = (
        len(httpx.post(url + "/tokenize", json={"content": unit.format(10) * 10}).json()["tokens"]) / 10
    )
    return "".join(unit.format(i) for i in range(max(1, round(tokens / per_unit))))


def conversation(histories: list[str], r: int) -> Callable[[int, int], list[dict[str, str]]]:
    """A user's earlier conversation (if any), then a question of its own."""

    def messages(u: int, i: int) -> list[dict[str, str]]:
        before = (
            [{"role": "user", "content": histories[u]}, {"role": "assistant", "content": "Noted."}]
            if histories[u]
            else []
        )
        topic = TOPICS[(u + i) % len(TOPICS)]
        return [
            *before,
            {"role": "user", "content": f"Round {r}, request {i}: write a short story about {topic}."},
        ]

    return messages


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-0.5b:Q4_K_M", help="catalog NAME:QUANT to build")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=3, help="requests per client")
    ap.add_argument("--history", default="0,1500", help="tokens of earlier conversation per user")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--ctx", type=int, default=4096, help="context per request")
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--llama-server", type=Path, default=None, help="a llama-server binary")
    args = ap.parse_args()
    name, _, quant = args.model.partition(":")
    home = KennelHome.from_env().ensure()
    path = synthetic_model(home, get(name).shape(), quant or "Q4_K_M")
    threads = default_threads(probe(home, measure=False))
    binary = args.llama_server or find_tool("llama-server")
    if binary is None:
        raise SystemExit("no llama-server: run scripts/install.sh, or give --llama-server PATH")

    def common(port: int) -> list[str]:
        return llama_server_cmd(binary, path, port, args.parallel, args.ctx, threads, 256)

    layouts = {
        "one shared cache": [*common(18486), "-kvu", "--kv-unified-per-slot", str(args.ctx)],
        "cache per request": [*common(18487), "-no-kvu"],
    }
    urls = {"one shared cache": "http://127.0.0.1:18486", "cache per request": "http://127.0.0.1:18487"}
    print(
        f"model: {name} {quant} shape, random weights ({path.stat().st_size / 2**20:.0f} MiB); "
        f"{args.parallel} slots x ctx {args.ctx}, {threads} threads, {args.clients} clients"
    )
    procs = {
        k: subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for k, c in layouts.items()
    }
    results: dict[tuple[str, int], list[Level]] = {}
    try:
        for k, p in procs.items():
            wait_ready(urls[k] + "/health", p)
        for k in urls:  # pages the weights in
            asyncio.run(run_level(urls[k], "bench", 1, 1, 8, -1, conversation([""], -1)))
        sizes = [int(h) for h in args.history.split(",")]
        for size in sizes:
            histories = [
                history_text(urls["cache per request"], u, size) if size else "" for u in range(args.clients)
            ]
            for r in range(args.rounds):
                order = list(urls) if r % 2 == 0 else list(reversed(urls))
                for k in order:
                    with paused([p for kk, p in procs.items() if kk != k]):
                        lv = asyncio.run(
                            run_level(
                                urls[k],
                                "bench",
                                args.clients,
                                args.requests,
                                args.max_tokens,
                                r,
                                conversation(histories, r),
                            )
                        )
                    results.setdefault((k, size), []).append(lv)
                    print(
                        f"  history {size:>5}, round {r + 1}, {k:<18} {lv.tok_s:6.1f} tok/s, "
                        f"TPOT p50 {pct(lv.tpot, 50) * 1000:4.0f} ms, interrupted {lv.interrupted}",
                        flush=True,
                    )
    finally:
        for p in procs.values():
            p.terminate()
            p.wait(timeout=30)
    print()
    print(f"{'history':>8}  {'layout':<18}{'gen tok/s':>10}{'TPOT p50':>10}")
    for size in sizes:
        for k in urls:
            runs = results[(k, size)]
            tpot = [t for lv in runs for t in lv.tpot]
            tok_s = statistics.mean(lv.tok_s for lv in runs)
            print(f"{size:>8}  {k:<18}{tok_s:>10.1f}{pct(tpot, 50) * 1000:>8.0f}ms")
        paired = [
            a.tok_s / b.tok_s
            for a, b in zip(
                results[("cache per request", size)], results[("one shared cache", size)], strict=True
            )
        ]
        print(
            f"{'':>8}  per request / shared: {statistics.median(paired):.2f}x  (rounds: "
            + " ".join(f"{x:.2f}" for x in paired)
            + ")"
        )


if __name__ == "__main__":
    main()
