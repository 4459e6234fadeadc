"""Load test: `kennel serve` side by side with llama.cpp's own llama-server, same file, same run.

    python benchmarks/serve_load.py [--model qwen2.5-0.5b:Q4_K_M] [--clients 1,4,8,16]
        [--requests 3] [--max-tokens 64] [--parallel 8] [--threads N] [--rounds 2]
        [--llama-server PATH] [--system-tokens 1500] [--engine llamacpp|llama-server] [--control]

Builds the catalog model's exact shape at the quantization with random weights (cached in
KENNEL_HOME/synthetic), starts `kennel serve` and a native `llama-server` on it with the same
slots, context per request, threads, flash attention and prompt cache (the llama-server built
from the same llama.cpp tree by scripts/install.sh, beside the venv's python, unless --llama-server
names another), then for each number of clients runs that many users, each sending --requests
streaming chat requests one after another (every request with its own prompt). Servers take
turns level by level, and --rounds repeats the whole sweep in alternating order.

Reported per server and level: aggregate generated tokens/s (from the usage each stream
reports), time to first token p50/p95, time per output token after the first (p50), and
interrupted streams (HTTP errors and streams that ended without a finish_reason); then kennel's
ratios to llama-server: generated tok/s as the median of the rounds' paired ratios (each round's
two servers ran back to back), TTFT p95 over all rounds. Last, the prompt cache: time to first
token of a first request with a shared system prompt of --system-tokens tokens, and of a second
one with the same system prompt and another question.

With --control, a second llama-server, started exactly as the first, takes its turn in every
round too: its ratio to the first is what this machine's noise alone makes of two identical
servers (an A/A comparison), the yardstick for kennel's ratio.

With --engine llama-server, kennel serves through its supervised llama-server engine (the same
binary) instead of llama.cpp in process: the ratio is then the cost of kennel's front and proxy.
With --engine vllm, kennel serves the same shape as a bfloat16 safetensors folder (random
weights, a byte-level tokenizer; built once with vLLM's Python) through vLLM, beside llama-server
on the quantized GGUF: engines side by side on this machine, not the same file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from kennel.catalog.entries import get
from kennel.engines.llamacpp_tools import find_tool
from kennel.fit.measure import synthetic_model
from kennel.fit.serving import default_threads
from kennel.hardware.probe import probe
from kennel.model.shape import ModelShape
from kennel.settings import KennelHome

CONTROL = "llama-server B"  # --control: the second, identical llama-server

TOPICS = [
    "a lighthouse keeper",
    "a night nurse",
    "a bank clerk",
    "a factory robot",
    "a river ferry",
    "a kite maker",
]


@dataclass
class Level:
    tokens: int = 0
    interrupted: int = 0
    ttft: list[float] = field(default_factory=list)
    tpot: list[float] = field(default_factory=list)
    wall: float = 0.0
    cpu: float = 0.0  # CPU seconds the server process used

    @property
    def tok_s(self) -> float:
        return self.tokens / self.wall if self.wall else 0.0


def prompt(user: int, i: int, round_: int, clients: int) -> str:
    """Every request its own prompt, at every level of every round, so no answer comes from an
    earlier one's cache."""
    topic = TOPICS[(user + i) % len(TOPICS)]
    return (
        f"Round {round_}, {clients} users, user {user}, request {i}: "
        f"write a short story about {topic} who finds a map."
    )


async def one_request(
    client: httpx.AsyncClient, url: str, body: dict[str, object]
) -> tuple[float | None, float, int, bool]:
    """(time to first token, end, completion tokens, finished) of one streamed chat request."""
    t0 = time.perf_counter()
    first: float | None = None
    tokens, finished = 0, False
    try:
        async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                await r.aread()
                return None, 0.0, 0, False
            async for line in r.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    tokens = int(chunk["usage"]["completion_tokens"])
                for c in chunk.get("choices", []):
                    d = c.get("delta", {})
                    if first is None and (d.get("content") or d.get("reasoning_content")):
                        first = time.perf_counter() - t0
                    finished = finished or bool(c.get("finish_reason"))
    except httpx.HTTPError:
        return None, 0.0, 0, False
    return first, time.perf_counter() - t0, tokens, finished


