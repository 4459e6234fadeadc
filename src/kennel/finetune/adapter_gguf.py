"""LoRA adapters as llama.cpp reads them (src/llama-adapter.cpp), and checks that an adapter,
or the weights it is trained on, belongs to a given base GGUF.

llama.cpp's adapter GGUF: ``general.type = adapter``, ``adapter.type = lora``, the base's
``general.architecture``, ``adapter.lora.alpha`` (the scale is alpha / rank, as in PEFT), and for
each adapted weight ``W`` of the base a pair ``W.lora_a`` (ggml shape [n_in, rank], numpy
(rank, n_in): PEFT's lora_A as it is) and ``W.lora_b`` ([rank, n_out], numpy (n_out, rank):
PEFT's lora_B). Names are the base GGUF's (``blk.3.attn_q.weight``), mapped from transformers'
module names by gguf's own TensorNameMap, the table llama.cpp's converters use.

The llama family stores Q and K with their rows permuted (llama.cpp's rope rotates neighbouring
pairs, transformers' rotates halves); llama.cpp's converter permutes the weights, so the delta
B @ A must be permuted the same way: its rows are B's rows, so B is permuted and A is not.

Adapters on the token embedding or the output layer are refused: llama.cpp applies an embedding
adapter with A and B swapped (llm_build_inp_embd), and PEFT trains those layers differently;
neither is needed to teach a model facts or style.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kennel.errors import AdapterMismatchError, FinetuneError
from kennel.finetune.gguf_out import gguf_writer
from kennel.model.gguf_header import GGUFHeader, read_header
from kennel.model.sources import FileSource

# architectures whose adapters kennel writes, and whether llama.cpp's converter permutes their
# Q and K rows (conversion/llama.py and its subclasses: undo_permute = True)
ARCHITECTURES: dict[str, bool] = {
    "llama": True,  # Llama 2 and 3, Mistral 7B, TinyLlama, SmolLM 1 and 2
    "smollm3": True,
    "granite": True,
    "qwen2": False,
    "qwen3": False,
    "gemma": False,
    "gemma2": False,
    "gemma3": False,
}
# the projections of attention and MLP: what LoRA adapts by default, by transformers' names
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
REFUSED_TARGETS = {
    "embed_tokens": "token_embd",
    "lm_head": "output",
    "wte": "token_embd",
    "embed_out": "output",
}
BASE_SHA_KEY = "kennel.base.sha256"


@dataclass(frozen=True)
class LoraPair:
    module: str  # transformers' module name: model.layers.0.self_attn.q_proj
    a: np.ndarray  # (rank, n_in)
    b: np.ndarray  # (n_out, rank)


@dataclass(frozen=True)
class BaseLayout:
    """What an adapter must agree with, read from the base GGUF's header."""

    arch: str
    n_layer: int
    n_head: int
    n_head_kv: int
    tensors: Mapping[str, tuple[int, ...]]  # GGUF name -> ggml shape (n_in, n_out, ...)
    all_f32: bool  # every matrix in F32: the adapter is written in F32 too

    @classmethod
    def from_header(cls, header: GGUFHeader) -> BaseLayout:
        md, arch = header.metadata, header.architecture
        n_head = _first(md.get(f"{arch}.attention.head_count", 0))
        n_kv = _first(md.get(f"{arch}.attention.head_count_kv", n_head)) or n_head
        matrices = [t for t in header.tensors if len(t.shape) >= 2]
        return cls(
            arch=arch,
            n_layer=int(md.get(f"{arch}.block_count", 0)),
            n_head=n_head,
            n_head_kv=n_kv,
            tensors={t.name: tuple(t.shape) for t in header.tensors},
            all_f32=all(t.ggml_type == 0 for t in matrices),
        )

    @classmethod
    def read(cls, path: Path) -> BaseLayout:
        return cls.from_header(read_header(FileSource(path)))

    @property
    def permutes_qk(self) -> bool:
        return ARCHITECTURES.get(self.arch, False)


