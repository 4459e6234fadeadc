"""Model references: local files, URLs and the hub (a loopback server), catalog names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kennel.catalog.resolve import resolve
from kennel.errors import ModelNotFoundError, NotGGUFError, RemoteError, UnsupportedModelError
from kennel.model.synthetic import synthetic_shape, write_synthetic_gguf
from tests.hubserver import HubState, Repo, hub_server

LLAMA_CONFIG = {
    "model_type": "llama",
    "num_hidden_layers": 32,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "tie_word_embeddings": False,
}


def test_local_file(make_model) -> None:
    path, shape = make_model(n_layer=2, n_embd=64, n_head=2, n_ff=64, n_vocab=300)
    r = resolve(str(path))
    assert r.kind == "gguf-file"
    assert r.shape.n_params == shape.n_params
    assert r.file_size == path.stat().st_size


def test_missing_file() -> None:
    with pytest.raises(ModelNotFoundError, match="No file"):
        resolve("/nowhere/model.gguf")


def test_catalog_name_and_typo() -> None:
    assert resolve("llama-3.1-8b").shape.n_layer == 32
    with pytest.raises(ModelNotFoundError, match=r"llama-3\.1-8b"):
        resolve("llama-3.1-8c")


def test_split_files_are_summed(tmp_path: Path) -> None:
    shape = synthetic_shape(n_layer=3, n_embd=64, n_head=2, n_ff=64, n_vocab=300)
    first = write_synthetic_gguf(tmp_path / "m.gguf", shape, split_max_tensors=10)
    r = resolve(str(first))
    assert len(r.shape.tensors) == len(shape.tensors)
    assert r.shape.n_params == shape.n_params


def _big_model(tmp_path: Path) -> bytes:
    shape = synthetic_shape(n_layer=4, n_embd=512, n_head=8, n_ff=2048, n_vocab=2000)
    return write_synthetic_gguf(tmp_path / "big.gguf", shape).read_bytes()


def test_url_reads_only_the_header(tmp_path: Path) -> None:
    data = _big_model(tmp_path)
    with hub_server(HubState(repos={"a/b": Repo(files={"big.gguf": data})})) as (url, st):
        r = resolve(f"{url}/files/big.gguf")
    assert r.kind == "gguf-url"
    assert r.shape.n_layer == 4
    assert r.file_size == len(data)
    assert st.bytes_sent < len(data) / 4, "more than the header travelled"
    assert len(st.requests) <= 3


def test_url_server_ignoring_range(tmp_path: Path) -> None:
    data = _big_model(tmp_path)
    with hub_server(HubState(repos={"a/b": Repo(files={"big.gguf": data})}, ignore_range={"big.gguf"})) as (
        url,
        _,
    ):
        assert resolve(f"{url}/files/big.gguf").shape.n_layer == 4


def test_url_html_and_404(tmp_path: Path) -> None:
    with hub_server(HubState(repos={"a/b": Repo(files={"x.gguf": b"GGUF"})}, html={"x.gguf"})) as (url, _):
        with pytest.raises(NotGGUFError, match="web page"):
            resolve(f"{url}/files/x.gguf")
        with pytest.raises(ModelNotFoundError, match="404"):
            resolve(f"{url}/files/missing.gguf")


def test_url_unreachable() -> None:
    with pytest.raises(RemoteError, match="Could not read"):
        resolve("http://127.0.0.1:9/model.gguf")


@pytest.fixture
def gguf_repo(tmp_path: Path):
    q4 = write_synthetic_gguf(
        tmp_path / "q4.gguf", synthetic_shape(n_layer=2, n_embd=64, n_head=2, n_ff=64, n_vocab=300)
    ).read_bytes()
    q8 = write_synthetic_gguf(
        tmp_path / "q8.gguf", synthetic_shape(n_layer=3, n_embd=64, n_head=2, n_ff=64, n_vocab=300)
    ).read_bytes()
    files = {
        "Tiny-Q4_K_M.gguf": q4,
        "Tiny-Q8_0.gguf": q8,
        "mmproj-Tiny-f16.gguf": b"GGUF",
        "README.md": b"hi",
    }
    with hub_server(HubState(repos={"owner/tiny-GGUF": Repo(files=files)})) as (url, st):
        yield url, st


def test_hub_quant_picks_the_file(gguf_repo, monkeypatch: pytest.MonkeyPatch) -> None:
    url, st = gguf_repo
    monkeypatch.setenv("HF_ENDPOINT", url)
    r = resolve("hf.co/owner/tiny-GGUF:Q8_0")
    assert (r.kind, r.file_name, r.shape.n_layer) == ("gguf-hub", "Tiny-Q8_0.gguf", 3)
    assert {n for n, _ in r.repo_files} == {"Tiny-Q4_K_M.gguf", "Tiny-Q8_0.gguf"}
    assert resolve("owner/tiny-GGUF").file_name == "Tiny-Q4_K_M.gguf"  # default preference
    assert resolve("owner/tiny-GGUF", file="Tiny-Q8_0.gguf").shape.n_layer == 3
    assert len(st.requests) < 30


def test_hub_missing_quant_lists_files(gguf_repo, monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = gguf_repo
    monkeypatch.setenv("HF_ENDPOINT", url)
    with pytest.raises(ModelNotFoundError, match=r"no Q5_K_M.*Tiny-Q4_K_M\.gguf"):
        resolve("hf.co/owner/tiny-GGUF:Q5_K_M")
    with pytest.raises(ModelNotFoundError, match="not found on the hub"):
        resolve("hf.co/owner/nothing-here")


def test_hub_config_json(monkeypatch: pytest.MonkeyPatch) -> None:
    repos = {
        "meta/llama": Repo(
            files={"config.json": json.dumps(LLAMA_CONFIG).encode(), "model.safetensors": b"x"}
        ),
        "odd/arch": Repo(
            files={"config.json": json.dumps({**LLAMA_CONFIG, "model_type": "wavenet"}).encode()}
        ),
        "no/files": Repo(files={"README.md": b"hi"}),
        "gated/model": Repo(files={"config.json": b"{}"}, gated=True),
    }
    with hub_server(HubState(repos=repos)) as (url, _):
        monkeypatch.setenv("HF_ENDPOINT", url)
        r = resolve("meta/llama")
        assert r.kind == "hf-config"
        assert abs(r.shape.n_params / 1e9 - 8.03) < 0.01
        with pytest.raises(UnsupportedModelError, match="wavenet"):
            resolve("odd/arch")
        with pytest.raises(Exception, match=r"neither GGUF files nor a config\.json"):
            resolve("no/files")
        with pytest.raises(RemoteError, match="HF_TOKEN"):
            resolve("gated/model")


def test_no_network_says_so_and_how_to_work_offline() -> None:
    """The test environment's HF_ENDPOINT is a closed loopback port: what a user without network
    meets. It is a RemoteError naming the endpoint and the offline way, never an internal error."""
    with pytest.raises(
        RemoteError, match=r"Cannot reach the Hugging Face hub at http://127\.0\.0\.1:9"
    ) as info:
        resolve("hf.co/Qwen/Qwen2.5-0.5B-Instruct-GGUF")
    assert "HF_ENDPOINT" in str(info.value) and "kennel import" in str(info.value)
    with pytest.raises(RemoteError, match="Cannot reach"):
        resolve("Qwen/Qwen3-8B")
