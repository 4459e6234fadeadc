"""CPU weight repacking: the second copy llama.cpp makes of some weights when they run on the CPU.

llama.cpp's CPU backend offers "extra" buffer types ahead of the plain CPU one: CPU_REPACK
(ggml-cpu/repack.cpp) and, on builds compiled for Intel AMX, AMX. A weight lands in one when the
buffer supports the op the weight is used with (``weight_buft_supported``); it is then read from
the mapped file once, rearranged into interleaved rows for the SIMD kernels, and kept in a buffer
of its own (``ggml_nbytes`` per tensor, padded to 32 bytes). The mapped file still spans those
tensors, and their pages, read during the load, stay resident like the rest of the mapping: the
process holds both, so the copy is counted on top of the weights.

Which weights (llama.cpp in xllamacpp 2026.10.11549, ``ggml_repack_get_optimal_repack_type``):

- matrices multiplied with MUL_MAT (2-D) or MUL_MAT_ID (3-D, MoE experts); never the token
  embedding, which is read by row (GET_ROWS), norms or biases. A tied output layer multiplies by
  the embedding: llama.cpp then creates a second tensor for it in the repack buffer;
- of a type with a kernel for the build's CPU features, and a row count (ne[1]) that the kernel's
  row interleave divides:

  ======== ============================== =================================
  type     x86                            ARM
  ======== ============================== =================================
  Q4_0     AVX2, rows % 8                 NEON + i8mm or dotprod, rows % 4
  Q4_K     AVX2, rows % 8                 NEON + i8mm or dotprod, rows % 8
  IQ4_NL   AVX2, rows % 8                 NEON + dotprod, rows % 4
  MXFP4    AVX2, rows % 8                 NEON + dotprod, rows % 4
  Q2_K     AVX-512 (AVX512F), rows % 8    -
  Q5_K     -                              NEON + i8mm or dotprod, rows % 8
  Q6_K     -                              NEON + i8mm or dotprod, rows % 8
  Q8_0     -                              NEON + i8mm or dotprod, rows % 4
  Q1_0     -                              NEON + i8mm or dotprod, rows % 4
  ======== ============================== =================================

  (s390x VXE repacks Q4_0 too; RISC-V kernels need a 256-bit vector length kennel cannot see.)
  The features are the build's compile-time ones (``ggml_cpu_has_avx2`` is an ``#ifdef``): a
  portable build repacks nothing on an AVX2 CPU, so the build's system info beats the CPU flags;
- only where the CPU's buffer list is consulted: layers on a GPU use its buffers. And when a GPU
  backend with a pinned host buffer type (CUDA, ROCm, Vulkan, SYCL) is loaded, that host buffer
  comes first in the CPU's list (``make_cpu_buft_list``: ACCEL, GPU host, CPU extra, CPU), takes
  every CPU weight, and under mmap is swapped for the plain CPU buffer: nothing is repacked at all
  (llama.cpp's ``--no-host`` would change that; kennel never sets it). Metal has no host buffer,
  so on Apple Silicon the layers left on the CPU are repacked.

AMX buffers (Xeon 4th generation on, native builds) come before the repack one and take 2-D
matrices of Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K, IQ4_XS and F16 with rows % 32; kennel sizes them
as the tensor's bytes, which AMX's own packing may exceed slightly (not measured: no such CPU).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from kennel.fit.tensor_ops import LAYER_ZERO, Op, weight_op
from kennel.hardware.profile import HardwareProfile
from kennel.model.gguf_header import ggml_type_name, tensor_nbytes
from kennel.model.shape import ModelShape, layer_of

TENSOR_ALIGNMENT = 32  # the repack buffer's alignment: every tensor starts on a 32-byte boundary
# GPU backends whose pinned host buffer type is tried before the CPU's extra buffer types
HOST_BUFFER_BACKENDS = frozenset({"cuda", "rocm", "vulkan", "sycl"})
_HOST_BUFFER_DEVICE = re.compile(r"^(?:CUDA|ROCm|HIP|Vulkan|SYCL)\d*$")
_NUMBERED = re.compile(r"(?:^|\.)\d+(?:\.|$)")

# per type, each kernel llama.cpp has as (features it needs, row interleave); the first kernel whose
# features the build has and whose interleave divides the rows is used, so a tensor is repacked
# if any of them fits. (Q4_0's SVE kernel needs i8mm and rows % 8, which NEON + i8mm covers.)
_NEON_I8MM = frozenset({"NEON", "MATMUL_INT8"})
_NEON_DOT = frozenset({"NEON", "DOTPROD"})
_AVX2 = frozenset({"AVX2"})
_KERNELS: dict[str, tuple[tuple[frozenset[str], int], ...]] = {
    "Q4_0": ((_AVX2, 8), (_NEON_I8MM, 4), (_NEON_DOT, 4), (frozenset({"VXE"}), 4)),
    "Q4_K": ((_AVX2, 8), (_NEON_I8MM, 8), (_NEON_DOT, 8)),
    "Q2_K": ((frozenset({"AVX512"}), 8),),
    "Q5_K": ((_NEON_I8MM, 8), (_NEON_DOT, 8)),
    "Q6_K": ((_NEON_I8MM, 8), (_NEON_DOT, 8)),
    "IQ4_NL": ((_AVX2, 8), (_NEON_DOT, 4)),
    "MXFP4": ((_AVX2, 8), (_NEON_DOT, 4)),
    "Q8_0": ((_NEON_I8MM, 4), (_NEON_DOT, 4)),
    "Q1_0": ((_NEON_I8MM, 4), (_NEON_DOT, 4)),
}
# AMX: type -> the block its rows (ne[0]) must divide into; its kernels also need rows % 32
_AMX_K = {"Q4_0": 32, "Q4_1": 32, "Q8_0": 32, "Q4_K": 256, "Q5_K": 256, "Q6_K": 256, "IQ4_XS": 256, "F16": 16}
_AMX_N = 32

# /proc/cpuinfo (and macOS) flags -> ggml's feature names, for CPUs without a probed build (what-if
# hardware): kennel builds llama.cpp for the CPU it runs on, so the CPU's features are the build's
_FLAG_FEATURES = {
    "avx2": "AVX2",
    "avx512f": "AVX512",
    "neon": "NEON",
    "asimd": "NEON",
    "dotprod": "DOTPROD",
    "asimddp": "DOTPROD",
    "i8mm": "MATMUL_INT8",
    "sve": "SVE",
    "vxe": "VXE",
}


@dataclass(frozen=True)
class RepackRules:
    """What the CPU backend of one llama.cpp process repacks."""

    features: frozenset[str] = frozenset()  # ggml's names: AVX2, AVX512, NEON, DOTPROD, ...
    enabled: bool = True  # False: a GPU host buffer comes first, or the build has no REPACK

    @property
    def amx(self) -> bool:
        return self.enabled and "AMX_INT8" in self.features

    def types(self) -> tuple[str, ...]:
        """The weight types these rules copy."""
        kernels = [
            t
            for t, ks in _KERNELS.items()
            if "REPACK" in self.features and any(need <= self.features for need, _ in ks)
        ]
        amx = [t for t in _AMX_K if self.amx and t not in kernels]
        return tuple(kernels + amx) if self.enabled else ()

    def copied(self, op: Op | None, shape: tuple[int, ...], type_id: int) -> bool:
        """Whether a weight used with ``op`` goes to an extra buffer (a repacked copy)."""
        if not self.enabled or op is None:
            return False
        dims = _n_dims(shape)
        rows = shape[1] if len(shape) > 1 else 1
        name = ggml_type_name(type_id)
        if (
            self.amx
            and op == "mul_mat"
            and name in _AMX_K
            and rows % _AMX_N == 0
            and shape[0] % _AMX_K[name] == 0
        ):
            return True
        if "REPACK" not in self.features:
            return False
        if dims != (2 if op == "mul_mat" else 3):
            return False
        return any(need <= self.features and rows % k == 0 for need, k in _KERNELS.get(name, ()))

    def bytes(self, op: Op | None, shape: tuple[int, ...], type_id: int) -> int:
        """Bytes the weight takes in the extra buffer: its own size, padded; 0 if not copied."""
        if not self.copied(op, shape, type_id):
            return 0
        return _pad(tensor_nbytes(shape, type_id), TENSOR_ALIGNMENT)


NO_REPACK = RepackRules(enabled=False)


def _pad(n: int, k: int) -> int:
    return -(-n // k) * k


def _n_dims(shape: tuple[int, ...]) -> int:
    """ggml_n_dims: the index of the last dimension above 1, plus one (at least 1)."""
    for i in range(len(shape) - 1, 0, -1):
        if shape[i] > 1:
            return i + 1
    return 1


def build_features(hw: HardwareProfile) -> tuple[frozenset[str], bool]:
    """ggml's CPU features for ``hw`` and whether they are the build's own (from its system
    info) rather than guessed from the CPU's flags."""
    info = hw.llama.system_info if hw.llama is not None and hw.llama.installed else ""
    if "CPU :" in info:
        return _cpu_features_from_info(info), True
    flags = set(hw.cpu.flags)
    found = {_FLAG_FEATURES[f] for f in flags if f in _FLAG_FEATURES}
    if hw.cpu.arch in ("arm64", "aarch64"):
        found.add("NEON")
    if "amx_int8" in flags and "avx512_vnni" in flags:
        found.add("AMX_INT8")
    found.add("REPACK")  # on by default in llama.cpp's CMake (GGML_CPU_REPACK)
    return frozenset(found), False


