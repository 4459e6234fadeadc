from __future__ import annotations

import struct
from pathlib import Path

import pytest
from gguf import GGMLQuantizationType as T

from kennel.errors import NotGGUFError, TruncatedModelError, UnsupportedModelError
from kennel.model.gguf_header import ArraySummary, read_header, tensor_nbytes
from kennel.model.gguf_shape import shape_from_gguf
from kennel.model.sources import FileSource


def test_reads_what_the_writer_wrote(make_model) -> None:
    path, shape = make_model(n_layer=3, n_embd=128, n_head=4, n_head_kv=2, n_ff=320, n_vocab=1000)
    h = read_header(FileSource(path))
    assert h.version == 3
    assert h.architecture == "llama"
    assert [t.name for t in h.tensors] == [t.name for t in shape.tensors]
    assert h.tensor_bytes == sum(t.nbytes for t in shape.tensors)
    # the vocabulary (1000 strings) is kept as a list; counts are enough for sizing
    assert len(h.metadata["tokenizer.ggml.tokens"]) == 1000
    s = shape_from_gguf(h)
    assert (s.n_layer, s.n_embd, s.n_head[0], s.n_head_kv[0], s.head_dim_k, s.n_ff[0], s.n_vocab) == (
        3,
        128,
        4,
        2,
        32,
        320,
        1000,
    )
    assert s.file_type == "F16"


def test_long_arrays_are_summarised(make_model) -> None:
    path, _ = make_model(n_layer=1, n_embd=64, n_head=2, n_ff=64, n_vocab=9000)
    tokens = read_header(FileSource(path)).metadata["tokenizer.ggml.tokens"]
    assert tokens == ArraySummary("STRING", 9000)


def test_tensor_bytes_follow_block_sizes() -> None:
    assert tensor_nbytes((4096, 4096), int(T.Q4_K)) == 4096 * 4096 // 256 * 144
    assert tensor_nbytes((4096, 11008), int(T.Q8_0)) == 4096 // 32 * 34 * 11008
    assert tensor_nbytes((128,), int(T.F32)) == 512
    with pytest.raises(UnsupportedModelError, match="not a multiple"):
        tensor_nbytes((100, 3), int(T.Q4_K))


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "empty"),
        (b"<!DOCTYPE html><html>", "HTML"),
        (b'{"error": "no"}', "JSON"),
        (b"\x00\x01\x02\x03garbage", "not a GGUF"),
    ],
)
def test_not_gguf(tmp_path: Path, content: bytes, expected: str) -> None:
    p = tmp_path / "bad.gguf"
    p.write_bytes(content)
    with pytest.raises(NotGGUFError, match=expected):
        read_header(FileSource(p))


def test_truncated_in_header(make_model, tmp_path: Path) -> None:
    path, _ = make_model(n_layer=2, n_embd=64, n_head=2, n_ff=64, n_vocab=600)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(TruncatedModelError, match="inside its GGUF header"):
        read_header(FileSource(cut))


def test_truncated_in_weights(make_model, tmp_path: Path) -> None:
    path, _ = make_model(n_layer=2, n_embd=64, n_head=2, n_ff=64, n_vocab=600)
    data = path.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) - 1000])
    with pytest.raises(TruncatedModelError, match="truncated"):
        read_header(FileSource(cut))


def test_corrupt_counts(tmp_path: Path) -> None:
    p = tmp_path / "huge.gguf"
    p.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 1 << 40, 1))
    with pytest.raises(TruncatedModelError, match="corrupt"):
        read_header(FileSource(p))


def test_unknown_version(tmp_path: Path) -> None:
    p = tmp_path / "v9.gguf"
    p.write_bytes(b"GGUF" + struct.pack("<IQQ", 9, 0, 0))
    with pytest.raises(UnsupportedModelError, match="version 9"):
        read_header(FileSource(p))


def test_adapter_is_not_a_model(tmp_path: Path) -> None:
    import gguf

    p = tmp_path / "lora.gguf"
    w = gguf.GGUFWriter(p, "llama")
    w.add_string("general.type", "adapter")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    with pytest.raises(UnsupportedModelError, match="adapter"):
        shape_from_gguf(read_header(FileSource(p)))
