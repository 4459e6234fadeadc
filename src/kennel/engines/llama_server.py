"""An external ``llama-server`` binary as a supervised engine: for a user's own CUDA, ROCm,
Vulkan or Metal build of llama.cpp. The LoadPlan becomes the same settings the in-process engine
gives llama.cpp's server core (``llamacpp_params.common_params``), as command-line flags."""

from __future__ import annotations

import os
import re
from pathlib import Path

from kennel.engines.base import LoadPlan, Memory
from kennel.engines.llamacpp_log import LlamaBuffers
from kennel.engines.llamacpp_params import physical_cores
from kennel.engines.llamacpp_tools import find_tool
from kennel.engines.process import EngineProcess
from kennel.engines.remote import ProcessEngine
from kennel.errors import ModelLoadError

BINARY_ENV = "KENNEL_LLAMA_SERVER"
# llama.cpp's log verbosity at which it prints its buffer sizes (the memory it holds)
_VERBOSITY_BUFFERS = 4
_LEVEL = re.compile(r"^\d+\.\d+\.\d+\.\d+ ([DIWE]) ")


def llama_server_binary(configured: Path | None = None) -> Path:
    """The llama-server to run: the configured one, $KENNEL_LLAMA_SERVER, else the one
    scripts/install.sh built beside this Python, else one on PATH."""
    for candidate in (configured, os.environ.get(BINARY_ENV)):
        if candidate:
            path = Path(candidate).expanduser()
            if not (path.is_file() and os.access(path, os.X_OK)):
                raise ModelLoadError(
                    f"{path} is not an executable llama-server.",
                    hint=f"Give the path of a llama-server binary (--llama-server-bin or ${BINARY_ENV}).",
                )
            return path
    found = find_tool("llama-server")
    if found is None:
        raise ModelLoadError(
            "No llama-server binary was found.",
            hint=(
                "Run scripts/install.sh (it builds one), or give yours with --llama-server-bin "
                f"or ${BINARY_ENV}."
            ),
        )
    return found


def llama_server_args(plan: LoadPlan, *, port: int) -> list[str]:
    """llama-server's flags for ``plan`` (without the binary). The API key goes in the
    environment (LLAMA_API_KEY): a command line is readable by every user of the machine."""
    args = ["-m", str(plan.model), "--host", "127.0.0.1", "--port", str(port)]
    args += ["-np", str(plan.parallel), "-c", str(plan.context * plan.parallel)]
    if plan.kv_unified:
        args.append("-kvu")
        if plan.parallel > 1:
            args += ["--kv-unified-per-slot", str(plan.context)]
    else:
        args.append("-no-kvu")
    threads = plan.threads or physical_cores()
    args += ["-t", str(threads), "-tb", str(threads), "-b", str(plan.batch), "-ub", str(plan.ubatch)]
    args += ["-ngl", str(plan.gpu_layers), "--fit", "off"]  # kennel planned the placement
    if plan.gpu_split:
        args += ["-ts", ",".join(f"{s:g}" for s in plan.gpu_split)]
    args += [
        "-fa",
        "on" if plan.flash_attn else "off",
        "-ctk",
        plan.kv_cache_type,
        "-ctv",
        plan.kv_cache_type,
    ]
    if plan.swa_full:
        args.append("--swa-full")
    if plan.adapters:
        args += ["--lora-scaled", ",".join(f"{a.path}:{a.scale:g}" for a in plan.adapters)]
    if plan.chat_template:
        args += ["--chat-template", plan.chat_template]
    if plan.task != "generate":
        args.append("--embedding")
        pooling = "rank" if plan.task == "rerank" and plan.pooling == "model" else plan.pooling
        if pooling != "model":
            args += ["--pooling", pooling]
        if plan.task == "rerank":
            args.append("--reranking")
    args += ["--cache-ram", str(plan.prompt_cache_bytes >> 20)]
    # a full context ends the answer (finish_reason "length"), never drops the prompt
    # --log-prefix: each line says its level, so debug lines (which may quote requests) are dropped
    args += ["--no-context-shift", "--metrics", "--jinja", "-lv", str(_VERBOSITY_BUFFERS)]
    args += ["--log-prefix", "--log-colors", "off"]
    if not plan.warmup:
        args.append("--no-warmup")
    return args


class LlamaServerEngine(ProcessEngine):
    kind = "llama-server"
    health_path = "/health"
    busy_metric = re.compile(r"^llamacpp:requests_processing\s+(\S+)", re.M)

    def __init__(
        self, plan: LoadPlan, *, name: str, binary: Path | None = None, log_dir: Path | None = None
    ) -> None:
        super().__init__(plan, name=name, log_dir=log_dir)
        self.binary = llama_server_binary(binary)
        self._debug = False  # the level of the last prefixed log line

    async def busy(self) -> int:
        # /slots is read when asked; llamacpp:requests_processing lags behind a step
        r = await self._use("metrics", True).get("/slots")
        slots = r.json() if r.status_code == 200 else []
        return sum(1 for slot in slots if isinstance(slot, dict) and slot.get("is_processing"))

    def command(self, port: int, api_key: str) -> tuple[list[str], dict[str, str] | None]:
        env = {**os.environ, "LLAMA_API_KEY": api_key}
        return [str(self.binary), *llama_server_args(self.plan, port=port)], env

    def drop_line(self, line: str) -> bool:
        # "0.00.012.345 D ..." is llama.cpp's debug level; its continuation lines carry no prefix
        m = _LEVEL.match(line)
        if m:
            self._debug = m.group(1) == "D"
        return self._debug

    def measure_memory(self, process: EngineProcess) -> Memory | None:
        # the same llama.cpp prints the same buffer lines as in process; the prompt cache is
        # allocated as prompts are saved, so it counts at its limit
        buffers = LlamaBuffers.from_log("\n".join(process.load_lines))
        if buffers.found:
            return buffers.memory() + Memory(ram=self.plan.prompt_cache_bytes)
        return super().measure_memory(process)