def _cpu_features_from_info(info: str) -> frozenset[str]:
    """The CPU section of ``llama_print_system_info``: "CPU : AVX2 = 1 | ... | REPACK = 1 |"."""
    found: set[str] = set()
    section = ""
    for part in info.split("|"):
        if ":" in part:
            section, _, part = part.partition(":")
            section = section.strip()
        key, eq, value = part.partition("=")
        if section == "CPU" and eq and value.strip() not in ("", "0"):
            found.add(key.strip())
    return frozenset(found)


def host_buffer_gpu(hw: HardwareProfile) -> bool:
    """Whether llama.cpp will have a GPU whose host buffer type pre-empts the CPU's extra ones."""
    if any(g.backend in HOST_BUFFER_BACKENDS for g in hw.gpus):
        return True
    backends = hw.llama.backends if hw.llama is not None and hw.llama.installed else ()
    return any(_HOST_BUFFER_DEVICE.match(b) for b in backends)


def rules_for(hw: HardwareProfile) -> RepackRules:
    features, _ = build_features(hw)
    if host_buffer_gpu(hw) or not ({"REPACK", "AMX_INT8"} & features):
        return RepackRules(features=features, enabled=False)
    return RepackRules(features=features)


@dataclass(frozen=True)
class LayerRepack:
    """Extra-buffer bytes split like ``memory.LayerWeights``, each counted only when that part
    runs on the CPU."""

    input: int  # matrices outside the blocks and the output layer: always on the CPU
    layers: tuple[int, ...]
    layer_experts: tuple[int, ...]  # of which ffn_*_exps tensors (MoE experts kept in RAM)
    output: int  # output layer; with tied embeddings, the embedding's second copy

    @property
    def total(self) -> int:
        """Everything on the CPU."""
        return self.input + sum(self.layers) + self.output