async def run_level(
    url: str,
    model: str,
    clients: int,
    requests: int,
    max_tokens: int,
    round_: int = 0,
    messages: Callable[[int, int], list[dict[str, str]]] | None = None,
) -> Level:
    """``clients`` users each sending ``requests`` streamed chat requests one after another;
    ``messages(user, i)`` gives a request's messages (default: one prompt of its own)."""
    level = Level()
    async with httpx.AsyncClient(
        timeout=httpx.Timeout(900.0), limits=httpx.Limits(max_connections=64)
    ) as client:

        async def user(u: int) -> None:
            for i in range(requests):
                body = {
                    "model": model,
                    "messages": messages(u, i)
                    if messages
                    else [{"role": "user", "content": prompt(u, i, round_, clients)}],
                    "max_tokens": max_tokens,
                    "stream": True,
                    "stream_options": {"include_usage": True},
                    "temperature": 0.7,
                    "seed": u * 100 + i,
                }
                first, end, n, finished = await one_request(client, url, body)
                level.tokens += n
                level.interrupted += not finished
                if first is not None:
                    level.ttft.append(first)
                    if n > 1:
                        level.tpot.append((end - first) / (n - 1))

        t0 = time.perf_counter()
        await asyncio.gather(*(user(u) for u in range(clients)))
        level.wall = time.perf_counter() - t0
    return level


def system_prompt(tokenizer_url: str, tokens: int) -> str:
    """A system prompt of about ``tokens`` tokens, counted by llama-server's /tokenize."""
    unit = "Rule: answer politely and briefly, in the language of the question. "
    per_unit = len(httpx.post(tokenizer_url + "/tokenize", json={"content": unit * 10}).json()["tokens"]) / 10
    return unit * max(1, round(tokens / per_unit))


async def shared_prefix(url: str, model: str, system: str) -> tuple[float, float]:
    """Time to the first token of a first request with a long system prompt, then of a second with
    the same one (answers of one token: the time to their end is the time to their first token)."""
    out = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(900.0)) as client:
        for question in ("What are the opening hours?", "Where can visitors park?"):
            body = {
                "model": model,
                "max_tokens": 1,
                "stream": True,
                "temperature": 0.0,
                "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}],
            }
            _, end, _, finished = await one_request(client, url, body)
            out.append(end if finished else float("nan"))
    return out[0], out[1]


def hf_folder(home: KennelHome, shape: ModelShape) -> Path:
    """The shape as a bfloat16 transformers folder with random weights, for vLLM (built once)."""
    from kennel.engines.vllm import vllm_python

    folder = home.root / "synthetic" / f"hf-{shape.arch}-{shape.n_layer}L-{shape.n_embd}"
    if (folder / "config.json").exists():
        return folder
    fields = {
        "vocab_size": shape.n_vocab,
        "hidden_size": shape.n_embd,
        "intermediate_size": shape.n_ff[0],
        "num_hidden_layers": shape.n_layer,
        "num_attention_heads": shape.n_head[0],
        "num_key_value_heads": shape.n_head_kv[0],
        "head_dim": shape.head_dim_k,
        "max_position_embeddings": shape.n_ctx_train,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
    }
    script = Path(__file__).resolve().parents[1] / "tests" / "engines" / "make_hf_model.py"
    subprocess.run([str(vllm_python()), str(script), str(folder), json.dumps(fields)], check=True)
    return folder


def llama_server_cmd(
    binary: Path, model: Path, port: int, parallel: int, ctx: int, threads: int, cache_mib: int
) -> list[str]:
    """llama-server on ``model`` with ``parallel`` slots, a cache of ``ctx`` tokens for each (as
    kennel's), flash attention and a RAM prompt cache of ``cache_mib``, served as "bench"."""
    return [
        str(binary),
        "-m",
        str(model),
        "--port",
        str(port),
        "-np",
        str(parallel),
        "-c",
        str(ctx * parallel),
        "-t",
        str(threads),
        "-fa",
        "on",
        "--cache-ram",
        str(cache_mib),
        "--no-webui",
        "--alias",
        "bench",
    ]


