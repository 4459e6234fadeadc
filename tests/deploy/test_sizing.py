"""Sizing in `kennel deploy k8s` is `kennel fit`'s: the pod's memory is fit's figure for the same
model x quant x ctx x parallel on the same hardware plus kennel's own, the replicas come from the
fit speed model, and a model that does not fit says so with a hint."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from gguf import LlamaFileType
from typer.testing import CliRunner

from kennel.catalog.resolve import resolve
from kennel.cli.main import app
from kennel.deploy.scale import Load, Replicas, scale_out
from kennel.deploy.sizing import KENNEL_OVERHEAD, PROMPT_CACHE_MIN, Throughput
from kennel.errors import InvalidOptionError
from kennel.fit import calibration
from kennel.fit.estimate import default_run, size_option
from kennel.fit.memory import kv_cache_per_layer
from kennel.fit.quant import scheme, tensor_types
from kennel.fit.serving import serve_parallel
from kennel.fit.speed import Calibration, decode, prefill
from kennel.fit.throughput import CPU_DECODE_BATCH_EFFICIENCY
from kennel.hardware.whatif import what_if
from kennel.settings import KennelHome
from kennel.units import MiB
from tests.cli.test_cli import _bad
from tests.deploy.validate import deploy, deploy_json, documents


def _fit_json(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["fit", *args, "--no-engines", "--json"])
    assert result.exit_code == 0, result.output
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def _fit_sizes(model: str, gpu: str | None, quant: str, cpus: int = 4) -> tuple[int, int, int, int]:
    """(parallel, fit total, RAM part, prompt cache) from the fit API for kennel serve's run."""
    shape = resolve(model).shape
    hw = what_if(gpu=gpu, cpu_cores=cpus)
    base = default_run(shape).validated(shape)
    ftype = scheme(quant).ftype
    types = None if shape.source_kind == "gguf" else tensor_types(shape, LlamaFileType(ftype or 0))
    parallel = serve_parallel(shape, hw, base, types)
    run = replace(base, parallel=parallel)
    sized = size_option(shape, hw, run, types)
    ram = sum(d.used for d in sized.placement.devices if d.name == "RAM")
    cache = max(sum(kv_cache_per_layer(shape, run)) // parallel, PROMPT_CACHE_MIN)
    return parallel, sized.memory.total, ram, cache


CASES = [
    pytest.param("qwen2.5-0.5b", None, None, id="qwen2.5-0.5b-cpu"),
    pytest.param("llama-3.1-8b", "L4", None, id="llama-3.1-8b-L4"),
    pytest.param("qwen2.5-7b", "T4", "Q4_K_M", id="qwen2.5-7b-T4-Q4_K_M"),
]


@pytest.mark.parametrize(("model", "gpu", "quant"), CASES)
def test_memory_is_fits_total_plus_kennels_own(model: str, gpu: str | None, quant: str | None) -> None:
    args = ["--model", model, "--replicas", "1..3"]
    args += ["--gpu", gpu] if gpu else []
    args += ["--quant", quant] if quant else []
    doc = deploy_json(*args)
    parallel, total, ram, cache = _fit_sizes(model, gpu, doc["quant"])
    assert doc["parallel"] == parallel
    mem = doc["memory"]
    assert mem["fit_total_bytes"] == total
    assert mem["ram_bytes"] == ram and mem["prompt_cache_bytes"] == cache
    expected = math.ceil((ram + cache + KENNEL_OVERHEAD) / MiB) * MiB
    assert mem["request_bytes"] == expected
    # `kennel fit` itself, asked about the same quantization on the same hardware, agrees
    fit = _fit_json(model, "--quant", doc["quant"], "--cpu-cores", "4", *(["--gpu", gpu] if gpu else []))
    assert fit["serve"]["memory_bytes"] == total and fit["serve"]["parallel"] == parallel
    # and the Deployment asks for exactly that
    out, _ = deploy(*args)
    deployment = next(d for d in documents(out) if d["kind"] == "Deployment")
    resources = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"]["memory"] == resources["limits"]["memory"] == f"{expected // MiB}Mi"
    if gpu:
        assert 0 < ram < total  # the weights are on the GPU, not in the pod's memory


def test_a_local_gguf_is_sized_from_its_file(make_model: Any) -> None:
    path, _ = make_model(n_layer=2, n_embd=64, n_head=2, n_ff=64, n_vocab=300)
    doc = deploy_json("--model", str(path), "--replicas", "1")
    assert doc["file"] == path.name and doc["file_size_bytes"] == path.stat().st_size
    parallel, total, ram, cache = _fit_sizes(str(path), None, doc["quant"])
    assert (doc["parallel"], doc["memory"]["fit_total_bytes"]) == (parallel, total)
    assert doc["memory"]["request_bytes"] == math.ceil((ram + cache + KENNEL_OVERHEAD) / MiB) * MiB


def test_replicas_for_a_target_rate_come_from_the_fit_speed_model() -> None:
    doc = deploy_json("--model", "qwen2.5-0.5b", "--replicas", "2..3", "--target-rps", "4")
    shape = resolve("qwen2.5-0.5b").shape
    hw = what_if(cpu_cores=4)
    run = replace(default_run(shape).validated(shape), parallel=doc["parallel"])
    sized = size_option(shape, hw, run, tensor_types(shape, LlamaFileType(scheme(doc["quant"]).ftype or 0)))
    fill = doc["parallel"] * (512 + 256 // 2)  # every sequence half way through its answer
    step = decode(sized.parts, sized.placement, hw, sized.inputs, Calibration(), fill=fill).expected
    pre = prefill(sized.parts, sized.placement, hw, sized.inputs, Calibration(), prompt=512).expected
    one = decode(sized.parts, sized.placement, hw, sized.inputs, Calibration(), fill=512 + 256 // 2).expected
    # on a CPU a batch decodes at most a quarter of the prefill rate, and never slower than one stream
    aggregate = min(doc["parallel"] * step, max(pre * CPU_DECODE_BATCH_EFFICIENCY, one))
    per_replica = 1 / (512 / pre + 256 / aggregate)
    tp = doc["throughput"]
    assert tp["aggregate_tok_s"] == pytest.approx(aggregate)
    assert tp["rps_per_replica"] == pytest.approx(per_replica)
    needed = math.ceil(4 / per_replica)
    assert doc["scale"]["needed"] == needed and needed > 3
    assert doc["replicas"] == {"min": 2, "max": needed} and doc["scale"]["raised"]
    # the arithmetic is in the file heads and on the terminal
    out, err = deploy("--model", "qwen2.5-0.5b", "--replicas", "2..3", "--target-rps", "4")
    line = f"replicas = ceil(4.00 / {per_replica:.2f}) = {needed}"
    assert line in err and "is raised to 2.." in err
    scaled = next(d for d in documents(out) if d["kind"] == "ScaledObject")
    assert scaled["spec"]["maxReplicaCount"] == needed and scaled["spec"]["minReplicaCount"] == 2
    for head in out.split("\n---\n"):
        if "kind: ScaledObject" in head or "kind: Deployment" in head:
            assert line in head.split("apiVersion:")[0]


def test_users_and_think_time_follow_littles_law() -> None:
    doc = deploy_json(
        "--model",
        "llama-3.1-8b",
        "--gpu",
        "L4",
        "--replicas",
        "1..40",
        "--users",
        "300",
        "--think-time",
        "20",
    )
    tp = doc["throughput"]
    rps = 300 / (20 + tp["response_s"])
    assert doc["scale"]["rps"] == pytest.approx(rps)
    assert doc["scale"]["needed"] == math.ceil(rps / tp["rps_per_replica"])
    assert doc["replicas"] == {"min": 1, "max": 40} and not doc["scale"]["raised"]


def test_scale_out_arithmetic() -> None:
    tp = Throughput(
        parallel=4, prompt_tokens=500, output_tokens=200, prefill_tok_s=1000, step_per_s=25, calibrated=False
    )
    assert tp.aggregate_tok_s == 100 and not tp.compute_bound
    assert tp.busy_s == pytest.approx(0.5 + 2.0) and tp.rps == pytest.approx(0.4)
    assert tp.response_s == pytest.approx(0.5 + 200 / 25)
    s = scale_out(Load(target_rps=2.0), tp, Replicas(1, 3))
    assert (s.needed, s.replicas, s.raised) == (5, Replicas(1, 5), True)
    s = scale_out(Load(target_rps=1.2), tp, Replicas(2, 8))
    assert (s.needed, s.replicas, s.raised) == (3, Replicas(2, 8), False)
    capped = replace(tp, prefill_tok_s=60)
    assert capped.compute_bound and capped.aggregate_tok_s == 60


def test_replica_ranges_and_loads_are_checked() -> None:
    assert Replicas.parse("1..4") == Replicas(1, 4) and Replicas.parse("3") == Replicas(3, 3)
    for bad in ("4..1", "0..2", "a..b", "1..", ""):
        with pytest.raises(InvalidOptionError):
            Replicas.parse(bad)
    with pytest.raises(InvalidOptionError):
        Load(target_rps=1, users=3, think_time_s=2)
    with pytest.raises(InvalidOptionError):
        Load(users=3)
    with pytest.raises(InvalidOptionError):
        Load(target_rps=0)


def test_measured_calibration_is_used_as_kennel_fit_uses_it(tmp_path: Path, kennel_home: Path) -> None:
    """A node's saved profile (`kennel hw --json`) with a measured calibration in KENNEL_HOME: the
    replica speeds are the calibrated ones, as `kennel fit` gives them there."""
    node = replace(what_if(cpu_cores=4), source="probed")
    profile = tmp_path / "node.json"
    profile.write_text(json.dumps(node.to_dict()))
    args = ("--model", "qwen2.5-0.5b", "--replicas", "1", "--hardware", str(profile), "--quant", "Q8_0")
    before = deploy_json(*args)["throughput"]
    assert not before["calibrated"]
    calibration.record(
        KennelHome(kennel_home), node, "cpu", quant="Q8_0", decode_ratio=0.5, prefill_ratio=0.5
    )
    after = deploy_json(*args)["throughput"]
    assert after["calibrated"]
    assert after["rps_per_replica"] == pytest.approx(before["rps_per_replica"] * 0.5)


def test_a_model_that_does_not_fit_the_gpu_says_what_to_do() -> None:
    err = _bad("deploy", "k8s", "--model", "llama-3.1-70b", "--gpu", "L4", "--replicas", "1..2")
    assert "does not fit in the GPU of L4" in err
    assert "hint:" in err and "--quant" in err and "kennel fit llama-3.1-70b --gpu 'L4'" in err
    err = _bad("deploy", "k8s", "--model", "llama-3.1-8b", "--gpu", "T4", "--quant", "Q8_0", "--ctx", "128k")
    assert "does not fit" in err and "hint:" in err


def test_bad_options_are_one_line_errors(tmp_path: Path) -> None:
    assert "not a range" in _bad("deploy", "k8s", "--model", "qwen2.5-0.5b", "--replicas", "4..1")
    assert "go together" in _bad("deploy", "k8s", "--model", "qwen2.5-0.5b", "--users", "10")
    assert "vLLM" in _bad("deploy", "k8s", "--model", "qwen2.5-0.5b", "--quant", "AWQ")
    assert "bundle" in _bad("deploy", "k8s", "--model", "qwen2.5-0.5b", "--bundle", str(tmp_path / "x.zip"))
    # no image of kennel's is built for AMD GPUs: the user brings one
    assert "--image" in _bad("deploy", "k8s", "--model", "qwen2.5-7b", "--gpu", "MI300X")


def test_serve_yaml_carries_the_sized_figures() -> None:
    doc = deploy_json("--model", "qwen2.5-0.5b", "--replicas", "1", "--cpus", "6", "--ctx", "4k")
    out, _ = deploy("--model", "qwen2.5-0.5b", "--replicas", "1", "--cpus", "6", "--ctx", "4k")
    config = next(d for d in documents(out) if d["kind"] == "ConfigMap")
    (entry,) = yaml.safe_load(config["data"]["serve.yaml"])["models"]
    assert (entry["ctx"], entry["threads"], entry["parallel"]) == (4096, 6, doc["parallel"])
    assert entry["prompt_cache_mib"] * MiB == doc["memory"]["prompt_cache_bytes"]
