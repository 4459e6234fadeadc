"""Which engine runs a model: the kinds kennel has, ``auto``'s rule, and building one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from kennel.engines.base import Engine, LoadPlan
from kennel.engines.llamacpp_log import LoadLog
from kennel.errors import InvalidOptionError

KINDS = ("llamacpp", "llama-server", "vllm")


def resolve_kind(requested: str, model: Path) -> str:
    """``auto``: llama.cpp in process for a GGUF, vLLM for a transformers (safetensors) folder."""
    gguf = model.suffix == ".gguf" or (model.is_file() and _magic(model) == b"GGUF")
    if requested == "auto":
        return "llamacpp" if gguf else "vllm"
    if requested not in KINDS:
        raise InvalidOptionError(
            f"Unknown engine {requested!r}.", hint=f"Use one of: auto, {', '.join(KINDS)}."
        )
    if requested == "vllm" and gguf:
        raise InvalidOptionError(
            f"{model.name} is a GGUF; kennel serves GGUF files with llama.cpp.",
            hint="Use engine llamacpp or llama-server for it, or give vLLM a safetensors model folder.",
        )
    if requested != "vllm" and not gguf:
        raise InvalidOptionError(
            f"{model} is not a GGUF file; llama.cpp engines need one.",
            hint="Serve a transformers (safetensors) folder with engine vllm.",
        )
    return requested


def _magic(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(4)


def engine_factory(
    *,
    llama_server_bin: Path | None = None,
    vllm_python: Path | None = None,
    ready_timeout: float = 300.0,
    load_log: LoadLog | None = None,
    vllm_tool_parser: str | None = None,
    log_dir: Path | None = None,
) -> Callable[[str, LoadPlan, str], Engine]:
    """A function (kind, plan, name) -> Engine, with the server's engine settings bound."""

    def make(kind: str, plan: LoadPlan, name: str) -> Engine:
        if kind == "llama-server":
            from kennel.engines.llama_server import LlamaServerEngine

            engine = LlamaServerEngine(plan, name=name, binary=llama_server_bin, log_dir=log_dir)
            engine.ready_timeout = ready_timeout
            return engine
        if kind == "vllm":
            from kennel.engines.vllm import VllmEngine

            vllm = VllmEngine(
                plan, name=name, python=vllm_python, tool_parser=vllm_tool_parser, log_dir=log_dir
            )
            vllm.ready_timeout = ready_timeout
            return vllm
        from kennel.engines.llamacpp import LlamaCppEngine

        return LlamaCppEngine(plan, name=name, load_log=load_log)

    return make