@contextmanager
def paused(procs: list[subprocess.Popen[bytes]]) -> Iterator[None]:
    """Stop the servers not being measured, and what they started, until the block ends."""
    tree = []
    for proc in procs:
        root = psutil.Process(proc.pid)
        tree += [root, *root.children(recursive=True)]
    for p in tree:
        with suppress(psutil.Error):
            p.suspend()
    try:
        yield
    finally:
        for p in tree:
            with suppress(psutil.Error):
                p.resume()


def _cpu(proc: subprocess.Popen[bytes]) -> float:
    """CPU seconds of the server and of what it started (kennel's supervised engine process)."""
    root = psutil.Process(proc.pid)
    total = 0.0
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def wait_ready(url: str, proc: subprocess.Popen[bytes], seconds: float = 600) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server for {url} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"server at {url} did not come up")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-0.5b:Q4_K_M", help="catalog NAME:QUANT to build")
    ap.add_argument("--clients", default="1,4,8,16")
    ap.add_argument("--requests", type=int, default=3, help="requests per client")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--ctx", type=int, default=4096, help="context per request")
    ap.add_argument("--parallel", type=int, default=8, help="requests each server decodes together")
    ap.add_argument(
        "--threads", type=int, default=None, help="CPU threads (default: kennel's, all physical cores)"
    )
    ap.add_argument(
        "--rounds", type=int, default=1, help="repeat the sweep, alternating which server goes first"
    )
    ap.add_argument("--system-tokens", type=int, default=1500)
    ap.add_argument(
        "--engine",
        default="llamacpp",
        choices=["llamacpp", "llama-server", "vllm"],
        help="the engine kennel serves with",
    )
    ap.add_argument(
        "--llama-server", type=Path, default=None, help="a llama-server binary (default: the venv's)"
    )
    ap.add_argument(
        "--control",
        action="store_true",
        help="measure a second, identical llama-server too: the A/A ratio is the machine's noise",
    )
    args = ap.parse_args()
    name, _, quant = args.model.partition(":")
    home = KennelHome.from_env().ensure()
    shape = get(name).shape()
    path = synthetic_model(home, shape, quant or "Q4_K_M")
    served = hf_folder(home, shape) if args.engine == "vllm" else path
    threads = args.threads or default_threads(probe(home, measure=False))
    binary = args.llama_server or find_tool("llama-server")
    if binary is None:
        raise SystemExit("no llama-server: run scripts/install.sh, or give --llama-server PATH")
    print(f"model: {name} {quant} shape, random weights: {path.name} ({path.stat().st_size / 2**20:.0f} MiB)")
    print(
        f"both: {args.parallel} slots x ctx {args.ctx}, {threads} threads, flash attention on; "
        f"llama-server: {binary}; kennel's engine: {args.engine}"
    )
    levels = [int(c) for c in args.clients.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "KENNEL_HOME": str(Path(tmp) / "home")}
        cache_mib = 256  # the same RAM prompt cache for both
        cmds = {
            "kennel": [
                sys.executable,
                "-m",
                "kennel.cli.main",
                "serve",
                "--model",
                str(served),
                "--ctx",
                str(args.ctx),
                "--parallel",
                str(args.parallel),
                "--threads",
                str(threads),
                "--port",
                "18484",
                "--preload",
                "--max-queue",
                "64",
                "--guard",
                "off",
                "--prompt-cache",
                str(cache_mib),
                "--engine",
                args.engine,
                *(["--llama-server-bin", str(binary)] if args.engine == "llama-server" else []),
            ],
        }

        def llama_server(port: int) -> list[str]:
            return llama_server_cmd(binary, path, port, args.parallel, args.ctx, threads, cache_mib)

        cmds["llama-server"] = llama_server(18485)
        urls = {"kennel": "http://127.0.0.1:18484", "llama-server": "http://127.0.0.1:18485"}
        if args.control:
            cmds[CONTROL], urls[CONTROL] = llama_server(18486), "http://127.0.0.1:18486"
        procs = {
            k: subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for k, c in cmds.items()
        }
        results: dict[tuple[str, int], list[Level]] = {}
        prefix: dict[str, tuple[float, float]] = {}
        try:
            for label, proc in procs.items():
                wait_ready(urls[label] + ("/readyz" if label == "kennel" else "/health"), proc)
            models = {label: "bench" for label in urls}
            models["kennel"] = httpx.get(urls["kennel"] + "/v1/models").json()["data"][0]["id"]
            for label in urls:  # one unmeasured request each: pages the weights in
                asyncio.run(run_level(urls[label], models[label], 1, 1, 8, round_=-1))
            for r in range(args.rounds):
                # each server goes first (and last) equally often over len(urls) rounds
                order = list(urls)[r % len(urls) :] + list(urls)[: r % len(urls)]
                for clients in levels:
                    for label in order:
                        others = [p for k, p in procs.items() if k != label]
                        with paused(others):  # an idle vLLM polls: it must not take the other's cores
                            before = _cpu(procs[label])
                            lv = asyncio.run(
                                run_level(
                                    urls[label], models[label], clients, args.requests, args.max_tokens, r
                                )
                            )
                            lv.cpu = _cpu(procs[label]) - before
                        results.setdefault((label, clients), []).append(lv)
                        print(
                            f"  round {r + 1} {label:<15}{clients:>3} clients: {lv.tok_s:6.1f} tok/s, "
                            f"TTFT p95 {pct(lv.ttft, 95):5.2f} s, server CPU {lv.cpu / lv.wall:4.2f} cores, "
                            f"interrupted {lv.interrupted}",
                            flush=True,
                        )
            system = system_prompt(urls["llama-server"], args.system_tokens)
            for label in urls:
                with paused([p for k, p in procs.items() if k != label]):
                    prefix[label] = asyncio.run(shared_prefix(urls[label], models[label], system))
        finally:
            for p in procs.values():
                p.terminate()
                p.wait(timeout=30)
    report(results, prefix, levels, args)


