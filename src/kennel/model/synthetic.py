"""Write GGUF files llama.cpp loads, with a given shape and random weights.

Tests use tiny ones (milliseconds to load); ``kennel fit --measure`` builds one with a real
model's exact shape and quantization to time it on this machine without downloading anything.

Quantized tensors are filled by tiling a pool of valid blocks of their type. The pool comes from
the `gguf` package's numpy quantizers where it has one, else from llama.cpp's own quantizer
(``llama-quantize`` on a tiny model, cached in KENNEL_HOME), else, for the i-quants that
llama.cpp will not make without an importance matrix, from random codes with a sane scale.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFWriter, LlamaFileType
from gguf import quants as gguf_quants

from kennel.engines.llamacpp_tools import quantize
from kennel.errors import MeasureError
from kennel.model.gguf_header import TensorInfo, read_header
from kennel.model.layout import tensor_layout
from kennel.model.shape import ModelShape
from kennel.model.sources import FileSource

T = GGMLQuantizationType
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
MIN_VOCAB = 259  # <unk>, <s>, </s> and the 256 byte tokens
TAG_TOKENS = ("<tool_call>", "</tool_call>", "<think>", "</think>")  # the last ids of the vocabulary
POOL_ROWS, POOL_COLS = 16, 4096
# i-quants whose block starts with an f16 scale; llama.cpp will not make them without an imatrix
_SCALE_FIRST = {T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ3_XXS, T.IQ3_S, T.IQ1_S}
# the llama ftype whose default tensor type is each k-/i-quant (for the pure quantize run)
_FTYPE_FOR = {
    T.Q2_K: LlamaFileType.MOSTLY_Q2_K,
    T.Q3_K: LlamaFileType.MOSTLY_Q3_K_M,
    T.Q4_K: LlamaFileType.MOSTLY_Q4_K_M,
    T.Q5_K: LlamaFileType.MOSTLY_Q5_K_M,
    T.Q6_K: LlamaFileType.MOSTLY_Q6_K,
    T.IQ4_NL: LlamaFileType.MOSTLY_IQ4_NL,
    T.IQ4_XS: LlamaFileType.MOSTLY_IQ4_XS,
    T.IQ3_S: LlamaFileType.MOSTLY_IQ3_S,
}

ProgressFn = Callable[[int, int], None]


def synthetic_shape(
    *,
    arch: str = "llama",
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 4,
    n_head_kv: int | None = None,
    head_dim: int | None = None,
    n_ff: int = 128,
    n_vocab: int = 512,
    n_ctx_train: int = 4096,
    n_expert: int = 0,
    n_expert_used: int = 0,
    n_swa: int = 0,
    swa_every: int = 0,
    tied: bool = False,
    name: str = "synthetic",
) -> ModelShape:
    """A ModelShape for a test or benchmark model, with its F16/F32 tensor list."""
    kv = n_head if n_head_kv is None else n_head_kv
    hd = head_dim or n_embd // n_head
    swa_layers = (
        tuple(swa_every > 0 and il % swa_every < swa_every - 1 for il in range(n_layer)) if n_swa else ()
    )
    shape = ModelShape(
        arch=arch,
        name=name,
        n_layer=n_layer,
        n_embd=n_embd,
        n_vocab=max(n_vocab, MIN_VOCAB),
        n_ctx_train=n_ctx_train,
        n_head=(n_head,) * n_layer,
        n_head_kv=(kv,) * n_layer,
        head_dim_k=hd,
        head_dim_v=hd,
        n_ff=(0 if n_expert else n_ff,) * n_layer,
        n_expert=n_expert,
        n_expert_used=n_expert_used,
        n_ff_exp=n_ff if n_expert else 0,
        n_swa=n_swa,
        swa_layers=swa_layers,
        tied_embeddings=tied,
        source_kind="catalog",
    )
    return replace(shape, tensors=tensor_layout(shape), file_type="F16")


def _metadata(
    w: GGUFWriter, shape: ModelShape, file_type: int, chat_template: str, pooling: int | None
) -> None:
    a = shape.arch
    w.add_name(shape.name)
    w.add_file_type(file_type)
    w.add_uint32(f"{a}.context_length", shape.n_ctx_train)
    w.add_uint32(f"{a}.embedding_length", shape.n_embd)
    w.add_uint32(f"{a}.block_count", shape.n_layer)
    ff = shape.n_ff_exp if shape.is_moe and a == "llama" else max(shape.n_ff)
    w.add_uint32(f"{a}.feed_forward_length", ff)
    w.add_uint32(f"{a}.attention.head_count", shape.n_head[0])
    w.add_uint32(f"{a}.attention.head_count_kv", shape.n_head_kv[0])
    w.add_uint32(f"{a}.attention.key_length", shape.head_dim_k)
    w.add_uint32(f"{a}.attention.value_length", shape.head_dim_v)
    w.add_uint32(f"{a}.rope.dimension_count", shape.head_dim_k)
    w.add_float32(f"{a}.rope.freq_base", 10000.0)
    w.add_float32(f"{a}.attention.layer_norm_rms_epsilon", 1e-5)
    w.add_uint32(f"{a}.vocab_size", shape.n_vocab)
    if shape.is_moe:
        w.add_uint32(f"{a}.expert_count", shape.n_expert)
        w.add_uint32(f"{a}.expert_used_count", shape.n_expert_used)
        if a != "llama":
            w.add_uint32(f"{a}.expert_feed_forward_length", shape.n_ff_exp)
    if shape.n_swa:
        w.add_uint32(f"{a}.attention.sliding_window", shape.n_swa)
        w.add_array(f"{a}.attention.sliding_window_pattern", [bool(x) for x in shape.swa_layers])
    if pooling is not None:  # an embedding model (1 mean, 2 cls, 3 last) or a reranker (4 rank)
        w.add_uint32(f"{a}.pooling_type", pooling)
    _vocab(w, shape.n_vocab, chat_template)


def _vocab(w: GGUFWriter, n_vocab: int, chat_template: str) -> None:
    """A sentencepiece-style vocabulary with byte fallback: any text tokenizes. Like the
    vocabularies of chat models it has the tool-call and thinking tags as tokens of their own."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    tokens += [f"\u2581t{i}" for i in range(n_vocab - len(tokens))]
    types = [2, 3, 3] + [6] * 256 + [1] * (n_vocab - MIN_VOCAB)
    if n_vocab - MIN_VOCAB >= 2 * len(TAG_TOKENS):
        for i, tag in enumerate(TAG_TOKENS):
            tokens[n_vocab - len(TAG_TOKENS) + i] = tag
            types[n_vocab - len(TAG_TOKENS) + i] = 4  # user-defined: matched in text as one token
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * 3 + [0.0] * 256 + [-float(i) for i in range(n_vocab - MIN_VOCAB)])
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    # no "▁" before text, as in the BPE vocabularies of chat models: llama.cpp's grammars for
    # JSON output and tool calls start with the template's literal generation prompt
    w.add_add_space_prefix(False)
    w.add_chat_template(chat_template)


