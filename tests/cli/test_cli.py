"""The CLI as a user meets it: JSON for scripts, one clear line and exit code 2 for bad input."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hubserver import HubState, Repo, hub_server


def kennel(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kennel.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_hw_json() -> None:
    r = kennel("hw", "--json", "--no-bandwidth")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["schema"] == "kennel.hw/v1"
    hw = doc["hardware"]
    assert hw["source"] == "probed" and hw["cpu"]["cores"] >= 1 and hw["memory"]["total"] > 0
    from kennel.hardware.llamacpp import probe_llama_build

    build = probe_llama_build()  # what this machine's build says, GPU build or not
    assert hw["llama"]["installed"] and hw["llama"]["gpu_offload"] is build.gpu_offload
    assert hw["llama"]["version"] == build.version and "CPU" in hw["llama"]["backends"]


def test_hw_what_if_and_saved_profile(tmp_path: Path) -> None:
    r = kennel("hw", "--gpu", "RTX 4090", "--gpu-count", "2", "--ram", "128G", "--json")
    doc = json.loads(r.stdout)
    assert [g["name"] for g in doc["hardware"]["gpus"]] == ["RTX 4090", "RTX 4090"]
    saved = tmp_path / "box.json"
    saved.write_text(r.stdout)
    fit = kennel(
        "fit", "llama-3.3-70b", "--hardware", str(saved), "--json", "--no-engines", "--quant", "Q4_K_M"
    )
    assert fit.returncode == 0, fit.stderr
    opt = json.loads(fit.stdout)["options"][0]
    assert opt["fits"] == "gpu" and opt["gpu_split_layers"] == [41, 40]
    short = tmp_path / "plan.yaml"
    short.write_text("gpu: RTX 4090\ngpu_count: 2\nram: 128G\n")
    again = kennel(
        "fit", "llama-3.3-70b", "--hardware", str(short), "--json", "--no-engines", "--quant", "Q4_K_M"
    )
    assert json.loads(again.stdout)["options"][0]["gpu_split_layers"] == [41, 40]
    broken = tmp_path / "broken.yaml"
    broken.write_text("cpu: 3\n")
    assert "not a kennel hardware profile" in _bad("fit", "tinyllama-1.1b", "--hardware", str(broken))
    for text, said in (
        ("gpu: RTX 3090\ngpus: 2\nvram: 24G\n", "unknown keys gpus, vram"),  # a typo, named
        ("gpu: RTX 3090\ngpu_count: two\n", "gpu_count is 'two', not a whole number"),
        ("memory: {}\n", "it has no 'cpu'"),
    ):
        broken.write_text(text)
        assert said in _bad("fit", "tinyllama-1.1b", "--hardware", str(broken)), text
    human = kennel("hw", "--gpu", "M3 Max", "--ram", "64G")
    assert "M3 Max" in human.stdout and "Metal limit" in human.stdout
    assert "Gaudi 3" in kennel("hw", "--list-gpus").stdout


def test_fit_local_file_json(make_model) -> None:
    path, shape = make_model(n_layer=2, n_embd=128, n_head=4, n_head_kv=2, n_ff=256, n_vocab=600)
    r = kennel("fit", str(path), "--json", "--ctx", "2k")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["schema"] == "kennel.fit/v1"
    assert doc["model"]["layers"] == 2 and doc["run"]["ctx"] == 2048
    own = [o for o in doc["options"] if o["is_file"]]
    assert len(own) == 1 and own[0]["weights_bytes"] == sum(t.nbytes for t in shape.tensors)
    assert doc["recommended"] in {o["quant"] for o in doc["options"]}


def test_fit_table_for_people() -> None:
    r = kennel("fit", "qwen3-30b-a3b", "--gpu", "RTX 4090", "--ram", "64G")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "Recommended:" in out and "Q4_K_M" in out and "experts of" in out and "AWQ-INT4" in out


def test_fit_hub_gguf(make_model, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = make_model(n_layer=3, n_embd=128, n_head=4, n_ff=256, n_vocab=600)
    with hub_server(
        HubState(repos={"me/tiny-GGUF": Repo(files={"tiny-Q4_K_M.gguf": path.read_bytes()})})
    ) as (url, st):
        r = kennel("fit", "hf.co/me/tiny-GGUF:Q4_K_M", "--json", env={"HF_ENDPOINT": url})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["model"]["file"] == "tiny-Q4_K_M.gguf"
    assert len(st.requests) < 20


def _bad(*args: str, env: dict[str, str] | None = None) -> str:
    r = kennel(*args, env=env)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    assert r.stderr.startswith("error:"), r.stderr
    return r.stderr


def test_bad_files(tmp_path: Path, make_model) -> None:
    assert "No file" in _bad("fit", str(tmp_path / "missing.gguf"))
    html = tmp_path / "page.gguf"
    html.write_text("<!DOCTYPE html><html><body>login</body></html>")
    assert "not a GGUF file" in _bad("fit", str(html))
    path, _ = make_model(n_layer=2, n_embd=64, n_head=2, n_ff=64, n_vocab=300)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(path.read_bytes()[:-100])
    assert "truncated" in _bad("fit", str(cut))
    assert "hint:" in _bad("fit", str(cut))


def test_bad_urls_and_configs() -> None:
    repos = {
        "a/b": Repo(files={"page.gguf": b""}),
        "c/d": Repo(files={"config.json": json.dumps({"model_type": "wavenet"}).encode()}),
    }
    with hub_server(HubState(repos=repos, html={"page.gguf"})) as (url, _):
        assert "web page" in _bad("fit", f"{url}/files/page.gguf")
        assert "404" in _bad("fit", f"{url}/files/nothing.gguf")
        assert "wavenet" in _bad("fit", "c/d", env={"HF_ENDPOINT": url})


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--ctx", "0"), "at least 1"),
        (("--ctx", "1000000000"), "not possible"),
        (("--ctx", "lots"), "Cannot read number"),
        (("--kv-type", "q4_0", "--flash-attn", "off"), "flash attention"),
        (("--quant", "Q9_Z", "--measure"), "Unknown quantization"),
        (("--gpu", "RTX 4099"), "RTX 4090"),
        (("--ram", "lots"), "Cannot read size"),
    ],
)
def test_bad_options(args: tuple[str, ...], words: str) -> None:
    assert words in _bad("fit", "tinyllama-1.1b", *args)


def test_usage_errors_exit_2() -> None:
    r = kennel("fit")
    assert r.returncode == 2 and "Missing argument" in r.stderr


def test_doctor_fails_on_taken_port() -> None:
    ok = kennel("doctor", "--json", "--port", "1")  # port 1 needs root to bind; either way it is a check
    assert json.loads(ok.stdout)["schema"] == "kennel.doctor/v1"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        r = kennel("doctor", "--json", "--port", str(s.getsockname()[1]))
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    port = next(c for c in doc["checks"] if c["name"] == "serving port")
    assert port["status"] == "fail" and doc["ok"] is False


def test_catalog_show_recommend() -> None:
    listed = json.loads(kennel("catalog", "--lang", "vi", "--license", "commercial", "--json").stdout)
    assert listed["schema"] == "kennel.catalog/v1" and listed["models"]
    assert all("vi" in m["languages"] and m["license"]["commercial"] != "no" for m in listed["models"])
    osi = json.loads(kennel("catalog", "--license", "open-source", "--json").stdout)["models"]
    assert osi and all(m["license"]["osi_approved"] for m in osi)
    shown = json.loads(kennel("show", "llama-3.1-8b", "--json").stdout)["model"]
    assert shown["shape"]["n_layer"] == 32 and shown["shape"]["n_head_kv"] == 8
    assert "700 million" in shown["license"]["conditions"]
    assert any(f["quant"] == "Q4_K_M" and f["file"].endswith("Q4_K_M.gguf") for f in shown["gguf_files"])
    human = kennel("show", "qwen3-30b-a3b").stdout
    assert "3.3B active" in human and "Apache" in human and "Q4_K_M" in human
    rec = kennel(
        "recommend", "--gpu", "RTX 4090", "--ram", "64G", "--task", "writing", "--top", "3", "--json"
    )
    doc = json.loads(rec.stdout)
    assert doc["schema"] == "kennel.recommend/v1" and len(doc["picks"]) == 3
    assert doc["picks"][0]["fits"] == "gpu" and doc["picks"][0]["readable"]
    assert doc["upgrade"]["picks"][0]["quality_b"] > doc["picks"][0]["quality_b"]
    text = kennel("recommend", "--gpu", "RTX 4090", "--ram", "64G", "--top", "2").stdout
    assert "Why" in text and "kennel pull" in text and "one more RTX 4090" in text


def test_catalog_bad_input() -> None:
    assert "Unknown task" in _bad("catalog", "--task", "poetry")
    assert "ISO 639-1" in _bad("recommend", "--lang", "xx", "--ram", "8G")
    assert "Did you mean llama-3.1-8b" in _bad("show", "lama-3.1-8b")


def test_fit_and_show_take_a_store_model_as_serve_does(make_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = {"KENNEL_HOME": str(tmp_path / "home")}
    path, shape = make_model(n_layer=2, n_embd=128, n_head=4, n_head_kv=2, n_ff=256, n_vocab=600)
    assert kennel("import", str(path), "--name", "desk", env=env).returncode == 0
    assert kennel("tag", "desk@1", "prod", env=env).returncode == 0
    for ref in ("desk:prod", "desk@1", "desk"):
        fit = kennel("fit", ref, "--json", "--ctx", "2k", env=env)
        assert fit.returncode == 0, (ref, fit.stderr)
        own = [o for o in json.loads(fit.stdout)["options"] if o["is_file"]]
        assert own and own[0]["weights_bytes"] == sum(t.nbytes for t in shape.tensors), ref
    shown = kennel("show", "desk:prod", "--json", env=env)
    assert shown.returncode == 0 and json.loads(shown.stdout)["version"]["version"] == 1
    missing = kennel("fit", "desk:nightly", env=env)
    assert missing.returncode == 2 and "desk has no tag 'nightly'" in missing.stderr