def _first(value: object) -> int:
    # per-layer head counts are arrays in some models; kennel adapts models with one count
    if isinstance(value, (list, tuple)):
        return int(value[0]) if value else 0
    return int(str(value))


def check_architecture(layout: BaseLayout) -> None:
    if layout.arch not in ARCHITECTURES:
        raise FinetuneError(
            f"kennel does not write LoRA adapters for the {layout.arch!r} architecture yet.",
            hint=f"Supported: {', '.join(sorted(ARCHITECTURES))}.",
        )


def check_targets(targets: Iterable[str]) -> None:
    """Refuse adapters on the embedding or the output layer, with the reason."""
    for t in targets:
        leaf = t.rsplit(".", 1)[-1]
        if leaf in REFUSED_TARGETS:
            raise FinetuneError(
                f"kennel does not train {leaf} ({REFUSED_TARGETS[leaf]} in the GGUF): llama.cpp applies "
                "an adapter there in its own layout and the served answers would differ from the trained.",
                hint="Adapt the attention and MLP projections (the default --target).",
            )


def gguf_name(layout: BaseLayout, module: str) -> str:
    """``model.layers.3.self_attn.q_proj`` -> ``blk.3.attn_q.weight``."""
    import gguf

    check_targets([module])
    arch_id = {name: arch for arch, name in gguf.MODEL_ARCH_NAMES.items()}.get(layout.arch)
    if arch_id is None:
        raise FinetuneError(f"The gguf package does not know the {layout.arch!r} architecture.")
    # the map knows the layers the base has: a deeper layer is another (larger) model's
    mapped = gguf.get_tensor_name_map(arch_id, layout.n_layer).get_name(
        module.removeprefix("base_model.model.")
    )
    if mapped is None:
        raise AdapterMismatchError(
            f"{module} has no tensor in this {layout.arch} GGUF ({layout.n_layer} layers).",
            hint="Train on the weights of the same model as the base, adapting its attention and MLP "
            "projections (--target).",
        )
    return mapped + ".weight"


def check_module_shapes(layout: BaseLayout, shapes: Mapping[str, tuple[int, int]]) -> None:
    """Every adapted module, (n_out, n_in) in transformers' terms, must be a base tensor of that shape:
    training weights from another model (or another size of it) are refused before any training."""
    wrong: list[str] = []
    for module, (n_out, n_in) in shapes.items():
        name = gguf_name(layout, module)
        have = layout.tensors.get(name)
        if have is None:
            wrong.append(f"{name} is not in the base")
        elif tuple(have[:2]) != (n_in, n_out):
            wrong.append(f"{name} is {have[1]}x{have[0]} in the base, {n_out}x{n_in} in the weights")
    if wrong:
        raise AdapterMismatchError(
            f"The training weights do not match the base GGUF: {'; '.join(wrong[:5])}"
            + (f"; and {len(wrong) - 5} more" if len(wrong) > 5 else "")
            + ".",
            hint="Train on the weights of the same model as the GGUF (--weights), or leave --weights "
            "out to train on the GGUF itself.",
        )