def report(
    results: dict[tuple[str, int], list[Level]],
    prefix: dict[str, tuple[float, float]],
    levels: list[int],
    args: argparse.Namespace,
) -> None:
    def merged(label: str, clients: int) -> tuple[float, list[float], list[float], int]:
        runs = results[(label, clients)]
        return (
            statistics.mean(lv.tok_s for lv in runs),
            [t for lv in runs for t in lv.ttft],
            [t for lv in runs for t in lv.tpot],
            sum(lv.interrupted for lv in runs),
        )

    labels = ["llama-server", "kennel", *([CONTROL] if args.control else [])]
    print()
    print(
        f"{'server':<16}{'clients':>8}{'gen tok/s':>11}{'TTFT p50':>10}{'TTFT p95':>10}"
        f"{'TPOT p50':>10}{'interrupted':>13}"
    )
    for clients in levels:
        for label in labels:
            tok_s, ttft, tpot, bad = merged(label, clients)
            print(
                f"{label:<16}{clients:>8}{tok_s:>11.1f}{pct(ttft, 50):>9.2f}s{pct(ttft, 95):>9.2f}s"
                f"{pct(tpot, 50) * 1000:>8.0f}ms{bad:>13}"
            )
    # each round's servers ran back to back: their ratio is steadier than a ratio of means
    # when the machine's speed drifts between rounds (the median drops a disturbed round)
    for label in labels[1:]:
        print()
        print(
            f"{label + ' / llama-server':<30}{'clients':>8}{'gen tok/s':>11}{'TTFT p95':>10}"
            "   per round: tok/s ratios"
        )
        for clients in levels:
            ours, anchor = merged(label, clients), merged("llama-server", clients)
            paired = [
                a.tok_s / b.tok_s
                for a, b in zip(results[(label, clients)], results[("llama-server", clients)], strict=True)
            ]
            print(
                f"{'':<30}{clients:>8}{statistics.median(paired):>10.2f}x"
                f"{pct(ours[1], 95) / pct(anchor[1], 95):>9.2f}x   " + " ".join(f"{r:.2f}" for r in paired)
            )
    if args.control:
        print(f"({CONTROL} is started exactly as llama-server: its ratios are the machine's noise)")
    print()
    print(f"shared system prompt of ~{args.system_tokens} tokens: TTFT first -> second request")
    for label, (a, b) in prefix.items():
        print(f"  {label:<14}{a:6.2f} s -> {b:5.2f} s  ({b / a:.2f}x)")
    print(
        f"({args.rounds} round(s); {args.requests} streaming requests per client, "
        f"up to {args.max_tokens} tokens each; "
        "TPOT: time per output token after the first)"
    )


if __name__ == "__main__":
    main()
