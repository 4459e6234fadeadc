"""One model across machines: the smallest vLLM layout that fits, and the commands that start it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from kennel.engines.base import LoadPlan
from kennel.engines.cluster import cluster_commands, plan_layout
from kennel.engines.vllm import vllm_args
from kennel.errors import InvalidOptionError
from tests.hfconfig import TINY_LLAMA_CONFIG

GB = 10**9
RTX4090 = 24 * 2**30


def test_the_fewest_machines_that_hold_the_model() -> None:
    # a 70B model at 4 bits (~40 GB) with 10 GB of KV cache, on machines of two 24 GiB GPUs
    layout = plan_layout(weights=40 * GB, kv_cache=10 * GB, gpu_memory=RTX4090, gpus_per_node=2, max_nodes=4)
    assert (layout.nodes, layout.gpus_per_node, layout.gpus) == (2, 2, 4)
    assert layout.per_gpu <= layout.gpu_budget < RTX4090
    one = plan_layout(weights=8 * GB, kv_cache=2 * GB, gpu_memory=RTX4090, gpus_per_node=2, max_nodes=4)
    assert one.nodes == 1  # fits one machine: no pipeline across the network
    assert "2 machines x 2 GPUs (tensor parallel 2, pipeline parallel 2)" in layout.describe()


def test_too_big_or_no_gpu_says_what_to_do() -> None:
    with pytest.raises(InvalidOptionError, match="does not fit 2 machines") as err:
        plan_layout(weights=400 * GB, kv_cache=0, gpu_memory=RTX4090, gpus_per_node=2, max_nodes=2)
    assert "--nodes" in (err.value.hint or "")
    with pytest.raises(InvalidOptionError, match="needs NVIDIA or AMD GPUs"):
        plan_layout(weights=GB, kv_cache=0, gpu_memory=0, gpus_per_node=0, max_nodes=2)


def test_commands_start_ray_then_vllm_with_both_parallel_sizes(tmp_path: Path) -> None:
    layout = plan_layout(weights=40 * GB, kv_cache=10 * GB, gpu_memory=RTX4090, gpus_per_node=2, max_nodes=4)
    argv = [
        "python",
        "-m",
        "vllm.entrypoints.openai.api_server",
        *vllm_args(LoadPlan(model=tmp_path, context=4096, parallel=8), name="big", port=8000),
    ]
    steps = cluster_commands(layout, argv, head="10.0.0.5")
    single = cluster_commands(
        plan_layout(weights=GB, kv_cache=GB, gpu_memory=RTX4090, gpus_per_node=1, max_nodes=4), argv
    )
    assert len(single) == 1 and "ray start" not in single[0][1] and "--tensor-parallel-size 1" in single[0][1]
    assert [s[1].split()[:2] for s in steps] == [["ray", "start"], ["ray", "start"], ["python", "-m"]]
    assert "--head" in steps[0][1] and "--address 10.0.0.5:6379" in steps[1][1]
    serve = steps[2][1]
    for flag in (
        "--tensor-parallel-size 2",
        "--pipeline-parallel-size 2",
        "--distributed-executor-backend ray",
    ):
        assert flag in serve
    # the engine itself passes the same layout when kennel starts vLLM on the cluster
    planned = vllm_args(
        LoadPlan(model=tmp_path, gpu_layers=81, gpu_split=(1.0, 1.0), pipeline_parallel=2),
        name="big",
        port=1,
    )
    assert " ".join(planned).count("--pipeline-parallel-size 2") == 1


def test_serve_nodes_on_a_machine_without_gpus_is_a_usage_error(tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY_LLAMA_CONFIG))
    (folder / "model.safetensors").write_bytes(bytes(1024))
    env = {**os.environ, "KENNEL_HOME": str(tmp_path / "home")}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "kennel.cli.main",
            "serve",
            "--model",
            str(folder),
            "--nodes",
            "2",
            "--port",
            port,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 2 and "needs NVIDIA or AMD GPUs" in r.stderr, r.stderr
