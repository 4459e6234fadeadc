"""Load test: kennel serve against other OpenAI-compatible servers, side by side, same model.

    python benchmarks/serve_load.py [--model qwen2.5-0.5b:Q4_0] [--concurrency 1,4,8]
        [--requests 4] [--max-tokens 64] [--llama-cpp-server] [--url NAME=URL ...]

Builds the catalog model's exact shape at the quantization with random weights (cached in
KENNEL_HOME/synthetic), starts `kennel serve` on it (and, with --llama-cpp-server,
llama-cpp-python's own server on the same file), then for each concurrency level runs that many
clients, each sending --requests streaming chat requests one after another. Reported per server
and level: aggregate generated tokens/s, time to first token p50/p95, time per output token
(after the first) p50, and errors: HTTP errors and streams that ended without a finish_reason
(a stream another request interrupted).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from kennel.catalog.entries import get
from kennel.fit.measure import synthetic_model
from kennel.settings import KennelHome

PROMPT = "Write a short story about a lighthouse keeper who finds a map. " * 3


@dataclass
class Level:
    tokens: int = 0
    errors: int = 0
    ttft: list[float] = field(default_factory=list)
    tpot: list[float] = field(default_factory=list)
    wall: float = 0.0


async def one_request(client: httpx.AsyncClient, url: str, model: str, max_tokens: int, level: Level) -> None:
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_tokens,
            "stream": True, "temperature": 0.7}  # fmt: skip
    t0 = time.perf_counter()
    first = None
    n = 0
    finished = False
    try:
        async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                level.errors += 1
                await r.aread()
                return
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                for c in chunk.get("choices", []):
                    if c.get("delta", {}).get("content"):
                        n += 1
                        first = first or time.perf_counter()
                    finished = finished or bool(c.get("finish_reason"))
    except httpx.HTTPError:
        level.errors += 1
        return
    end = time.perf_counter()
    level.tokens += n
    if not finished:
        level.errors += 1
    if first is not None:
        level.ttft.append(first - t0)
        if n > 1:
            level.tpot.append((end - first) / (n - 1))


async def run_level(url: str, model: str, clients: int, requests: int, max_tokens: int) -> Level:
    level = Level()
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0)) as client:

        async def user() -> None:
            for _ in range(requests):
                await one_request(client, url, model, max_tokens, level)

        t0 = time.perf_counter()
        await asyncio.gather(*(user() for _ in range(clients)))
        level.wall = time.perf_counter() - t0
    return level


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def wait_ready(url: str, proc: subprocess.Popen[bytes], seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server for {url} exited with {proc.returncode}")
        try:
            if httpx.get(url + "/v1/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"server at {url} did not come up")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-0.5b:Q4_0", help="catalog NAME:QUANT to build")
    ap.add_argument("--concurrency", default="1,4,8")
    ap.add_argument("--requests", type=int, default=3, help="requests per client")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--llama-cpp-server", action="store_true", help="also run llama-cpp-python's server")
    ap.add_argument(
        "--url", action="append", default=[], help="another server: NAME=URL (its model id: 'bench')"
    )
    args = ap.parse_args()
    name, _, quant = args.model.partition(":")
    home = KennelHome.from_env().ensure()
    path = synthetic_model(home, get(name).shape(), quant or "Q4_0")
    print(f"model: {name} {quant} shape, random weights: {path} ({path.stat().st_size / 2**20:.0f} MiB)")
    threads = str(os.cpu_count() or 1)
    servers: dict[str, str] = {}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "KENNEL_HOME": str(Path(tmp) / "home")}
        port = 18484
        procs["kennel"] = (subprocess.Popen([sys.executable, "-m", "kennel.cli.main", "serve", "--model", str(path), "--ctx",
                                       str(args.ctx), "--port", str(port), "--preload"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
        servers["kennel"] = f"http://127.0.0.1:{port}"
        if args.llama_cpp_server:
            procs["llama-cpp-python"] = (subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(path), "--port",
                                           str(port + 1), "--n_ctx", str(args.ctx), "--n_threads", threads,
                                           "--model_alias", "bench"], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))  # fmt: skip
            servers["llama-cpp-python"] = f"http://127.0.0.1:{port + 1}"
        for item in args.url:
            label, _, url = item.partition("=")
            servers[label] = url.rstrip("/")
        try:
            for label, proc in procs.items():
                wait_ready(servers[label], proc)
            model_ids = dict.fromkeys(servers, "bench")
            model_ids["kennel"] = httpx.get(servers["kennel"] + "/v1/models").json()["data"][0]["id"]
            print(
                f"{'server':<18}{'clients':>8}{'tok/s':>9}{'TTFT p50':>10}{'TTFT p95':>10}{'TPOT p50':>10}{'errors':>8}"
            )
            for clients in (int(c) for c in args.concurrency.split(",")):
                for label, url in servers.items():
                    lv = asyncio.run(
                        run_level(url, model_ids[label], clients, args.requests, args.max_tokens)
                    )
                    print(f"{label:<18}{clients:>8}{lv.tokens / lv.wall:>9.1f}{pct(lv.ttft, 50):>9.2f}s"
                          f"{pct(lv.ttft, 95):>9.2f}s{pct(lv.tpot, 50) * 1000:>8.0f}ms{lv.errors:>8}", flush=True)  # fmt: skip
        finally:
            for p in procs.values():
                p.terminate()
                p.wait(timeout=30)
    print(f"({args.requests} streaming requests per client, up to {args.max_tokens} tokens each; "
          f"TPOT: time per output token after the first)")  # fmt: skip


if __name__ == "__main__":
    main()
