"""Load a GGUF in llama.cpp exactly as kennel's engine would, and report what llama.cpp says.

Two uses: the buffer sizes llama.cpp logs while loading (model, KV cache, compute and output
buffers, per backend), which is the ground truth the fit estimate is tested against; and timed
prompt processing and generation, for ``kennel fit --measure``. Timings are llama.cpp's own
(the ``timings`` of its completion response), so they count what llama.cpp did, not Python.

Each run happens in a child process (``python -m kennel.fit.llamacpp_run``): its stderr is
llama.cpp's log, a model too big for the machine kills the child rather than kennel, and every
run starts from a fresh llama.cpp.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kennel.engines.base import LoadPlan
from kennel.engines.llamacpp_log import LlamaBuffers
from kennel.errors import MeasureError
from kennel.fit.memory import RunConfig, cparams
from kennel.model.shape import ModelShape

__all__ = ["BenchResult", "LlamaBuffers", "bench", "load_buffers"]


@dataclass(frozen=True)
class BenchResult:
    buffers: LlamaBuffers
    prompt_tokens: int
    prompt_seconds: float
    gen_tokens: int
    gen_seconds: float
    load_seconds: float

    @property
    def prefill_tok_s(self) -> float:
        return self.prompt_tokens / self.prompt_seconds if self.prompt_seconds else 0.0

    @property
    def decode_tok_s(self) -> float:
        return self.gen_tokens / self.gen_seconds if self.gen_seconds else 0.0


def plan_for(path: Path, run: RunConfig, *, gpu_layers: int = 0, threads: int | None = None) -> LoadPlan:
    """The engine's LoadPlan for a fit RunConfig, so a measured load is a served load."""
    return LoadPlan(
        model=path,
        context=run.ctx,
        parallel=run.parallel,
        threads=threads,
        gpu_layers=gpu_layers,
        kv_cache_type=run.kv_type,
        kv_unified=run.kv_unified,
        swa_full=run.swa_full,
        flash_attn=run.flash_attn,
        batch=run.n_batch,
        ubatch=run.n_ubatch,
        warmup=False,
    )


def _run_child(job: dict[str, Any], timeout: float) -> tuple[dict[str, Any], str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "kennel.fit.llamacpp_run", json.dumps(job)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise MeasureError(f"llama.cpp did not finish within {timeout:.0f} s.") from exc
    log = done.stderr
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = " ".join(log.strip().splitlines()[-3:])[-400:]
        killed = " (killed: out of memory?)" if done.returncode < 0 else ""
        raise MeasureError(
            f"llama.cpp could not load {Path(job['path']).name}{killed}.", hint=f"The log said: {tail}"
        )
    return json.loads(lines[-1]), log


def load_buffers(path: Path, shape: ModelShape, run: RunConfig, *, n_gpu_layers: int = 0) -> LlamaBuffers:
    """What llama.cpp allocates for ``path`` under ``run``: the sizes it logs."""
    cparams(shape, run)  # validates the same rules kennel plans with
    if not path.exists():
        raise MeasureError(f"No model file at {path}.")
    job = {"path": str(path), "plan": _plan_json(plan_for(path, run, gpu_layers=n_gpu_layers))}
    _, log = _run_child(job, timeout=300)
    return LlamaBuffers.from_log(log)


def bench(
    path: Path,
    shape: ModelShape,
    run: RunConfig,
    *,
    n_gpu_layers: int = 0,
    prompt_tokens: int = 512,
    gen_tokens: int = 64,
    threads: int | None = None,
    seed: int = 0,
) -> BenchResult:
    """Time one prompt of ``prompt_tokens`` and ``gen_tokens`` generated tokens after it."""
    cparams(shape, run)
    prompt_tokens = min(prompt_tokens, run.n_batch, run.ctx - gen_tokens - 1)
    if prompt_tokens < 1:
        raise MeasureError("The context is too short to measure; use --ctx 1024 or more.")
    if not path.exists():
        raise MeasureError(f"No model file at {path}.")
    rng = random.Random(seed)
    vocab = max(shape.n_vocab, 260)
    job = {
        "path": str(path),
        "plan": _plan_json(plan_for(path, run, gpu_layers=n_gpu_layers, threads=threads)),
        "prompt": [rng.randrange(3, vocab) for _ in range(prompt_tokens)],
        "gen": gen_tokens,
    }
    out, log = _run_child(job, timeout=3600)
    t = out["timings"]
    return BenchResult(
        buffers=LlamaBuffers.from_log(log),
        prompt_tokens=int(t["prompt_n"]),
        prompt_seconds=float(t["prompt_ms"]) / 1000,
        gen_tokens=int(t["predicted_n"]),
        gen_seconds=float(t["predicted_ms"]) / 1000,
        load_seconds=float(out["load_seconds"]),
    )


def _plan_json(plan: LoadPlan) -> dict[str, Any]:
    d = asdict(plan)
    d["model"] = str(plan.model)
    return d


def _plan_from_json(d: dict[str, Any]) -> LoadPlan:
    return LoadPlan(**{**d, "model": Path(d["model"]), "gpu_split": tuple(d["gpu_split"]), "adapters": ()})


def _child(job: dict[str, Any]) -> dict[str, Any]:
    """In the child: load, warm up with one real decode, time the prompt and the generation."""
    from kennel.engines.llamacpp_params import VERBOSITY_BUFFERS, common_params, xllamacpp

    plan = _plan_from_json(job["plan"])
    with tempfile.TemporaryDirectory(prefix="kennel-bench-") as d:
        params = common_params(
            plan, socket=Path(d) / "llama.sock", api_key=secrets.token_hex(16), verbosity=VERBOSITY_BUFFERS
        )
        t0 = time.perf_counter()
        server = xllamacpp().Server(params)
        load_seconds = time.perf_counter() - t0
        # a first decode pages the weights in and, before destruction, makes sure llama.cpp's
        # loop is running (destroying a Server whose loop has not started yet can hang)
        first = server.handle_completions({"prompt": [1], "n_predict": 1, "cache_prompt": False})
        result: dict[str, Any] = {"load_seconds": load_seconds}
        if "error" in first:
            raise SystemExit(f"warm-up failed: {first['error']}")
        if job.get("prompt"):
            r = server.handle_completions(
                {
                    "prompt": job["prompt"],
                    "n_predict": job["gen"],
                    "ignore_eos": True,
                    "cache_prompt": False,
                    "temperature": 0.0,
                }
            )
            if "timings" not in r:
                raise SystemExit(f"timed run failed: {r}")
            result["timings"] = r["timings"]
        del server
    return result


if __name__ == "__main__":
    print(json.dumps(_child(json.loads(sys.argv[1]))), flush=True)
