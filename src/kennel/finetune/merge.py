"""`kennel finetune --merge`: the adapter folded into the base GGUF's weights, then quantized back
to the base's quantization (or another), so the result serves without an adapter.

The merge works on the GGUF itself, tensor by tensor: each adapted weight is dequantized, gets
(alpha / rank) * B @ A added (the adapter's B is already in the GGUF's row order), and is written
at F16 (F32 where the base holds it in F32); every other tensor is copied byte for byte. Then
llama-quantize takes the file to the target type. Tensors left at their type are copied as they
are (llama-quantize does not touch a tensor already of the type it chose), so only the merged ones
are quantized again.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from kennel.engines.llamacpp_tools import find_tool
from kennel.errors import FinetuneError
from kennel.finetune.adapter_gguf import BaseLayout, check_adapter
from kennel.finetune.gguf_out import gguf_writer
from kennel.model.gguf_header import read_header
from kennel.model.sources import FileSource

Progress = Callable[[int, int], None]  # tensors done, tensors in all


def ftype_name(file_type: int) -> str:
    """llama-quantize's name for a GGUF's general.file_type: 15 -> Q4_K_M, 1 -> F16, 0 -> F32."""
    from gguf import LlamaFileType

    try:
        name = LlamaFileType(file_type).name
    except ValueError as exc:
        raise FinetuneError(
            f"The base declares file type {file_type}, which kennel cannot quantize to.",
            hint="Give the target with --quant, e.g. --quant Q4_K_M.",
        ) from exc
    return {"ALL_F32": "F32"}.get(name, name.removeprefix("MOSTLY_"))


def merge_gguf(
    base: Path, adapter: Path, out: Path, *, scale: float = 1.0, progress: Progress | None = None
) -> Path:
    """Write ``out``: the base with the adapter's deltas added to its weights (unquantized where merged)."""
    from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, LlamaFileType
    from gguf import quants as gguf_quants

    base_header = read_header(FileSource(base))
    if int(base_header.metadata.get("split.count", 1) or 1) > 1:
        raise FinetuneError(
            "kennel does not merge into a split GGUF.", hint="Serve the adapter instead (leave out --merge)."
        )
    layout = BaseLayout.from_header(base_header)
    check_adapter(read_header(FileSource(adapter)), layout)
    lora = GGUFReader(adapter)
    alpha = float(lora.fields["adapter.lora.alpha"].contents())
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    by_name = {t.name: t for t in lora.tensors}
    for name, t in by_name.items():
        if name.endswith(".lora_a"):
            weight = name.removesuffix(".lora_a")
            pairs[weight] = (_floats(t), _floats(by_name[weight + ".lora_b"]))
    reader = GGUFReader(base)
    all_f32 = layout.all_f32
    with gguf_writer(out, layout.arch) as w:
        for key, field in reader.fields.items():
            if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type"):
                continue
            sub = field.types[1] if field.types[0] == GGUFValueType.ARRAY and len(field.types) > 1 else None
            w.add_key_value(key, field.contents(), field.types[0], sub)
        w.add_file_type(int(LlamaFileType.ALL_F32 if all_f32 else LlamaFileType.MOSTLY_F16))
        T = GGMLQuantizationType
        plan = []
        for t in reader.tensors:
            shape = tuple(int(x) for x in reversed(t.shape))  # numpy order: (n_out, n_in)
            if t.name in pairs:
                out_type = np.dtype(np.float32 if t.tensor_type == T.F32 else np.float16)
                w.add_tensor_info(t.name, shape, out_type, int(np.prod(shape)) * out_type.itemsize)
            else:
                raw = t.tensor_type not in (T.F32, T.F16)
                w.add_tensor_info(
                    t.name,
                    t.data.shape,
                    np.dtype(np.uint8) if raw else t.data.dtype,
                    int(t.n_bytes),
                    raw_dtype=t.tensor_type if raw else None,
                )
            plan.append((t, shape))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for i, (t, shape) in enumerate(plan):
            if t.name in pairs:
                a, b = pairs[t.name]
                merged = gguf_quants.dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float32)
                merged += (scale * alpha / a.shape[0]) * (b @ a)
                w.write_tensor_data(merged.astype(np.float32 if t.tensor_type == T.F32 else np.float16))
            else:
                w.write_tensor_data(t.data)
            if progress:
                progress(i + 1, len(plan))
    return out


def _floats(t: Any) -> np.ndarray:
    return np.asarray(t.data, dtype=np.float32).reshape(tuple(int(x) for x in reversed(t.shape)))


def quantize(src: Path, dst: Path, ftype: str, *, threads: int = 2) -> None:
    """llama-quantize ``src`` to ``dst`` as ``ftype``, requantizing the merged tensors only."""
    tool = find_tool("llama-quantize")
    if tool is None:
        raise FinetuneError(
            "llama-quantize is not installed, so kennel cannot quantize the merged model.",
            hint="Run scripts/install.sh (it builds llama.cpp's tools), or leave out --merge.",
        )
    args = [str(tool), "--allow-requantize", str(src), str(dst), ftype.upper(), str(threads)]
    done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=24 * 3600)
    if done.returncode != 0:
        tail = " ".join(done.stderr.strip().splitlines()[-2:])[-300:]
        raise FinetuneError(
            f"llama-quantize could not make {ftype}: {tail}",
            hint="Check the type name (llama-quantize --help lists them), or pick another with --quant.",
        )


def merged_model(
    base: Path,
    adapter: Path,
    out: Path,
    *,
    quant: str | None,
    threads: int = 2,
    progress: Progress | None = None,
) -> Path:
    """The merged GGUF at ``out``, at ``quant`` or the base's own quantization."""
    target = quant or ftype_name(int(read_header(FileSource(base)).metadata.get("general.file_type", 1)))
    unquantized = out.with_name(out.stem + ".merged-unquantized.gguf")
    try:
        merge_gguf(base, adapter, unquantized, progress=progress)
        quantize(unquantized, out, target, threads=threads)
    finally:
        unquantized.unlink(missing_ok=True)
    return out
