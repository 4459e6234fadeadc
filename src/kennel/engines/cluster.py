"""One model across several machines: the layout vLLM runs it with over a Ray cluster, and the
commands that start it.

kennel does not distribute a model itself: vLLM does, with tensor parallelism inside a machine
(fast links between its GPUs) and pipeline parallelism across machines (only activations cross
the network). kennel picks the smallest layout that fits from `kennel fit`'s figures: every GPU
of a machine in one tensor-parallel group, and as few machines as hold the weights and the KV
cache, with the memory each GPU is expected to hold.
"""

from __future__ import annotations

import shlex
import socket
from dataclasses import dataclass

from kennel.errors import InvalidOptionError
from kennel.fit.estimate import ENGINE_ACTIVATIONS, ENGINE_UTILIZATION
from kennel.fit.memory import BACKEND_OVERHEAD
from kennel.units import fmt_bytes

RAY_PORT = 6379


@dataclass(frozen=True)
class Layout:
    nodes: int  # machines used: the pipeline-parallel size
    gpus_per_node: int  # the tensor-parallel size
    per_gpu: int  # bytes each GPU is expected to hold
    gpu_budget: int  # bytes vLLM may use on each GPU

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    def describe(self) -> str:
        return (
            f"{self.nodes} machine{'s' if self.nodes != 1 else ''} x {self.gpus_per_node} GPU"
            f"{'s' if self.gpus_per_node != 1 else ''} (tensor parallel {self.gpus_per_node}, pipeline "
            f"parallel {self.nodes}): {fmt_bytes(self.per_gpu)} per GPU of "
            f"{fmt_bytes(self.gpu_budget)} usable"
        )


def plan_layout(
    *, weights: int, kv_cache: int, gpu_memory: int, gpus_per_node: int, max_nodes: int
) -> Layout:
    """The fewest machines (up to ``max_nodes``) whose GPUs hold the model: weights and KV cache
    split over every GPU, plus each GPU's own activations and runtime."""
    if gpus_per_node < 1 or gpu_memory <= 0:
        raise InvalidOptionError(
            "vLLM across machines needs NVIDIA or AMD GPUs, and this machine has none.",
            hint="Run this on the head node of the GPU cluster (each node the same GPUs).",
        )
    budget = int(gpu_memory * ENGINE_UTILIZATION)
    fixed = ENGINE_ACTIVATIONS + BACKEND_OVERHEAD["cuda"]
    for nodes in range(1, max_nodes + 1):
        per_gpu = (weights + kv_cache) // (nodes * gpus_per_node) + fixed
        if per_gpu <= budget:
            return Layout(nodes, gpus_per_node, per_gpu, budget)
    need = (weights + kv_cache) // (max_nodes * gpus_per_node) + fixed
    raise InvalidOptionError(
        f"The model does not fit {max_nodes} machines of {gpus_per_node} GPUs: each GPU would hold "
        f"{fmt_bytes(need)} of {fmt_bytes(budget)} usable.",
        hint="Use more machines (--nodes), a smaller context (--ctx) or fewer requests at once (--parallel), "
        "or a quantized model (AWQ, GPTQ, FP8).",
    )


def this_address() -> str:
    """This machine's address on its network, for the workers' `ray start --address`: the first
    IPv4 address of an interface that is up, loopback aside (read locally; nothing is sent)."""
    import psutil

    stats = psutil.net_if_stats()
    for name, addrs in psutil.net_if_addrs().items():
        if name in stats and not stats[name].isup:
            continue
        for a in addrs:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                return str(a.address)
    return "HEAD_IP"


def cluster_commands(layout: Layout, vllm_argv: list[str], *, head: str = "HEAD_IP") -> list[tuple[str, str]]:
    """(where, command) to start the Ray cluster and vLLM over it; on one machine, vLLM alone."""
    serve = [*vllm_argv, "--tensor-parallel-size", str(layout.gpus_per_node)]
    if layout.nodes == 1:
        return [("on this machine (one is enough: no Ray needed)", _join(serve))]
    serve += ["--pipeline-parallel-size", str(layout.nodes), "--distributed-executor-backend", "ray"]
    return [
        ("on the head node (this machine)", f"ray start --head --port {RAY_PORT}"),
        (
            f"on each of the other {layout.nodes - 1} machine{'s' if layout.nodes > 2 else ''} "
            "(same GPUs, same vLLM, the model at the same path)",
            f"ray start --address {head}:{RAY_PORT}",
        ),
        ("then on the head node", _join(serve)),
    ]


def _join(argv: list[str]) -> str:
    # shell-quoted, except a $VARIABLE placeholder the shell should expand
    return " ".join(a if a.startswith("$") else shlex.quote(a) for a in argv)
