"""`kennel pull` against a loopback server that speaks the hub's endpoints: resume, checksums,
dropped connections, wrong bytes, full disks, kill -9, concurrent pulls of one blob."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kennel.errors import (
    ChecksumError,
    DiskSpaceError,
    InvalidNameError,
    ModelNotFoundError,
    NotGGUFError,
    RemoteError,
)
from kennel.settings import KennelHome
from kennel.store import pull as pull_mod
from kennel.store.registry import Store
from tests.hfconfig import TINY_LLAMA_CONFIG
from tests.hubserver import HubState, Repo, hub_server

pytestmark = pytest.mark.timeout(120)
REPO = "bartowski/Llama-3.2-1B-Instruct-GGUF"  # the catalog's source for llama-3.2-1b


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    from kennel.model.synthetic import synthetic_shape, write_synthetic_gguf

    root = tmp_path_factory.mktemp("hubfiles")
    out = {}
    for quant, ftype, n_ff in (("Q4_K_M", 15, 256), ("Q8_0", 7, 384)):
        path = root / f"{quant}.gguf"
        write_synthetic_gguf(path, synthetic_shape(n_ff=n_ff, n_vocab=2048), file_type=ftype)
        out[quant] = path.read_bytes()
    return out


@pytest.fixture
def hub(ggufs: dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> Iterator[HubState]:
    files = {f"Llama-3.2-1B-Instruct-{q}.gguf": b for q, b in ggufs.items()}
    files["README.md"] = b"# a model card\n"
    state = HubState(
        repos={REPO: Repo(files=files), "someone/gated-GGUF": Repo(files=dict(files), gated=True)}
    )
    with hub_server(state) as (url, st):
        monkeypatch.setenv("HF_ENDPOINT", url)
        yield st


@pytest.fixture
def store(kennel_home: Path) -> Iterator[Store]:
    with Store.open(KennelHome(kennel_home)) as s:
        yield s


def _pull(store: Store, ref: str, **kw: Any) -> Any:
    return pull_mod.pull(store, pull_mod.plan_pull(ref, **kw))


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def test_pull_catalog_name_and_hub_ref(store: Store, hub: HubState, ggufs: dict[str, bytes]) -> None:
    v = _pull(store, "llama-3.2-1b:Q8_0")
    assert v.model == "llama-3.2-1b" and v.version == 1 and set(v.tags) == {"latest", "q8_0"}
    digest = v.profile.base[0]
    assert digest == _sha(ggufs["Q8_0"]) and store.blobs.path(digest).read_bytes() == ggufs["Q8_0"]
    assert not os.access(store.blobs.path(digest), os.W_OK) or os.geteuid() == 0  # read-only blob
    assert store.blob(digest).source.startswith(f"hf.co/{REPO}@")
    assert store.catalog_name("llama-3.2-1b") == "llama-3.2-1b"
    # the Ollama-style hub reference picks the file by quant; --name names it in the store
    v2 = _pull(store, f"hf.co/{REPO}:q4_k_m")
    assert v2.model == "llama-3.2-1b-instruct" and v2.profile.base[0] == _sha(ggufs["Q4_K_M"])
    v3 = _pull(store, REPO, file="Llama-3.2-1B-Instruct-Q8_0.gguf", name="mine")
    assert v3.model == "mine" and v3.profile.base == v.profile.base  # same blob, stored once
    assert len(store.blobs.all_digests()) == 2 and store.blobs.partial_files() == []
    # pulling what is already there transfers nothing and makes no new version
    requests = len(hub.ranges)
    again = _pull(store, "llama-3.2-1b:Q8_0")
    assert again.version == 1 and len(hub.ranges) == requests


def test_default_quant_comes_from_recommend(store: Store, hub: HubState) -> None:
    target = pull_mod.plan_pull("llama-3.2-1b", default_quant=lambda entry: "Q4_K_M")
    assert target.files[0].path == "Llama-3.2-1B-Instruct-Q4_K_M.gguf" and target.quant == "Q4_K_M"


def test_unknown_quant_file_and_refs(store: Store, hub: HubState) -> None:
    with pytest.raises(ModelNotFoundError, match="no Q2_K GGUF"):
        pull_mod.plan_pull(f"hf.co/{REPO}:Q2_K")
    with pytest.raises(ModelNotFoundError, match="no file"):
        pull_mod.plan_pull(REPO, file="nope.gguf")
    with pytest.raises(ModelNotFoundError, match="not found"):
        pull_mod.plan_pull("hf.co/nobody/nothing-GGUF")
    with pytest.raises(RemoteError, match="gated"):
        pull_mod.plan_pull("hf.co/someone/gated-GGUF:Q8_0")
    for bad in ("../../etc/passwd", "llama;rm -rf", "a b", "$(reboot)"):
        with pytest.raises((InvalidNameError, ModelNotFoundError)):
            pull_mod.plan_pull(bad)
    with pytest.raises(InvalidNameError):
        pull_mod.plan_pull("llama-3.2-1b:Q8_0", name="x/../y")
    assert hub.ranges == []  # nothing was downloaded


def test_dropped_connection_resumes_with_range(store: Store, hub: HubState, ggufs: dict[str, bytes]) -> None:
    name = "Llama-3.2-1B-Instruct-Q8_0.gguf"
    size = len(ggufs["Q8_0"])
    hub.drop_at[name] = [size // 3, 2 * size // 3]
    v = _pull(store, "llama-3.2-1b:Q8_0")
    assert store.blobs.path(v.profile.base[0]).read_bytes() == ggufs["Q8_0"]
    assert hub.ranges[0] == "" and len(hub.ranges) == 3
    assert all(r.startswith("bytes=") and int(r[6:-1]) > 0 for r in hub.ranges[1:])
    assert hub.bytes_sent < size * 1.2  # resumed, not restarted


def test_wrong_bytes_are_never_admitted(store: Store, hub: HubState, ggufs: dict[str, bytes]) -> None:
    hub.corrupt.add("Llama-3.2-1B-Instruct-Q8_0.gguf")
    with pytest.raises(ChecksumError, match="not the"):
        _pull(store, "llama-3.2-1b:Q8_0")
    assert store.blobs.all_digests() == set() and store.models() == [] and store.blobs.partial_files() == []
    hub.corrupt.clear()
    v = _pull(store, "llama-3.2-1b:Q8_0")  # the next pull starts afresh and succeeds
    assert v.profile.base[0] == _sha(ggufs["Q8_0"])


def test_not_a_gguf_even_with_the_right_checksum(store: Store, hub: HubState) -> None:
    hub.repos[REPO].files["Llama-3.2-1B-Instruct-Q6_K.gguf"] = b"<!doctype html><html>login</html>" * 40
    with pytest.raises(NotGGUFError):
        _pull(store, f"hf.co/{REPO}:Q6_K")
    assert store.blobs.all_digests() == set() and store.models() == []


def test_server_ignoring_range_restarts_cleanly(store: Store, hub: HubState, ggufs: dict[str, bytes]) -> None:
    name = "Llama-3.2-1B-Instruct-Q8_0.gguf"
    hub.ignore_range.add(name)
    hub.drop_at[name] = [len(ggufs["Q8_0"]) // 2]
    v = _pull(store, "llama-3.2-1b:Q8_0")
    assert store.blobs.path(v.profile.base[0]).read_bytes() == ggufs["Q8_0"]


def test_disk_space_checked_before_starting(
    store: Store, hub: HubState, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=10 * 2**20))
    with pytest.raises(DiskSpaceError, match="needs"):
        _pull(store, "llama-3.2-1b:Q8_0")
    assert hub.ranges == []


class _FillingFile:
    """A file object whose disk fills after ``room`` more bytes."""

    def __init__(self, f: Any, room: list[int]) -> None:
        self.f, self.room = f, room

    def write(self, b: bytes) -> int:
        if self.room[0] < len(b):
            self.f.write(b[: self.room[0]])
            self.room[0] = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room[0] -= len(b)
        return int(self.f.write(b))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.f, name)

    def __enter__(self) -> _FillingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.f.close()


def test_disk_full_mid_pull_then_resume(
    store: Store, hub: HubState, ggufs: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    size = len(ggufs["Q8_0"])
    room = [size // 2]
    monkeypatch.setattr(pull_mod, "open", lambda p, mode: _FillingFile(open(p, mode), room), raising=False)  # noqa: SIM115
    with pytest.raises(DiskSpaceError, match="filled up"):
        _pull(store, "llama-3.2-1b:Q8_0")
    assert store.models() == [] and store.blobs.all_digests() == set()
    (part,) = store.blobs.partial_files()
    assert part.stat().st_size == size // 2
    room[0] = 1 << 40  # space was freed
    v = _pull(store, "llama-3.2-1b:Q8_0")
    assert store.blobs.path(v.profile.base[0]).read_bytes() == ggufs["Q8_0"]
    assert hub.ranges[-1] == f"bytes={size // 2}-"


def test_download_gives_up_after_bounded_retries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx

    monkeypatch.setattr(pull_mod.time, "sleep", lambda s: None)
    part = tmp_path / "x.part"
    part.write_bytes(b"kept")
    with httpx.Client() as client, pytest.raises(RemoteError, match="keeps failing"):
        pull_mod.download(client, "http://127.0.0.1:9/f.gguf", part, size=100, headers={})
    assert part.read_bytes() == b"kept"  # what was there is kept for the next try


def test_concurrent_pulls_of_one_blob(
    store: Store, hub: HubState, ggufs: dict[str, bytes], kennel_home: Path
) -> None:
    hub.delay["Llama-3.2-1B-Instruct-Q8_0.gguf"] = 0.05
    results: list[Any] = []

    def one() -> None:
        with Store.open(KennelHome(kennel_home)) as s:
            results.append(_pull(s, "llama-3.2-1b:Q8_0"))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 2 and results[0].profile == results[1].profile
    assert store.blobs.path(results[0].profile.base[0]).read_bytes() == ggufs["Q8_0"]
    assert len(hub.ranges) == 1  # the second waited on the lock and found the blob


def test_split_gguf_pulls_every_shard(store: Store, hub: HubState, ggufs: dict[str, bytes]) -> None:
    files = hub.repos[REPO].files
    files["big/Llama-Q8_0-00001-of-00002.gguf"] = ggufs["Q8_0"]
    files["big/Llama-Q8_0-00002-of-00002.gguf"] = ggufs["Q4_K_M"]
    v = _pull(store, REPO, file="big/Llama-Q8_0-00001-of-00002.gguf", name="split")
    assert v.profile.base == (_sha(ggufs["Q8_0"]), _sha(ggufs["Q4_K_M"]))


def test_kill_9_mid_pull_then_resume(hub: HubState, ggufs: dict[str, bytes], kennel_home: Path) -> None:
    """A pull killed with SIGKILL leaves a partial file and no model; the next pull resumes it."""
    name = "Llama-3.2-1B-Instruct-Q8_0.gguf"
    size = len(ggufs["Q8_0"])
    hub.delay[name] = 0.15
    env = {**os.environ, "KENNEL_HOME": str(kennel_home)}
    cmd = [sys.executable, "-m", "kennel.cli.main", "pull", "llama-3.2-1b:Q8_0", "--json"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial_dir = kennel_home / "store" / "partial"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        parts = list(partial_dir.glob("*.part")) if partial_dir.is_dir() else []
        if parts and parts[0].stat().st_size >= 2 * 65536:
            break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("the pull never started writing")
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    with Store.open(KennelHome(kennel_home)) as s:
        assert s.models() == [] and s.blobs.all_digests() == set()
        kept = s.blobs.partial_files()[0].stat().st_size
        assert 0 < kept < size
    hub.delay.clear()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert hub.ranges[-1].startswith("bytes=") and int(hub.ranges[-1][6:-1]) >= kept
    with Store.open(KennelHome(kennel_home)) as s:
        (digest,) = s.blobs.all_digests()
        assert s.blobs.path(digest).read_bytes() == ggufs["Q8_0"] and s.blobs.partial_files() == []


def test_cli_pull_default_quant_and_errors(hub: HubState, ggufs: dict[str, bytes], kennel_home: Path) -> None:
    """As a user: no quant given, so the one `kennel recommend` picks for this machine is pulled."""
    import json

    from kennel.catalog.entries import get
    from kennel.catalog.recommend import best_quant
    from kennel.hardware.probe import probe

    expected = best_quant(get("llama-3.2-1b"), probe(KennelHome(kennel_home)))
    hub.repos[REPO].files.update(
        {f"Llama-3.2-1B-Instruct-{q}.gguf": ggufs["Q8_0"] for q in get("llama-3.2-1b").gguf.quants}
    )  # type: ignore[union-attr]
    run = [sys.executable, "-m", "kennel.cli.main"]
    r = subprocess.run([*run, "pull", "llama-3.2-1b", "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert (
        doc["schema"] == "kennel.pull/v1"
        and doc["version"]["file"] == f"Llama-3.2-1B-Instruct-{expected}.gguf"
    )
    human = subprocess.run(
        [*run, "pull", f"hf.co/{REPO}:Q4_K_M"], capture_output=True, text=True, timeout=120
    )
    assert human.returncode == 0 and "llama-3.2-1b-instruct@1" in human.stdout and "Pulling" in human.stderr
    hub.corrupt.add("Llama-3.2-1B-Instruct-Q8_0.gguf")
    hub.repos[REPO].files["Llama-3.2-1B-Instruct-Q8_0.gguf"] = ggufs["Q4_K_M"]
    bad = subprocess.run(
        [*run, "pull", "llama-3.2-1b:Q8_0", "--name", "other"], capture_output=True, text=True, timeout=120
    )
    assert (
        bad.returncode == 2
        and "\nerror:" in bad.stderr
        and "sha256" in bad.stderr
        and "Traceback" not in bad.stderr
    )


# ---- transformers (safetensors) repos, for vLLM --------------------------------------------


@pytest.fixture
def folder_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubState]:
    import json

    files = {
        "config.json": json.dumps(TINY_LLAMA_CONFIG).encode(),
        "tokenizer.json": b'{"model": {"vocab": {}}}',
        "tokenizer_config.json": b'{"chat_template": "{{ messages }}"}',
        "model-00001-of-00002.safetensors": os.urandom(300_000),
        "model-00002-of-00002.safetensors": os.urandom(200_000),
        "model.safetensors.index.json": json.dumps(
            {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
        ).encode(),
        "consolidated.safetensors": os.urandom(1000),  # the same weights in one file: left out
        "README.md": b"# card\n",  # not for vLLM: left out
        "pytorch_model.bin": os.urandom(1000),  # a duplicate of the weights: left out
        "original/consolidated.00.pth": os.urandom(1000),  # another checkpoint: left out
        "modeling_custom.py": b"import os\n",  # custom code kennel never runs: left out
    }
    state = HubState(repos={"acme/Tiny-Llama-AWQ": Repo(files=files)})
    with hub_server(state) as (url, st):
        monkeypatch.setenv("HF_ENDPOINT", url)
        yield st


def test_a_transformers_repo_is_pulled_as_the_files_vllm_loads(
    store: Store, folder_hub: HubState, kennel_home: Path, tmp_path: Path
) -> None:
    repo = folder_hub.repos["acme/Tiny-Llama-AWQ"]
    target = pull_mod.plan_pull("hf.co/acme/Tiny-Llama-AWQ")
    assert target.format == "transformers" and target.name == "tiny-llama-awq"
    paths = [f.path for f in target.files]
    assert paths == [
        "config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    # a corrupted download is refused, and one cut half-way resumes, as for GGUF
    folder_hub.corrupt.add("model-00001-of-00002.safetensors")
    with pytest.raises(ChecksumError):
        pull_mod.pull(store, target)
    folder_hub.corrupt.clear()
    folder_hub.corrupt.add("tokenizer.json")  # outside LFS: checked against its git blob id
    folder_hub.drop_at["model-00002-of-00002.safetensors"] = [100_000]  # the connection dies there
    with pytest.raises(ChecksumError, match="git id"):
        pull_mod.pull(store, target)
    folder_hub.corrupt.clear()
    v = pull_mod.pull(store, target)
    assert v.profile.format == "transformers" and list(v.profile.files) == paths
    assert any(r.startswith("bytes=100000") for r in folder_hub.ranges)  # resumed, not restarted
    for digest, path in zip(v.profile.base, paths, strict=True):
        assert store.blobs.path(digest).read_bytes() == repo.files[path]

    # served from the store: a folder of links with each file at its path, run by vLLM
    from kennel.hardware.whatif import what_if
    from kennel.server.models import model_spec

    spec = model_spec("tiny-llama-awq", home=KennelHome(kennel_home), hw=what_if(ram=16 * 2**30), ctx=512)
    assert spec.engine == "vllm" and spec.plan.model.is_dir() and set(spec.digests) == set(v.profile.base)
    assert (spec.plan.model / "config.json").read_bytes() == repo.files["config.json"]
    again = model_spec("tiny-llama-awq", home=KennelHome(kennel_home), hw=what_if(ram=16 * 2**30), ctx=512)
    assert again.plan.model == spec.plan.model  # the links made the first time are used again
    assert spec.plan.kv_cache_bytes > 0 and spec.memory.ram > 500_000

    # versions and bundles work for it as for a GGUF
    from kennel.store.bundle import export_bundle, import_bundle
    from kennel.store.names import parse_ref

    bundle = tmp_path / "tiny.tar"
    export_bundle(store, parse_ref("tiny-llama-awq"), bundle)
    with Store.open(KennelHome(tmp_path / "other-home")) as other:
        w = import_bundle(other, bundle)
        assert (
            w.profile == v.profile
            and other.blobs.path(w.profile.base[1]).read_bytes() == repo.files[paths[1]]
        )


@pytest.mark.parametrize("bad", ["/home/u/.bashrc", "../../x", "a/../b", "a\\\\b", "", "./config.json"])
def test_a_folder_profile_names_only_plain_paths_inside_the_folder(bad: str) -> None:
    """A bundle's profile is data from elsewhere: a file name must not point out of the folder
    kennel links the blobs into."""
    from pydantic import ValidationError

    from kennel.store.profile import Profile

    with pytest.raises(ValidationError, match="plain path"):
        Profile(base=("a" * 64,), base_file="m", format="transformers", files=(bad,))
    ok = Profile(
        base=("a" * 64, "b" * 64), base_file="m", format="transformers", files=("c.json", "1_Pooling/c.json")
    )
    assert ok.files[1] == "1_Pooling/c.json"
