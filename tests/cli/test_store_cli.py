"""The model store from the command line, as a new user meets it: import, ls, create, tag,
rollback, history, diff, rm, export/import of a bundle, gc; and bad names refused in one line."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from kennel.store.add import build_profile, import_gguf
from kennel.store.profile import ProfileSpec
from tests.cli.test_cli import _bad, kennel
from tests.conftest import ModelFactory
from tests.store.storekit import Q8_0, SMALL, open_store


def _json(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    r = kennel(*args, "--json", env=env)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    doc: dict[str, Any] = json.loads(r.stdout)
    return doc


def _ok(*args: str) -> str:
    r = kennel(*args)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


def _model(make_model: ModelFactory, dest: Path) -> Path:
    src, _ = make_model(file_type=Q8_0, name="cli", **SMALL)
    shutil.copyfile(src, dest)
    return dest


SYSTEM = "Answer in one sentence."


def _two_versions(make_model: ModelFactory, tmp_path: Path) -> str:
    """Set up in-process (the CLI reads the same KENNEL_HOME): tiny@1 imported (latest, q8_0) and
    tiny@2 with a system prompt (candidate). Returns the GGUF's digest."""
    with open_store() as s:
        v = import_gguf(s, _model(make_model, tmp_path / "Tiny-Q8_0.gguf"))
        spec = ProfileSpec.model_validate({"system": SYSTEM, "parameters": {"temperature": 0.2}})
        s.add_version(
            "tiny",
            build_profile(s, "tiny", spec, base_dir=tmp_path),
            action="create",
            tags=["candidate"],
            message="shorter answers",
        )
        return v.profile.base[0]


def test_import_and_ls(make_model: ModelFactory, tmp_path: Path, kennel_home: Path) -> None:
    gguf = _model(make_model, tmp_path / "Tiny-Q8_0.gguf")
    digest = hashlib.sha256(gguf.read_bytes()).hexdigest()
    doc = _json("import", str(gguf))
    assert doc["schema"] == "kennel.import/v1"
    v = doc["version"]
    assert (v["model"], v["version"], v["tags"], v["file"]) == (
        "tiny",
        1,
        ["latest", "q8_0"],
        "Tiny-Q8_0.gguf",
    )
    assert v["blobs"] == [{"digest": digest, "size": gguf.stat().st_size, "kind": "gguf"}]
    assert (kennel_home / "store" / "blobs" / f"sha256-{digest}").is_file() and gguf.is_file()
    listed = _json("ls")["models"]
    assert [(m["name"], m["versions"], m["latest_version"], m["tags"], m["size_bytes"]) for m in listed] == [
        ("tiny", 1, 1, {"latest": 1, "q8_0": 1}, gguf.stat().st_size)
    ]
    table = _ok("ls", "tiny")
    assert "@1" in table and "latest, q8_0" in table and "Tiny-Q8_0.gguf" in table


def test_create_tag_rollback_history_diff(make_model: ModelFactory, tmp_path: Path) -> None:
    with open_store() as s:
        import_gguf(s, _model(make_model, tmp_path / "Tiny-Q8_0.gguf"))
    spec = tmp_path / "spec" / "profile.yaml"
    spec.parent.mkdir()
    spec.write_text(f"from: tiny\nsystem: {SYSTEM}\nparameters:\n  temperature: 0.2\n")
    assert "tiny@2 tagged candidate" in _ok(
        "create", "tiny", "-f", str(spec), "-m", "shorter answers", "--tag", "candidate"
    )
    assert "tiny:prod → @2 (created)" in _ok("tag", "tiny@2", "prod", "-m", "ship it")
    assert "rolled back from @2 to @1" in _ok("rollback", "tiny", "--tag", "prod", "-m", "too terse")

    events = _json("history", "tiny")["events"]
    assert [(e["action"], e["tag"], e["version_before"], e["version_after"]) for e in events] == [
        ("import", None, None, 1),
        ("tag", "latest", None, 1),
        ("tag", "q8_0", None, 1),
        ("create", None, None, 2),
        ("tag", "candidate", None, 2),
        ("tag", "prod", None, 2),
        ("rollback", "prod", 2, 1),
    ]
    assert all(e["actor"] and e["at"] for e in events)  # who, when
    create = events[3]
    assert create["message"] == "shorter answers" and f"+system: {SYSTEM}" in create["detail"]  # what, why
    assert (events[5]["message"], events[6]["message"]) == ("ship it", "too terse")

    d = _ok("diff", "tiny", "1", "2")
    assert f"+system: {SYSTEM}" in d and "temperature: 0.2" in d and "tiny@1" in d


