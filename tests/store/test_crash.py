"""kill -9 in the middle of a change leaves the store as it was before the change.

Each test runs a child process that opens the store, makes ``Store._audit`` (called inside the
change's transaction, after its main row is written) check that the row really is written and
then SIGKILL its own process, and starts the change. The parent then reopens the store.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kennel.store.add import import_gguf
from kennel.store.maintenance import execute_gc, plan_gc
from kennel.store.names import parse_ref
from kennel.store.profile import Profile
from kennel.store.registry import Store
from tests.store.storekit import ModelFactory, blob_files, blob_rows, gguf, open_store, tags_from_audit

PRELUDE = """
import os, signal, sys
from pathlib import Path
from kennel.settings import KennelHome
from kennel.store.names import parse_ref
from kennel.store.profile import Profile
from kennel.store.registry import Store

store = Store.open(KennelHome.from_env())

def die_after(check):
    def _audit(self, *args):
        check(self.conn)  # the row is written, inside the open transaction
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    Store._audit = _audit
"""


def _run_and_kill(body: str) -> subprocess.CompletedProcess[str]:
    script = PRELUDE + textwrap.dedent(body) + "\nprint('survived')\n"
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stdout, r.stderr)
    assert "survived" not in r.stdout
    return r


def _audit_rows(store: Store) -> list[tuple[object, ...]]:
    return [tuple(r) for r in store.conn.execute("SELECT * FROM audit ORDER BY id")]


def _healthy(store: Store) -> None:
    assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert store.conn.execute("PRAGMA foreign_key_check").fetchall() == []


@pytest.fixture
def two_versions(make_model: ModelFactory, tmp_path: Path) -> None:
    """m@1 (imported) and m@2 (with a system prompt); latest -> 2, prod -> 1."""
    with open_store() as s:
        v1 = import_gguf(s, gguf(make_model, tmp_path / "m.gguf"), name="m")
        s.add_version("m", v1.profile.model_copy(update={"system": "two"}), action="create")
        s.set_tag(parse_ref("m@1"), "prod")
        assert s.tags("m") == {"latest": 2, "prod": 1, "q8_0": 1}


def test_kill_during_tag_move(two_versions: None) -> None:
    with open_store() as s:
        audit_before = _audit_rows(s)
    _run_and_kill("""
        def check(conn):
            row = conn.execute("SELECT version FROM tags WHERE model = 'm' AND tag = 'prod'").fetchone()
            assert row[0] == 2, row
        die_after(check)
        store.set_tag(parse_ref("m@2"), "prod", message="half done")
    """)
    with open_store() as s:
        _healthy(s)
        assert s.tags("m") == {"latest": 2, "prod": 1, "q8_0": 1}
        assert _audit_rows(s) == audit_before, "no half entry in the history"
        assert all(e.message != "half done" for e in s.history("m"))
        # the store goes on working
        assert s.set_tag(parse_ref("m@2"), "prod", message="again") == (1, 2)
        assert s.history("m")[-1].message == "again"
        assert tags_from_audit(s.history("m")) == s.tags("m")


def test_kill_during_add_version(two_versions: None) -> None:
    with open_store() as s:
        audit_before = _audit_rows(s)
        base = s.version("m", 1).profile
    _run_and_kill(f"""
        def check(conn):
            assert conn.execute("SELECT MAX(version) FROM versions WHERE model = 'm'").fetchone()[0] == 3
            assert conn.execute("SELECT COUNT(*) FROM version_blobs WHERE version = 3").fetchone()[0] == 1
        die_after(check)
        profile = Profile.from_yaml({base.to_yaml()!r}).model_copy(update={{"system": "three"}})
        store.add_version("m", profile, action="create", tags=["latest", "prod"], message="half done")
    """)
    with open_store() as s:
        _healthy(s)
        assert [v.version for v in s.versions("m", include_removed=True)] == [1, 2]
        assert s.conn.execute("SELECT COUNT(*) FROM version_blobs WHERE version = 3").fetchone()[0] == 0
        assert s.tags("m") == {"latest": 2, "prod": 1, "q8_0": 1}, (
            "no tag points at a version that is not there"
        )
        assert _audit_rows(s) == audit_before
        v = s.add_version("m", base.model_copy(update={"system": "three"}), action="create", message="again")
        assert v.version == 3 and s.tags("m")["latest"] == 3
        assert tags_from_audit(s.history("m")) == s.tags("m")


def test_kill_during_import_leaves_only_what_gc_collects(make_model: ModelFactory, tmp_path: Path) -> None:
    src = gguf(make_model, tmp_path / "Tiny-Q8_0.gguf")
    _run_and_kill(f"""
        from kennel.store.add import import_gguf
        def check(conn):
            assert conn.execute("SELECT COUNT(*) FROM versions").fetchone()[0] == 1
        die_after(check)
        import_gguf(store, Path({str(src)!r}))
    """)
    with open_store() as s:
        _healthy(s)
        assert s.models() == [] and s.audit_all() == []
        assert len(blob_files(s)) == 1 and len(blob_rows(s)) == 1  # admitted before the version
        plan = plan_gc(s)
        assert len(plan.orphan_blobs) == 1
        execute_gc(s, plan)
        assert blob_files(s) == set() and blob_rows(s) == set()
        v = import_gguf(s, src)
        assert (v.model, v.version) == ("tiny", 1) and s.blobs.has(v.profile.base[0])


def test_kill_during_rm(two_versions: None) -> None:
    with open_store() as s:
        s.remove_tag("m", "prod")
        s.remove_tag("m", "q8_0")
        audit_before = _audit_rows(s)
    _run_and_kill("""
        from kennel.store import maintenance
        def check(conn):
            pass
        die_after(check)
        maintenance.execute_rm(store, maintenance.plan_rm(store, "m"))
    """)
    with open_store() as s:
        _healthy(s)
        assert [v.version for v in s.versions("m")] == [1, 2] and s.tags("m") == {"latest": 2}
        assert _audit_rows(s) == audit_before
        digest = s.version("m", 1).profile.base[0]
        assert s.blobs.has(digest) and s.resolve(parse_ref("m")).version == 2
        assert isinstance(s.version("m", 2).profile, Profile)
