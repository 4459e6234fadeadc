"""How `kennel serve` runs a model, decided once: `kennel fit` and `kennel serve` show and use the
same number of parallel requests and the same threads, and more requests never push layers off
the GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from gguf import LlamaFileType

from kennel.catalog.entries import get
from kennel.fit.estimate import default_run, estimate, size_option
from kennel.fit.quant import tensor_types
from kennel.fit.serving import MAX_PARALLEL, default_threads, serve_parallel, with_threads
from kennel.hardware.whatif import what_if
from kennel.server.models import model_spec
from kennel.settings import KennelHome

GiB = 2**30


def test_threads_are_every_physical_core_and_slow_the_estimate_when_fewer() -> None:
    hw = what_if(ram=64 * GiB, cpu_cores=16)
    assert default_threads(hw) == 16 and with_threads(hw, None) is hw and with_threads(hw, 32) is hw
    shape = get("qwen2.5-7b").shape()
    run = default_run(shape)
    full = estimate(shape, hw, run, include_engines=False, only=("Q4_K_M",)).options[0]
    four = estimate(shape, with_threads(hw, 4), run, include_engines=False, only=("Q4_K_M",)).options[0]
    assert four.prefill_tok_s.expected < full.prefill_tok_s.expected  # prefill is compute-bound
    assert four.decode_tok_s.expected <= full.decode_tok_s.expected


def test_parallel_fills_memory_but_never_costs_gpu_layers() -> None:
    shape = get("llama-3.1-8b").shape()
    q4 = tensor_types(shape, LlamaFileType.MOSTLY_Q4_K_M)  # 4.6 GiB of weights
    run = default_run(shape, ctx=16384)  # 2 GiB of F16 cache per request
    roomy = what_if(ram=64 * GiB, cpu_cores=8)
    assert serve_parallel(shape, roomy, run, q4) == MAX_PARALLEL
    # an AVX2 CPU also holds llama.cpp's repacked copy of the Q4_K tensors (3.1 GiB)
    tight = what_if(ram=18 * GiB, cpu_cores=8)
    n = serve_parallel(shape, tight, run, q4)
    assert 1 < n < MAX_PARALLEL
    assert size_option(shape, tight, replace(run, parallel=n), q4).placement.fits == "cpu"
    assert size_option(shape, tight, replace(run, parallel=n + 1), q4).placement.fits == "no"
    gpu = what_if(gpu="RTX 4090", ram=64 * GiB)  # 24 GB: room for a few 32k requests beside the weights
    run = replace(run, ctx=32768)
    one = size_option(shape, gpu, run, q4).placement
    m = serve_parallel(shape, gpu, run, q4)
    at_m = size_option(shape, gpu, replace(run, parallel=m), q4).placement
    assert at_m.fits == one.fits == "gpu" and at_m.gpu_layers == one.gpu_layers and 1 < m < MAX_PARALLEL
    more = size_option(shape, gpu, replace(run, parallel=m + 1), q4).placement
    assert more.fits != "gpu" or more.gpu_layers < one.gpu_layers  # one more would cost GPU layers


def test_fit_and_serve_agree(make_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`kennel fit FILE --json` says how serve would run it; serve's own plan is the same."""
    # 16 KiB of cache per token: a 32k context is 512 MiB a request, so 3 GiB of RAM holds a few
    path, _ = make_model(n_layer=4, n_embd=1024, n_head=16, n_ff=1024, n_vocab=2000, n_ctx_train=32768)
    args = ["--ram", "3G", "--cpu-cores", "4", "--ctx", "32768"]
    out = subprocess.run(
        [sys.executable, "-m", "kennel.cli.main", "fit", str(path), "--json", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    serve = json.loads(out.stdout)["serve"]
    hw = what_if(ram=3 * GiB, cpu_cores=4)
    spec = model_spec(str(path), home=KennelHome(tmp_path / "h"), hw=hw, ctx=32768)
    assert (spec.plan.parallel, spec.plan.context, spec.plan.threads) == (
        serve["parallel"],
        serve["context"],
        serve["threads"],
    )
    assert serve["threads"] == 4 and 1 < serve["parallel"] < MAX_PARALLEL  # memory, not the cap, decided
    pinned = model_spec(str(path), home=KennelHome(tmp_path / "h"), hw=hw, ctx=32768, parallel=2, threads=1)
    assert (pinned.plan.parallel, pinned.plan.threads) == (2, 1)