def test_rm_refused_and_dry_run(make_model: ModelFactory, tmp_path: Path) -> None:
    _two_versions(make_model, tmp_path)
    err = _bad("rm", "tiny@1")  # latest and q8_0 point at it
    assert "Cannot remove tiny" in err and "latest" in err and "q8_0" in err and "kennel tag" in err
    dry = _json("rm", "tiny:candidate", "--dry-run")
    assert (dry["versions"], dry["tags"], dry["blobs"], dry["dry_run"]) == ([2], ["candidate"], [], True)
    with open_store() as s:
        assert [v.version for v in s.versions("tiny")] == [1, 2] and s.tags("tiny")["candidate"] == 2
        assert [e.action for e in s.history("tiny")][-1] == "tag", "neither changed anything"


def test_export_and_import_a_bundle(make_model: ModelFactory, tmp_path: Path) -> None:
    digest = _two_versions(make_model, tmp_path)
    bundle = tmp_path / "tiny.tar"
    exported = _json("export", "tiny:candidate", "-o", str(bundle))
    assert (exported["model"], exported["version"], exported["size_bytes"]) == (
        "tiny",
        2,
        bundle.stat().st_size,
    )
    other = tmp_path / "airgapped"
    got = _json("import", str(bundle), env={"KENNEL_HOME": str(other)})["version"]
    assert (got["model"], got["version"], sorted(got["tags"])) == ("tiny", 1, ["candidate", "latest"])
    assert got["profile"]["system"] == SYSTEM and got["blobs"][0]["digest"] == digest
    assert (other / "store" / "blobs" / f"sha256-{digest}").read_bytes() == (
        tmp_path / "Tiny-Q8_0.gguf"
    ).read_bytes()


def test_gc(make_model: ModelFactory, tmp_path: Path, kennel_home: Path) -> None:
    digest = _two_versions(make_model, tmp_path)
    orphan = kennel_home / "store" / "blobs" / f"sha256-{'e' * 64}"
    orphan.write_bytes(b"nobody uses me")
    gc = _json("gc")
    assert gc["schema"] == "kennel.gc/v1"
    assert gc["orphan_blobs"] == ["e" * 64] and gc["freed_bytes"] == 14 and gc["dry_run"] is False
    assert not orphan.exists() and (kennel_home / "store" / "blobs" / f"sha256-{digest}").is_file()


def test_ls_lists_a_removed_version_whose_blob_is_gone(make_model: ModelFactory, tmp_path: Path) -> None:
    with open_store() as s:  # set up in-process: the subprocesses below read the same KENNEL_HOME
        import_gguf(s, _model(make_model, tmp_path / "Tiny-Q8_0.gguf"))
    assert "Done: remove tiny@1; tags latest, q8_0" in _ok("rm", "tiny")
    doc = _json("ls", "tiny", "--all")
    assert [(x["version"], x["removed"], x["blobs"]) for x in doc["versions"]] == [(1, True, [])]
    assert _json("ls")["models"] == []


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("rm", "../x"), "'../x' is not a valid model name: it contains '..'"),
        (("rm", "x:pro;d"), "'pro;d' is not a valid tag"),
        (("tag", "x@1", "pro d"), "'pro d' is not a valid tag"),
        (("tag", "x@1", "prod"), "No model 'x'"),
    ],
)
def test_bad_names_are_one_line_errors(args: tuple[str, ...], words: str) -> None:
    assert words in _bad(*args)


def test_bad_import_name_copies_nothing(make_model: ModelFactory, tmp_path: Path, kennel_home: Path) -> None:
    err = _bad("import", str(_model(make_model, tmp_path / "f.gguf")), "--name", "a;b")
    assert "'a;b' is not a valid model name" in err and "hint:" in err
    blobs = kennel_home / "store" / "blobs"
    assert not blobs.exists() or not any(blobs.iterdir())


def test_bad_profile(tmp_path: Path) -> None:
    profile = tmp_path / "bad.yaml"
    profile.write_text("from: f.gguf\nparameters:\n  temperature: 9\n")
    err = _bad("create", "x", "-f", str(profile))
    assert "not a kennel profile" in err and "temperature" in err
