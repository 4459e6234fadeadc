"""A profile can carry a LoRA adapter GGUF (general.type = adapter), stored as its own blob."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from kennel.errors import NotGGUFError
from kennel.settings import KennelHome
from kennel.store.add import build_profile, import_gguf
from kennel.store.profile import ProfileSpec
from kennel.store.registry import Store


def _write_adapter(path: Path) -> None:
    """The layout llama.cpp's convert_lora_to_gguf.py writes: lora_a/lora_b pairs per weight."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_string("general.type", "adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", 16.0)
    rng = np.random.default_rng(0)
    w.add_tensor("blk.0.attn_q.weight.lora_a", rng.standard_normal((8, 64)).astype(np.float32))
    w.add_tensor("blk.0.attn_q.weight.lora_b", rng.standard_normal((64, 8)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_profile_with_adapter(kennel_home: Path, make_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, _ = make_model()
    adapter = tmp_path / "support-lora.gguf"
    _write_adapter(adapter)
    with Store.open(KennelHome(kennel_home)) as store:
        base = import_gguf(store, model, name="base")
        spec = ProfileSpec.model_validate(
            {"from": "base", "adapter": "support-lora.gguf", "adapter_scale": 0.5}
        )
        profile = build_profile(store, "support", spec, base_dir=tmp_path)
        assert (
            profile.base == base.profile.base and profile.adapter is not None and profile.adapter_scale == 0.5
        )
        assert store.blob(profile.adapter).kind == "adapter"
        v = store.add_version("support", profile, action="create")
        assert {d for d, _, _ in v.profile.blobs()} == {*base.profile.base, profile.adapter}
        with pytest.raises(NotGGUFError, match="LoRA adapter, not a model"):
            import_gguf(store, adapter)
        with pytest.raises(NotGGUFError, match="not a LoRA adapter"):
            build_profile(
                store,
                "x",
                ProfileSpec.model_validate({"from": "base", "adapter": str(model)}),
                base_dir=tmp_path,
            )


def test_parameters_merge_key_by_key(kennel_home: Path, make_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, _ = make_model()
    with Store.open(KennelHome(kennel_home)) as store:
        import_gguf(store, model, name="base")
        first = build_profile(
            store, "base", ProfileSpec.model_validate({"parameters": {"temperature": 0.2}}), base_dir=tmp_path
        )
        store.add_version("base", first, action="create")
        second = build_profile(
            store, "base", ProfileSpec.model_validate({"parameters": {"top_p": 0.9}}), base_dir=tmp_path
        )
        assert second.parameters.temperature == 0.2 and second.parameters.top_p == 0.9