def permute_rows(rows: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """llama.cpp's Q/K row order for the llama family: within each head, the rows of the first and
    second half interleaved (convert_hf_to_gguf's LlamaModel.permute)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    n = rows.shape[0]
    return rows.reshape(n_head, 2, n // n_head // 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def adapter_tensors(layout: BaseLayout, pairs: Sequence[LoraPair]) -> list[tuple[str, np.ndarray]]:
    """(GGUF name, array) for each lora_a and lora_b, checked against the base's shapes."""
    out: list[tuple[str, np.ndarray]] = []
    check_module_shapes(layout, {p.module: (p.b.shape[0], p.a.shape[1]) for p in pairs})
    for p in pairs:
        name = gguf_name(layout, p.module)
        b = p.b
        if layout.permutes_qk and name.endswith(".attn_q.weight"):
            b = permute_rows(b, layout.n_head, layout.n_head)
        elif layout.permutes_qk and name.endswith(".attn_k.weight"):
            b = permute_rows(b, layout.n_head, layout.n_head_kv)
        out += [(f"{name}.lora_a", p.a), (f"{name}.lora_b", b)]
    return out


def write_adapter(
    path: Path,
    layout: BaseLayout,
    pairs: Sequence[LoraPair],
    *,
    alpha: float,
    base_sha256: str,
    name: str,
) -> Path:
    """Write the llama.cpp LoRA GGUF for ``pairs`` (written aside, renamed when complete)."""

    check_architecture(layout)
    if not pairs:
        raise FinetuneError("The adapter has no weights to write.", hint="Check --target.")
    dtype = np.float32 if layout.all_f32 else np.float16  # F16 halves the file; F32 bases stay exact
    with gguf_writer(path, layout.arch) as w:
        w.add_string("general.type", "adapter")
        w.add_string("adapter.type", "lora")
        w.add_float32("adapter.lora.alpha", float(alpha))
        w.add_name(name)
        w.add_string(BASE_SHA_KEY, base_sha256)
        for tensor_name, data in adapter_tensors(layout, pairs):
            w.add_tensor(tensor_name, np.ascontiguousarray(data, dtype=dtype))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
    return path


@dataclass(frozen=True)
class AdapterInfo:
    arch: str
    alpha: float
    rank: int
    base_sha256: str | None  # what kennel recorded; None for adapters made elsewhere
    weights: tuple[str, ...]  # base tensor names it adapts


def read_adapter(header: GGUFHeader) -> AdapterInfo:
    md = header.metadata
    weights = sorted({t.name.removesuffix(".lora_a") for t in header.tensors if t.name.endswith(".lora_a")})
    ranks = {t.shape[1] for t in header.tensors if t.name.endswith(".lora_a") and len(t.shape) > 1}
    sha = md.get(BASE_SHA_KEY)
    return AdapterInfo(
        arch=header.architecture,
        alpha=float(md.get("adapter.lora.alpha", 0.0) or 0.0),
        rank=max(ranks) if ranks else 0,
        base_sha256=str(sha) if sha else None,
        weights=tuple(weights),
    )


def check_adapter(adapter: GGUFHeader, layout: BaseLayout, *, base_sha256: str | None = None) -> None:
    """Refuse an adapter llama.cpp would refuse for this base (architecture, names, shapes), or,
    with ``base_sha256``, one kennel trained for another base file."""
    info = read_adapter(adapter)
    if info.arch != layout.arch:
        raise AdapterMismatchError(
            f"The adapter is for a {info.arch} model, the base is {layout.arch}.",
            hint="Use the adapter with the base it was trained on.",
        )
    by_name = {t.name: tuple(t.shape) for t in adapter.tensors}
    wrong = []
    for w in info.weights:
        base = layout.tensors.get(w)
        a, b = by_name.get(f"{w}.lora_a"), by_name.get(f"{w}.lora_b")
        if base is None:
            wrong.append(f"{w} is not in the base")
        elif a is None or b is None or a[0] != base[0] or b[1] != base[1] or a[1] != b[0]:
            wrong.append(f"{w} is {base[1]}x{base[0]} in the base, the adapter's pair does not fit it")
    if wrong:
        raise AdapterMismatchError(
            f"The adapter does not fit the base: {'; '.join(wrong[:5])}.",
            hint="It was trained for another model; use it with that one, or train again on this base.",
        )
    if base_sha256 and info.base_sha256 and info.base_sha256 != base_sha256:
        raise AdapterMismatchError(
            f"The adapter was trained on base sha256:{info.base_sha256[:12]}…, "
            f"not sha256:{base_sha256[:12]}….",
            hint="Pair it with the base it was trained on, or train again on this one.",
        )
