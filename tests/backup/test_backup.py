"""`kennel backup` while a server and checkups write, `kennel restore` into a fresh home: what the
user sees afterwards (models, history, keys, checkup results) matches."""

from __future__ import annotations

import io
import json
import tarfile
import threading
from pathlib import Path

import pytest

from kennel.checkup.assertions import Response, Score
from kennel.checkup.results import db_path, default_csv, record
from kennel.checkup.runner import PromptResult, RunInfo
from kennel.server.keys import KeyStore
from kennel.settings import KennelHome
from tests.checkup.fakeserver import Script, scripted_server
from tests.cli.test_cli import kennel

pytestmark = pytest.mark.timeout(300)


def _run_row(home: KennelHome, i: int) -> None:
    info = RunInfo(
        run_id=f"20261101T000000Z-{i:06d}",
        started_at="2026-11-01T00:00:00+00:00",
        suite="s",
        target="t",
        model="tiny",
        model_version="1",
    )
    result = PromptResult(
        "p",
        "2026-11-01T00:00:00+00:00",
        Response(text="ok", latency_ms=5.0),
        Score(outcomes=(), ratio=1.0, passed=True),
    )
    record(info, [result], csv_path=default_csv(home), db_file=db_path(home))


def _doc(args: list[str], home: Path) -> dict:  # type: ignore[type-arg]
    r = kennel(*args, "--json", env={"KENNEL_HOME": str(home)})
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def test_backup_while_writing_then_restore(make_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    home = KennelHome(tmp_path / "home")
    path, _ = make_model()
    env = {"KENNEL_HOME": str(home.root)}
    assert kennel("import", str(path), "--name", "tiny", env=env).returncode == 0
    assert kennel("tag", "tiny@1", "prod", "-m", "approved", env=env).returncode == 0
    with KeyStore.open(home) as keys:
        keys.create("desk", models=["tiny"])
    _run_row(home, 0)
    stop = threading.Event()
    written = [1]

    def checkups() -> None:  # a checkup history growing during the backup
        while not stop.is_set():
            _run_row(home, written[0])
            written[0] += 1

    writer = threading.Thread(target=checkups)
    with scripted_server(Script(), home):  # a server on the same home: keys open, leases written
        writer.start()
        try:
            out = _doc(["backup", "-o", str(tmp_path / "kennel.tar"), "--models"], home.root)
        finally:
            stop.set()
            writer.join()
    paths = {e["path"] for e in out["entries"]}
    assert {"store/kennel.db", "keys.db", "checkups.db", "checkups/results.csv"} <= paths
    assert out["databases"] == 3 and out["blobs"] == 1  # no alert was ever sent: no alerts.db
    fresh = tmp_path / "fresh"
    restored = _doc(["restore", str(tmp_path / "kennel.tar")], fresh)
    assert restored["bytes"] == out["bytes"]
    for args in (["ls"], ["history", "tiny"], ["keys", "ls"]):
        assert _doc(args, fresh) == _doc(args, home.root), args
    before = {r["run_id"] for r in _doc(["checkup", "report", "--since", "10000d"], home.root)["runs"]}
    after = {r["run_id"] for r in _doc(["checkup", "report", "--since", "10000d"], fresh)["runs"]}
    assert after and after <= before  # a consistent snapshot: no torn or invented runs
    assert kennel("rm", "tiny@1", "--dry-run", env={"KENNEL_HOME": str(fresh)}).returncode in (0, 2)
    assert (fresh / "keys.db").stat().st_mode & 0o077 == 0  # still owner-only


def test_restore_refuses_a_damaged_backup_and_a_full_home(make_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    path, _ = make_model()
    assert kennel("import", str(path), "--name", "tiny", env={"KENNEL_HOME": str(home)}).returncode == 0
    good = tmp_path / "good.tar"
    assert kennel("backup", "-o", str(good), "--models", env={"KENNEL_HOME": str(home)}).returncode == 0
    r = kennel("restore", str(good), env={"KENNEL_HOME": str(home)})
    assert r.returncode == 2 and "not empty" in r.stderr
    bad = tmp_path / "bad.tar"
    with tarfile.open(good) as src, tarfile.open(bad, "w") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read() if m.isfile() else None  # type: ignore[union-attr]
            if data is not None and m.name.startswith("home/store/blobs/"):
                data = bytes([data[0] ^ 1]) + data[1:]  # one flipped bit in the model file
            dst.addfile(m, None if data is None else io.BytesIO(data))
    fresh = tmp_path / "fresh"
    r = kennel("restore", str(bad), env={"KENNEL_HOME": str(fresh)})
    assert r.returncode == 2 and "checksum" in r.stderr and not fresh.exists()  # nothing half restored


def test_a_model_restored_without_its_file_says_so_by_name(make_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    home, fresh = tmp_path / "home", tmp_path / "fresh"
    path, _ = make_model()
    assert kennel("import", str(path), "--name", "tiny", env={"KENNEL_HOME": str(home)}).returncode == 0
    _doc(["backup", "-o", str(tmp_path / "lists.tar")], home)  # no --models: the databases only
    _doc(["restore", str(tmp_path / "lists.tar")], fresh)
    r = kennel("run", "tiny", "hi", env={"KENNEL_HOME": str(fresh)})
    said = " ".join(r.stderr.split())
    assert r.returncode == 2 and "The store lists tiny but does not hold its file" in said, r.stderr
    assert "restore a backup made with --models" in said.lower()