def write_synthetic_gguf(
    path: Path,
    shape: ModelShape,
    *,
    tensor_types: Mapping[str, int] | None = None,
    file_type: int = int(LlamaFileType.MOSTLY_F16),
    block_cache: Path | None = None,
    seed: int = 0,
    progress: ProgressFn | None = None,
    split_max_tensors: int = 0,
    chat_template: str = CHAT_TEMPLATE,
    pooling: int | None = None,
) -> Path:
    """Write ``shape`` to ``path`` with random weights; ``tensor_types`` overrides tensor types.

    With ``split_max_tensors`` the model is written as llama.cpp split files
    (NAME-00001-of-0000N.gguf ...) and the first one is returned.
    """
    tensors = shape.tensors or tensor_layout(shape)
    if tensor_types:
        tensors = tuple(replace(t, ggml_type=int(tensor_types.get(t.name, t.ggml_type))) for t in tensors)
    rng = np.random.default_rng(seed)
    pools = _BlockPools(rng, block_cache)
    path.parent.mkdir(parents=True, exist_ok=True)
    # written aside and renamed, so an interrupted build never leaves a half file under the real name
    tmp = path if split_max_tensors else path.with_name(path.name + ".partial")
    w = GGUFWriter(tmp, shape.arch, split_max_tensors=split_max_tensors)
    _metadata(w, shape, file_type, chat_template, pooling)
    for t in tensors:
        qt = T(t.ggml_type)
        np_shape = tuple(reversed(t.shape))
        if qt in (T.F32, T.F16):
            dtype = np.float32 if qt == T.F32 else np.float16
            w.add_tensor_info(t.name, np_shape, np.dtype(dtype), t.nbytes)
        else:
            block, size = GGML_QUANT_SIZES[qt]
            byte_shape = (*np_shape[:-1], np_shape[-1] // block * size)
            w.add_tensor_info(t.name, byte_shape, np.dtype(np.uint8), t.nbytes, raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    total, done = sum(t.nbytes for t in tensors), 0
    for t in tensors:
        w.write_tensor_data(_tensor_data(t, pools, rng))
        done += t.nbytes
        if progress:
            progress(done, total)
    w.close()
    if split_max_tensors:
        n = len(w.tensors)
        return path.with_name(f"{path.stem}-00001-of-{n:05d}.gguf") if n > 1 else path
    tmp.replace(path)
    return path


def _tensor_data(t: TensorInfo, pools: _BlockPools, rng: np.random.Generator) -> np.ndarray:
    qt = T(t.ggml_type)
    np_shape = tuple(reversed(t.shape))
    if qt == T.F32:
        if t.name.endswith("norm.weight"):
            return np.ones(np_shape, dtype=np.float32)
        return _tile(rng.normal(0, 0.02, 4096).astype(np.float32), t.n_elements).reshape(np_shape)
    if qt == T.F16:
        return _tile(rng.normal(0, 0.02, 4096).astype(np.float16), t.n_elements).reshape(np_shape)
    return _tile(pools.get(qt), t.nbytes)


def _tile(pool: np.ndarray, n: int) -> np.ndarray:
    reps = -(-n // pool.size)
    return np.tile(pool, reps)[:n]


class _BlockPools:
    """Valid quantized blocks per type, made once per run (and cached on disk for llama.cpp's)."""

    def __init__(self, rng: np.random.Generator, cache: Path | None) -> None:
        self._rng = rng
        self._cache = cache
        self._pools: dict[T, np.ndarray] = {}

    def get(self, qt: T) -> np.ndarray:
        if qt not in self._pools:
            self._pools[qt] = self._make(qt)
        return self._pools[qt]

    def _make(self, qt: T) -> np.ndarray:
        x = self._rng.normal(0, 0.02, (POOL_ROWS, POOL_COLS)).astype(np.float32)
        try:
            return np.ascontiguousarray(gguf_quants.quantize(x, qt)).view(np.uint8).reshape(-1)
        except NotImplementedError:
            pass
        if qt in _FTYPE_FOR:
            return self._from_llama(qt)
        if qt in _SCALE_FIRST:
            return self._random_scaled(qt)
        raise MeasureError(
            f"kennel cannot make synthetic {qt.name} tensors.",
            hint="Measure this model at another quantization (e.g. --quant Q4_K_M).",
        )

    def _random_scaled(self, qt: T) -> np.ndarray:
        _, size = GGML_QUANT_SIZES[qt]
        n_blocks = POOL_ROWS * POOL_COLS // GGML_QUANT_SIZES[qt][0]
        blocks = self._rng.integers(0, 256, (n_blocks, size), dtype=np.uint8)
        blocks[:, :2] = np.frombuffer(np.float16(0.002).tobytes(), dtype=np.uint8)
        return blocks.reshape(-1)

    def _from_llama(self, qt: T) -> np.ndarray:
        cached = self._cache / f"{qt.name}.bin" if self._cache else None
        if cached and cached.exists():
            return np.fromfile(cached, dtype=np.uint8)
        data = quantize_blocks_with_llama(qt, self._rng)
        if cached:
            cached.parent.mkdir(parents=True, exist_ok=True)
            data.tofile(cached)
        return data


def quantize_blocks_with_llama(qt: T, rng: np.random.Generator) -> np.ndarray:
    """Blocks of type ``qt`` made by llama.cpp's quantizer from a tiny random F32 model."""
    shape = synthetic_shape(
        n_layer=1, n_embd=POOL_COLS // 16, n_head=4, n_ff=POOL_COLS // 16, n_vocab=MIN_VOCAB
    )
    with tempfile.TemporaryDirectory(prefix="kennel-blocks-") as d:
        src, dst = Path(d) / "f32.gguf", Path(d) / "q.gguf"
        f32 = {t.name: int(T.F32) for t in shape.tensors}
        write_synthetic_gguf(
            src,
            shape,
            tensor_types=f32,
            file_type=int(LlamaFileType.ALL_F32),
            seed=int(rng.integers(1 << 31)),
        )
        quantize(src, dst, _FTYPE_FOR[qt].name.removeprefix("MOSTLY_"), pure=True, threads=1)
        header = read_header(FileSource(dst))
        raw = dst.read_bytes()
        chunks = [
            np.frombuffer(raw, dtype=np.uint8, count=t.nbytes, offset=header.data_offset + t.offset)
            for t in header.tensors
            if t.ggml_type == int(qt)
        ]
    if not chunks:
        raise MeasureError(f"llama.cpp produced no {qt.name} tensors to take blocks from.")
    return np.concatenate(chunks)
