"""The llama.cpp LoRA GGUF: names, shapes, Q/K permutation, metadata, and the refusal of adapters
(or training weights) that belong to another base: by shape, by architecture, by sha256."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kennel.errors import AdapterMismatchError, FinetuneError
from kennel.finetune.adapter_gguf import (
    BASE_SHA_KEY,
    BaseLayout,
    LoraPair,
    check_adapter,
    check_architecture,
    check_module_shapes,
    check_targets,
    gguf_name,
    permute_rows,
    read_adapter,
    write_adapter,
)
from kennel.finetune.merge import ftype_name
from kennel.model.gguf_header import read_header
from kennel.model.sources import FileSource
from kennel.settings import KennelHome
from kennel.store.add import build_profile, import_gguf
from kennel.store.profile import ProfileSpec
from kennel.store.registry import Store

RNG = np.random.default_rng(0)


def _pairs(n_embd: int, n_kv: int, rank: int = 4) -> list[LoraPair]:
    def pair(module: str, n_out: int, n_in: int) -> LoraPair:
        return LoraPair(
            module,
            RNG.standard_normal((rank, n_in)).astype(np.float32),
            RNG.standard_normal((n_out, rank)).astype(np.float32),
        )

    return [
        pair("model.layers.0.self_attn.q_proj", n_embd, n_embd),
        pair("model.layers.0.self_attn.k_proj", n_kv, n_embd),
        pair("model.layers.1.mlp.down_proj", n_embd, 128),
    ]


def test_names_and_refused_targets(make_model) -> None:  # type: ignore[no-untyped-def]
    layout = BaseLayout.read(make_model(n_head_kv=2)[0])
    assert gguf_name(layout, "model.layers.1.self_attn.q_proj") == "blk.1.attn_q.weight"
    assert gguf_name(layout, "base_model.model.model.layers.1.mlp.down_proj") == "blk.1.ffn_down.weight"
    for target in ("embed_tokens", "model.embed_tokens", "lm_head"):
        with pytest.raises(FinetuneError, match=r"llama\.cpp applies an adapter there in its own layout"):
            check_targets([target])
    with pytest.raises(FinetuneError, match="does not write LoRA adapters for the 'phi3'"):
        check_architecture(BaseLayout("phi3", 2, 4, 4, {}, True))


def test_permuting_b_permutes_the_delta() -> None:
    """llama.cpp's row order for Q/K applies to B @ A through B alone."""
    a, b = RNG.standard_normal((4, 64)), RNG.standard_normal((32, 4))
    assert np.allclose(permute_rows(b, 4, 2) @ a, permute_rows(b @ a, 4, 2))
    # heads of 16 rows: within each head the two halves are interleaved
    rows = np.arange(32).reshape(32, 1)
    assert permute_rows(rows, 2)[:4, 0].tolist() == [0, 8, 1, 9]


def test_adapter_file_fits_its_base_and_no_other(make_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base = make_model(n_head_kv=2)[0]
    layout = BaseLayout.read(base)
    pairs = _pairs(64, 32)
    path = write_adapter(tmp_path / "a.gguf", layout, pairs, alpha=8.0, base_sha256="ab" * 32, name="t")
    header = read_header(FileSource(path))
    info = read_adapter(header)
    assert header.metadata["general.type"] == "adapter" and header.metadata["adapter.type"] == "lora"
    assert info.alpha == 8.0 and info.rank == 4 and info.arch == "llama"
    assert header.metadata[BASE_SHA_KEY] == "ab" * 32
    assert info.weights == ("blk.0.attn_k.weight", "blk.0.attn_q.weight", "blk.1.ffn_down.weight")
    shapes = {t.name: t.shape for t in header.tensors}
    assert shapes["blk.0.attn_k.weight.lora_a"] == (64, 4) and shapes["blk.0.attn_k.weight.lora_b"] == (4, 32)
    check_adapter(header, layout, base_sha256="ab" * 32)
    with pytest.raises(AdapterMismatchError, match="trained on base sha256:abababababab"):
        check_adapter(header, layout, base_sha256="cd" * 32)
    other = BaseLayout.read(make_model(n_embd=128, n_head_kv=2)[0])
    with pytest.raises(AdapterMismatchError, match="does not fit the base"):
        check_adapter(header, other)
    with pytest.raises(AdapterMismatchError, match="for a llama model, the base is qwen2"):
        check_adapter(header, BaseLayout("qwen2", 2, 4, 2, layout.tensors, False))
    # weights of another size are refused before training, tensor by tensor
    with pytest.raises(AdapterMismatchError, match=r"blk\.0\.attn_q\.weight is 64x64 in the base, 128x128"):
        check_module_shapes(layout, {"model.layers.0.self_attn.q_proj": (128, 128)})
    with pytest.raises(AdapterMismatchError, match=r"q_proj has no tensor in this llama GGUF \(2 layers\)"):
        check_module_shapes(layout, {"model.layers.7.self_attn.q_proj": (64, 64)})


def test_kennel_create_refuses_an_adapter_for_another_base(
    make_model, tmp_path: Path, kennel_home: Path
) -> None:  # type: ignore[no-untyped-def]
    small, big = make_model(n_head_kv=2)[0], make_model(n_embd=128, n_head_kv=2)[0]
    adapter = write_adapter(
        tmp_path / "a.gguf",
        BaseLayout.read(small),
        _pairs(64, 32),
        alpha=8.0,
        base_sha256="ab" * 32,
        name="t",
    )
    with Store.open(KennelHome(kennel_home)) as store:
        import_gguf(store, small, name="small")
        import_gguf(store, big, name="big")
        ok = build_profile(
            store,
            "s",
            ProfileSpec.model_validate({"from": "small", "adapter": str(adapter)}),
            base_dir=tmp_path,
        )
        assert ok.adapter is not None
        with pytest.raises(AdapterMismatchError, match="does not fit the base"):
            build_profile(
                store,
                "b",
                ProfileSpec.model_validate({"from": "big", "adapter": str(adapter)}),
                base_dir=tmp_path,
            )


def test_quantization_names_for_llama_quantize() -> None:
    assert (ftype_name(0), ftype_name(1), ftype_name(15), ftype_name(7)) == ("F32", "F16", "Q4_K_M", "Q8_0")
    with pytest.raises(FinetuneError, match="--quant"):
        ftype_name(999)


def test_a_gguf_written_halfway_leaves_nothing_behind(tmp_path: Path) -> None:
    from kennel.finetune.gguf_out import gguf_writer

    out = tmp_path / "merged.gguf"
    with pytest.raises(KeyboardInterrupt), gguf_writer(out, "llama") as w:
        w.add_string("general.name", "x")
        w.write_header_to_file()
        raise KeyboardInterrupt  # Ctrl-C midway through a multi-GB merge
    assert list(tmp_path.iterdir()) == []
    with gguf_writer(out, "llama") as w:
        w.add_string("general.name", "x")
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
    assert [p.name for p in tmp_path.iterdir()] == ["merged.gguf"]
