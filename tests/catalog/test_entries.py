"""Every catalog entry is checked: its shape gives the published parameter count, its licence and
sources are well-formed, and names are unique and safe."""

from __future__ import annotations

import re

import pytest

from kennel.catalog.entries import (
    TASKS,
    classifiers,
    entries,
    find_classifier,
    get,
    license_of,
    licenses,
    select,
)
from kennel.errors import ModelNotFoundError
from kennel.fit.quant import GGUF_SCHEMES

ALL = entries()
FAMILIES_ASKED_FOR = {"llama", "mistral", "qwen", "glm", "deepseek", "phi", "gemma", "tinyllama", "smollm"}


def test_catalog_is_broad() -> None:
    assert len(ALL) >= 40
    assert {e.family for e in ALL} >= FAMILIES_ASKED_FOR
    assert any(e.active_params_b for e in ALL if e.family == "qwen")  # Qwen3 MoE
    assert any(e.active_params_b for e in ALL if e.family == "deepseek")  # V3/R1
    assert sum(e.embedding_only for e in ALL) >= 2
    assert {"vi", "zh"} <= {lang for e in ALL for lang in e.languages}
    assert set(TASKS) == {t for e in ALL for t in e.tasks}


def test_names_unique_and_safe() -> None:
    names = [e.name for e in ALL]
    assert len(names) == len(set(names))
    for n in names:
        assert re.fullmatch(r"[a-z0-9][a-z0-9.\-]*[a-z0-9]", n) and ".." not in n and "/" not in n


@pytest.mark.parametrize("entry", ALL, ids=[e.name for e in ALL])
def test_shape_matches_published_parameters(entry) -> None:  # type: ignore[no-untyped-def]
    shape = entry.shape()
    total = shape.n_params / 1e9
    assert abs(total - entry.params_b) / entry.params_b < 0.05, (total, entry.params_b)
    if entry.active_params_b:
        assert shape.is_moe
        # publishers count the token embeddings in "active" (they are read per token)
        embd = next(t for t in shape.tensors if t.name == "token_embd.weight")
        active = (shape.n_params_active + embd.shape[0] * embd.shape[1]) / 1e9
        assert abs(active - entry.active_params_b) / entry.active_params_b < 0.10, (
            active,
            entry.active_params_b,
        )
    else:
        assert not shape.is_moe
    assert shape.n_layer > 0 and shape.n_embd > 0 and shape.n_vocab > 0 and (shape.n_ctx_train or 0) >= 512


@pytest.mark.parametrize("entry", ALL, ids=[e.name for e in ALL])
def test_licence_sources_and_metadata(entry) -> None:  # type: ignore[no-untyped-def]
    lic = license_of(entry)
    assert lic.url.startswith("https://")
    if entry.openness == "open-source":
        assert lic.osi_approved
    assert re.fullmatch(r"20\d\d-(0[1-9]|1[0-2])", entry.released)
    assert re.fullmatch(r"[\w.\-]+/[\w.\-]+", entry.hf_repo)
    assert entry.languages and entry.tasks
    known = {s.name for s in GGUF_SCHEMES}
    if entry.gguf is None:
        return
    files = entry.gguf_files()
    assert [f.quant for f in files] == list(entry.gguf.quants) and set(entry.gguf.quants) <= known
    for f in files:
        assert f.file.endswith(".gguf") and "/" not in f.file and f.quant.lower() in f.file.lower()
        assert f.size > 0.1 * entry.params_b * 1e9  # at least ~1 bit per parameter


def test_every_licence_is_used_and_explained() -> None:
    used = {e.license for e in ALL} | {c.license for c in classifiers()}
    assert used == set(licenses())
    llama = licenses()["llama3.1"]
    assert llama.commercial == "conditional" and "700 million" in llama.conditions
    assert licenses()["apache-2.0"].osi_approved and licenses()["apache-2.0"].commercial == "yes"
    assert licenses()["qwen-research"].commercial == "no"


def test_published_gguf_sizes() -> None:
    """Sizes are computed by llama.cpp's quantization rules; they agree with the published files
    (bartowski's Llama-3.1-8B-Instruct-Q4_K_M.gguf is 4.92 GB)."""
    q4 = next(f for f in get("llama-3.1-8b").gguf_files() if f.quant == "Q4_K_M")
    assert q4.file == "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf"
    assert abs(q4.size - 4.92e9) / 4.92e9 < 0.01


def test_select_filters() -> None:
    vi_commercial = select(lang="vi", commercial=True)
    assert vi_commercial and all(
        "vi" in e.languages and license_of(e).commercial != "no" for e in vi_commercial
    )
    assert "qwen2.5-3b" not in {e.name for e in select(commercial=True)}  # Qwen research licence
    assert all(e.embedding_only for e in select(task="embedding"))
    assert {e.name for e in select(task="coding")} >= {"qwen2.5-coder-7b", "qwen2.5-coder-32b"}


def test_unknown_name_suggests() -> None:
    with pytest.raises(ModelNotFoundError) as exc:
        get("lama-3.1-8b")
    assert "llama-3.1-8b" in (exc.value.hint or "")
    assert get(" Llama-3.1-8B ").name == "llama-3.1-8b"


def test_guard_models_and_classifiers() -> None:
    guards = {e.name for e in select(task="guard")}
    assert guards == {"qwen3guard-0.6b", "llama-guard-3-1b"} and all(get(n).guard_only for n in guards)
    assert not guards & {e.name for e in select(task="chat")}
    names = {c.name for c in classifiers()}
    assert names == {"prompt-guard-2-86m", "deberta-v3-prompt-injection-v2"}
    pg = find_classifier(" Prompt-Guard-2-86M ")
    assert pg is not None and pg.gated and licenses()[pg.license].url.startswith("https://")
    assert {"en", "fr"} <= set(pg.languages) and find_classifier("llama-3.1-8b") is None