def layer_repack(shape: ModelShape, types: Mapping[str, int] | None, rules: RepackRules) -> LayerRepack:
    """What ``rules`` copy of ``shape``'s weights (with tensor ``types``, None: the file's own)."""
    types = types or {}
    n = shape.n_layer
    layers, experts = [0] * n, [0] * n
    inp = out = 0
    if not rules.enabled:
        return LayerRepack(0, tuple(layers), tuple(experts), 0)
    for t in shape.tensors:
        type_id = types.get(t.name, t.ggml_type)
        if t.name == "token_embd.weight":
            if shape.tied_embeddings:
                # the output layer's use of the embedding: a tensor of its own in the repack buffer
                out += rules.bytes("mul_mat", t.shape, type_id)
            continue
        size = rules.bytes(weight_op(t.name), t.shape, type_id)
        if not size:
            continue
        base = t.name.removesuffix(".weight")
        il = 0 if base in LAYER_ZERO else layer_of(t.name)
        if 0 <= il < n:
            layers[il] += size
            if "_exps." in t.name:
                experts[il] += size
        elif not _NUMBERED.search(base):
            out += size  # llama.cpp's matrices without a block number belong to the output layer
        else:
            inp += size  # encoder/decoder stacks, which kennel keeps on the CPU
    return LayerRepack(inp, tuple(layers), tuple(experts), out)


def copied_tensors(shape: ModelShape, types: Mapping[str, int] | None, rules: RepackRules) -> frozenset[str]:
    """Names of the tensors whose data goes to an extra buffer when all runs on the CPU. The
    token embedding is never one: its tied output copy is a second tensor, the original stays mapped."""
    types = types or {}
    return frozenset(
        t.name
        for t in shape.tensors
        if t.name != "token_embd.weight"
        and rules.copied(weight_op(t.name), t.shape, types.get(t.name, t.ggml_type))
    )
