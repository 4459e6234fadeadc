"""Removing models, versions and tags, leases of running servers, and garbage collection."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from kennel.errors import InUseError, NotInStoreError
from kennel.store import maintenance
from kennel.store.add import build_profile, import_gguf
from kennel.store.maintenance import execute_gc, execute_rm, plan_gc, plan_rm
from kennel.store.names import parse_ref
from kennel.store.profile import ProfileSpec
from kennel.store.registry import Store
from tests.store.storekit import (
    ModelFactory,
    blob_files,
    blob_rows,
    dead_pid,
    gguf,
    open_store,
    partials,
    tags_from_audit,
)


@pytest.fixture
def store() -> Iterator[Store]:
    with open_store() as s:
        yield s


def _create(store: Store, name: str, system: str, *, tags: tuple[str, ...] = ("latest",)) -> int:
    profile = build_profile(store, name, ProfileSpec(system=system), base_dir=store.root)
    return store.add_version(name, profile, action="create", tags=tags).version


@pytest.fixture
def m(store: Store, make_model: ModelFactory, tmp_path: Path) -> tuple[str, str]:
    """Model m: @1 imported from blob A, @2 = @1 + a system prompt (blob A again), @3 imported
    from blob B. Tags: latest -> 3, q8_0 -> 3, prod -> 2. Returns the digests (A, B)."""
    a = import_gguf(store, gguf(make_model, tmp_path / "a.gguf"), name="m").profile.base[0]
    _create(store, "m", "two", tags=("prod",))
    b = import_gguf(store, gguf(make_model, tmp_path / "b.gguf", variant="beta"), name="m").profile.base[0]
    assert store.tags("m") == {"latest": 3, "q8_0": 3, "prod": 2}
    return a, b


def _snapshot(store: Store) -> tuple[object, ...]:
    return (
        [tuple(r) for r in store.conn.execute("SELECT * FROM versions ORDER BY model, version")],
        [tuple(r) for r in store.conn.execute("SELECT * FROM tags ORDER BY model, tag")],
        [tuple(r) for r in store.conn.execute("SELECT * FROM version_blobs ORDER BY model, version")],
        sorted(blob_rows(store)),
        sorted(blob_files(store)),
        store.conn.execute("SELECT COUNT(*) FROM audit").fetchone()[0],
    )


def test_version_with_a_tag_is_refused(store: Store, m: tuple[str, str]) -> None:
    before = _snapshot(store)
    plan = plan_rm(store, "m@2")
    assert plan.versions == (2,) and plan.tags == ()
    assert plan.blocked and "prod" in plan.blocked[0] and "kennel tag" in plan.blocked[0]
    with pytest.raises(InUseError, match="prod"):
        execute_rm(store, plan)
    assert "latest" in plan_rm(store, "m@3").blocked[0] and "q8_0" in plan_rm(store, "m@3").blocked[0]
    assert _snapshot(store) == before, "planning and a refused removal change nothing"


def test_version_shares_its_blob(store: Store, m: tuple[str, str]) -> None:
    a, _ = m
    plan = plan_rm(store, "m@1")  # no tag: allowed; blob A is still used by @2
    assert (plan.versions, plan.tags, plan.blobs, plan.blocked) == ((1,), (), (), ())
    assert plan.freed_bytes == 0 and "m@1" in plan.describe()
    execute_rm(store, plan, actor="eve", message="old")
    assert [v.version for v in store.versions("m")] == [2, 3]
    assert store.resolve(parse_ref("m:prod")).profile.base == (a,)
    assert store.blobs.path(a).is_file() and a in blob_rows(store)
    last = store.history("m")[-1]
    assert (last.action, last.version_before, last.actor, last.message) == ("rm", 1, "eve", "old")
    with pytest.raises(NotInStoreError, match="removed"):
        plan_rm(store, "m@1")


def test_tag_goes_and_its_version_only_when_no_other_tag_names_it(store: Store, m: tuple[str, str]) -> None:
    a, b = m
    store.set_tag(parse_ref("m@2"), "canary")
    plan = plan_rm(store, "m:prod")  # canary still names @2: only the tag goes
    assert (plan.versions, plan.tags, plan.blobs, plan.blocked) == ((), ("prod",), (), ())
    execute_rm(store, plan)
    assert store.tags("m") == {"latest": 3, "q8_0": 3, "canary": 2}
    assert [v.version for v in store.versions("m")] == [1, 2, 3]

    plan = plan_rm(store, "m:canary")  # the last tag on @2: @2 goes too, blob A stays for @1
    assert (plan.versions, plan.tags, plan.blobs) == ((2,), ("canary",), ())
    execute_rm(store, plan)
    assert [v.version for v in store.versions("m")] == [1, 3] and "canary" not in store.tags("m")
    assert store.blobs.path(a).is_file()

    plan = plan_rm(store, "m:q8_0")  # latest still names @3
    assert plan.versions == () and plan.blobs == ()
    execute_rm(store, plan)
    plan = plan_rm(store, "m:latest")  # now @3 and its blob B go
    assert plan.versions == (3,) and [x.digest for x in plan.blobs] == [b]
    assert plan.freed_bytes == store.blob(b).size > 0
    execute_rm(store, plan)
    assert not store.blobs.path(b).exists() and b not in blob_rows(store)
    assert [v.version for v in store.versions("m")] == [1] and store.tags("m") == {}
    assert tags_from_audit(store.history("m")) == store.tags("m")
    with pytest.raises(NotInStoreError, match="no tag 'prod'"):
        plan_rm(store, "m:prod")


def test_whole_model(store: Store, m: tuple[str, str]) -> None:
    a, b = m
    plan = plan_rm(store, "m")
    assert plan.versions == (1, 2, 3) and plan.tags == ("latest", "prod", "q8_0") and plan.blocked == ()
    assert {x.digest for x in plan.blobs} == {a, b}
    execute_rm(store, plan)
    assert store.versions("m") == [] and store.tags("m") == {}
    assert blob_files(store) == set() and blob_rows(store) == set() and partials(store) == []
    assert {e.version_before for e in store.history("m") if e.action == "rm"} == {1, 2, 3}
    assert plan_gc(store).orphan_blobs == ()
    with pytest.raises(NotInStoreError):
        store.resolve(parse_ref("m"))
    with pytest.raises(NotInStoreError, match="No model 'zzz'"):
        plan_rm(store, "zzz")


def test_blob_shared_with_another_model_is_kept(
    store: Store, m: tuple[str, str], make_model: ModelFactory, tmp_path: Path
) -> None:
    a, b = m
    import_gguf(store, gguf(make_model, tmp_path / "a.gguf"), name="other")  # blob A again
    plan = plan_rm(store, "m")
    assert [x.digest for x in plan.blobs] == [b], "blob A is used by `other`"
    execute_rm(store, plan)
    other = store.resolve(parse_ref("other"))
    assert other.profile.base == (a,) and store.blobs.path(a).read_bytes()
    assert blob_files(store) == {f"sha256-{a}"} and blob_rows(store) == {a}
    assert plan_gc(store).orphan_blobs == ()


def test_lease_of_a_running_server_blocks_removal(store: Store, m: tuple[str, str]) -> None:
    _, b = m
    store.remove_tag("m", "q8_0")
    before = _snapshot(store)
    with maintenance.lease(store, {b}, holder="test server"):
        assert maintenance.leased(store) == {b: f"test server (pid {os.getpid()})"}
        plan = plan_rm(store, "m:latest")
        assert (
            len(plan.blocked) == 1
            and "test server" in plan.blocked[0]
            and str(os.getpid()) in plan.blocked[0]
        )
        with pytest.raises(InUseError, match="test server"):
            execute_rm(store, plan)
        assert _snapshot(store) == before
        assert plan_rm(store, "m:prod").blocked == (), "a blob nobody leases can go"
    assert maintenance.leased(store) == {}
    assert list((store.root / "leases").iterdir()) == []
    execute_rm(store, plan_rm(store, "m:latest"))
    assert not store.blobs.path(b).exists()


def test_a_served_version_is_refused_one_sharing_its_file_is_not(store: Store, m: tuple[str, str]) -> None:
    """m@1 and m@2 share blob A. A server serving m@2 reads A: m@1 may go (A stays, for m@2), m@2
    may not (a server serves it), though removing it would delete no file either."""
    a, _ = m
    with maintenance.lease(store, {a}, holder="test server", versions=[("m", 2)]):
        assert maintenance.leased_versions(store) == {("m", 2): f"test server (pid {os.getpid()})"}
        assert plan_rm(store, "m@1").blocked == ()
        (why,) = plan_rm(store, "m:prod").blocked
        assert why.startswith("m@2 is served by test server") and why.endswith("stop it first")
        execute_rm(store, plan_rm(store, "m@1"))
        assert store.blobs.path(a).read_bytes()  # still there, for the server
        blocked = plan_rm(store, "m").blocked  # the whole model: m@2 is served, and A would go
        assert len(blocked) == 2 and "m@2 is served" in blocked[0] and f"blob {a[:12]}" in blocked[1]
    assert maintenance.leased_versions(store) == {}


def test_lease_of_a_dead_process_is_ignored_and_cleaned(store: Store, m: tuple[str, str]) -> None:
    _, b = m
    folder = store.root / "leases"
    folder.mkdir(parents=True, exist_ok=True)
    pid = dead_pid()
    stale = folder / f"{pid}-1.json"
    stale.write_text(json.dumps({"pid": pid, "holder": "crashed server", "digests": [b]}))
    garbage = folder / "junk.json"
    garbage.write_text("{not json")
    assert maintenance.leased(store) == {}
    assert not stale.exists() and not garbage.exists()
    stale.write_text(json.dumps({"pid": pid, "holder": "crashed server", "digests": [b]}))
    plan = plan_rm(store, "m")
    assert plan.blocked == ()
    execute_rm(store, plan)
    assert not store.blobs.path(b).exists() and not stale.exists()


def _stray_blob(store: Store, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    store.blobs.blobs.mkdir(parents=True, exist_ok=True)
    store.blobs.path(digest).write_bytes(data)
    return digest


def test_gc_collects_orphan_blob_files(store: Store, m: tuple[str, str]) -> None:
    a, b = m
    orphan = _stray_blob(store, b"left behind by something")
    before = _snapshot(store)
    plan = plan_gc(store)  # the plan is the dry run: nothing changes
    assert plan.orphan_blobs == ((orphan, 24),) and plan.partial_files == () and plan.freed_bytes == 24
    assert _snapshot(store) == before
    execute_gc(store, plan, actor="janitor")
    assert blob_files(store) == {f"sha256-{a}", f"sha256-{b}"}
    entry = store.audit_all()[-1]
    assert (entry.action, entry.actor, entry.model) == ("gc", "janitor", None)
    assert "1 blob(s)" in entry.detail and "24 B" in entry.detail
    assert plan_gc(store) == maintenance.GcPlan((), ())
    assert store.resolve(parse_ref("m:prod")).profile.base == (a,) and store.blobs.has(a)


def test_gc_collects_a_blob_left_by_a_crash_in_rm(
    store: Store, m: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, b = m

    def crash(digest: str) -> None:
        raise KeyboardInterrupt  # the process stops after the rows are gone, before the unlink

    store.remove_tag("m", "q8_0")
    monkeypatch.setattr(store.blobs, "remove", crash)
    with pytest.raises(KeyboardInterrupt):
        execute_rm(store, plan_rm(store, "m:latest"))
    monkeypatch.undo()
    assert store.blobs.path(b).is_file() and b not in blob_rows(store)
    assert [v.version for v in store.versions("m")] == [1, 2]
    plan = plan_gc(store)
    assert [d for d, _ in plan.orphan_blobs] == [b]
    execute_gc(store, plan)
    assert not store.blobs.path(b).exists()


def test_gc_collects_a_registered_blob_no_version_uses(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "x.bin"
    src.write_bytes(b"x" * 1000)
    digest = store.blobs.admit(src, expected=None, move=False)
    store.register_blob(digest, kind="gguf", file_name="x.bin", source=str(src))  # a crash before add_version
    plan = plan_gc(store)
    assert plan.orphan_blobs == ((digest, 1000),)
    execute_gc(store, plan)
    assert blob_rows(store) == set() and blob_files(store) == set() and src.is_file()


def test_gc_leaves_leased_blobs(store: Store) -> None:
    orphan = _stray_blob(store, b"loaded by a server that knows better")
    with maintenance.lease(store, {orphan}, holder="test server"):
        assert plan_gc(store).orphan_blobs == ()
    assert [d for d, _ in plan_gc(store).orphan_blobs] == [orphan]


def test_gc_partial_files(store: Store) -> None:
    stale = store.blobs.partial_path("a" * 64)
    stale.write_bytes(b"half a download")
    busy = store.blobs.partial_path("b" * 64)
    busy.write_bytes(b"being written")
    with store.blobs.lock("b" * 64):
        plan = plan_gc(store)
        assert plan.partial_files == ((stale, 15),) and plan.orphan_blobs == ()
        assert stale.exists(), "planning deletes nothing"
        execute_gc(store, plan)
        assert not stale.exists() and busy.exists()
    plan = plan_gc(store)  # the writer stopped: its partial is stale now
    assert plan.partial_files == ((busy, 13),)
    execute_gc(store, plan)
    assert partials(store) == []


def test_gc_leaves_the_partial_of_an_import_in_progress(store: Store) -> None:
    """An import or a bundle import stages its copy as import-PID-... / bundle-PID-...; while
    that process lives, gc must not delete the file from under it."""
    live = [
        store.blobs.partial_path(f"import-{os.getpid()}-123"),
        store.blobs.partial_path(f"bundle-{os.getpid()}-{'c' * 64}"),
    ]
    dead = [
        store.blobs.partial_path(f"import-{dead_pid()}-123"),
        store.blobs.partial_path(f"bundle-{dead_pid()}-{'c' * 64}"),
    ]
    for p in live + dead:
        p.write_bytes(b"copying")
    plan = plan_gc(store)
    assert sorted(p for p, _ in plan.partial_files) == sorted(dead)
    execute_gc(store, plan)
    assert partials(store) == sorted(live)
