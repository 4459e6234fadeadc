"""Removing models and collecting garbage: plan first, then execute (the plan is the dry run).

A running server leases the blobs it has loaded and the store versions it serves (a small JSON
file per process under store/leases); a lease whose process is gone is ignored and cleaned up.
Removal is refused for a version a server serves, and for a blob a server reads that the removal
would delete; a version that only shares a file with a served one may go (the file stays).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from filelock import FileLock, Timeout

from kennel.errors import InUseError
from kennel.store.names import parse_ref
from kennel.store.registry import BlobInfo, Store
from kennel.units import fmt_bytes


def _leases_dir(store: Store) -> Path:
    return store.root / "leases"


def write_lease(
    store_root: Path,
    name: str,
    digests: set[str],
    *,
    holder: str,
    versions: Iterable[tuple[str, int]] = (),
) -> None:
    """Record (or, with no digests, drop) this process's lease ``name`` on ``digests`` and the
    store ``versions`` (model, number) it serves; written atomically, so `kennel rm` never reads
    half a file."""
    path = store_root / "leases" / f"{os.getpid()}-{name}.json"
    if not digests:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    doc = {
        "pid": os.getpid(),
        "holder": holder,
        "digests": sorted(digests),
        "versions": sorted(set(versions)),
    }
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


@contextmanager
def lease(
    store: Store, digests: set[str], *, holder: str, versions: Iterable[tuple[str, int]] = ()
) -> Iterator[None]:
    """Mark ``digests`` (and ``versions``) as in use by this process while inside."""
    name = str(id(digests))
    write_lease(store.root, name, digests, holder=holder, versions=versions)
    try:
        yield
    finally:
        write_lease(store.root, name, set(), holder=holder)


@dataclass(frozen=True)
class Leases:
    """What live processes hold, each naming its holder: "kennel serve (pid 123)"."""

    digests: Mapping[str, str]  # blobs a process reads
    versions: Mapping[tuple[str, int], str]  # store versions (model, number) a server serves


def leases(store: Store) -> Leases:
    """The leases of live processes, read once (stale lease files are deleted)."""
    digests: dict[str, str] = {}
    versions: dict[tuple[str, int], str] = {}
    for doc, who in _live_leases(store):
        digests.update((d, who) for d in doc.get("digests", []))
        for v in doc.get("versions", []):
            if isinstance(v, list) and len(v) == 2:
                versions[(str(v[0]), int(v[1]))] = who
    return Leases(digests, versions)


def leased(store: Store) -> Mapping[str, str]:
    """digest -> holder, for leases of live processes."""
    return leases(store).digests


def leased_versions(store: Store) -> Mapping[tuple[str, int], str]:
    """(model, version) -> holder: the store versions live servers serve."""
    return leases(store).versions


def _live_leases(store: Store) -> list[tuple[dict[str, Any], str]]:
    """Each live process's lease document and how to name its holder; stale files deleted."""
    out = []
    folder = _leases_dir(store)
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            doc = json.loads(path.read_text())
            alive = psutil.pid_exists(int(doc["pid"]))
        except (OSError, ValueError, KeyError, TypeError):
            alive, doc = False, {}
        if not alive:
            path.unlink(missing_ok=True)
            continue
        out.append((doc, f"{doc.get('holder', 'a server')} (pid {doc['pid']})"))
    return out


@dataclass(frozen=True)
class RemovalPlan:
    model: str
    versions: tuple[int, ...]
    tags: tuple[str, ...]
    blobs: tuple[BlobInfo, ...]  # blobs nothing else uses: deleted
    blocked: tuple[str, ...]  # why it cannot go ahead

    @property
    def freed_bytes(self) -> int:
        return sum(b.size for b in self.blobs)

    def describe(self) -> str:
        what = ", ".join(f"{self.model}@{v}" for v in self.versions) or "no version"
        tags = f"; tags {', '.join(self.tags)}" if self.tags else ""
        return f"remove {what}{tags}; frees {fmt_bytes(self.freed_bytes)} in {len(self.blobs)} blob(s)"


def plan_rm(store: Store, ref_text: str) -> RemovalPlan:
    """NAME: the whole model; NAME:TAG: the tag, and its version if no other tag names it;
    NAME@V: that version, refused while a tag points at it."""
    ref = parse_ref(ref_text)
    tags = store.tags(ref.name) if ref.name in store.models() else {}
    live = [v.version for v in store.versions(ref.name)]
    blocked: list[str] = []
    if ref.version is not None:
        store.resolve(ref)
        versions = [ref.version]
        drop_tags: list[str] = []
        pointing = sorted(t for t, v in tags.items() if v == ref.version)
        if pointing:
            blocked.append(
                f"tag{'s' if len(pointing) > 1 else ''} {', '.join(pointing)} "
                f"point{'' if len(pointing) > 1 else 's'} "
                f"at {ref}; move them (`kennel tag`) or remove them (`kennel rm {ref.name}:TAG`) first"
            )
    elif ref.tag is not None:
        target = store.resolve(ref).version
        drop_tags = [ref.tag]
        versions = [] if any(v == target for t, v in tags.items() if t != ref.tag) else [target]
    else:
        versions, drop_tags = live, sorted(tags)
    remaining = {d for v in live if v not in versions for d in store.blobs_of(ref.name, [v])}
    others = _digests_of_other_models(store, ref.name)
    freed = store.blobs_of(ref.name, versions) - remaining - others
    held = leases(store)
    for v in versions:
        if (who := held.versions.get((ref.name, v))) is not None:
            blocked.append(f"{ref.name}@{v} is served by {who}; stop it first")
    for d in sorted(freed):  # a file a server reads, deleted under it
        if d in held.digests:
            blocked.append(f"blob {d[:12]}… is loaded by {held.digests[d]}; stop it first")
    return RemovalPlan(
        ref.name,
        tuple(versions),
        tuple(drop_tags),
        tuple(store.blob(d) for d in sorted(freed)),
        tuple(blocked),
    )


def _digests_of_other_models(store: Store, name: str) -> set[str]:
    rows = store.conn.execute(
        "SELECT DISTINCT vb.digest FROM version_blobs vb JOIN versions v ON v.model = vb.model "
        "AND v.version = vb.version WHERE v.removed_at IS NULL AND v.model != ?",
        (name,),
    )
    return {r[0] for r in rows}


def execute_rm(store: Store, plan: RemovalPlan, *, actor: str | None = None, message: str = "") -> None:
    if plan.blocked:
        raise InUseError(f"Cannot remove {plan.model}: {'; '.join(plan.blocked)}.")
    store.mark_removed(
        plan.model,
        list(plan.versions),
        drop_tags=list(plan.tags),
        actor=actor,
        message=message,
        detail=plan.describe(),
    )
    digests = [b.digest for b in plan.blobs]
    store.forget_blobs(digests)  # rows first: a crash after this leaves files that gc collects
    for d in digests:
        store.blobs.remove(d)


@dataclass(frozen=True)
class GcPlan:
    orphan_blobs: tuple[tuple[str, int], ...]  # digest, size: files no live version uses
    partial_files: tuple[tuple[Path, int], ...]  # interrupted downloads no process is writing

    @property
    def freed_bytes(self) -> int:
        return sum(s for _, s in self.orphan_blobs) + sum(s for _, s in self.partial_files)


def plan_gc(store: Store) -> GcPlan:
    live = store.referenced_digests()
    in_use = leased(store)
    orphans = []
    for d in sorted(store.blobs.all_digests() - live - set(in_use)):
        orphans.append((d, store.blobs.path(d).stat().st_size))
    partials = [(p, p.stat().st_size) for p in store.blobs.partial_files() if not _being_written(store, p)]
    return GcPlan(tuple(orphans), tuple(partials))


def _being_written(store: Store, partial: Path) -> bool:
    kind, _, rest = partial.name.partition("-")
    pid = rest.partition("-")[0]
    if kind in ("import", "bundle") and pid.isdigit() and psutil.pid_exists(int(pid)):
        return True  # an import's or bundle import's copy, named after its (live) process
    lock = FileLock(str(store.blobs.locks / f"{partial.name.removesuffix('.part')}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


def execute_gc(store: Store, plan: GcPlan, *, actor: str | None = None) -> None:
    digests = [d for d, _ in plan.orphan_blobs]
    store.forget_blobs(digests)
    for d in digests:
        store.blobs.remove(d)
    for p, _ in plan.partial_files:
        p.unlink(missing_ok=True)
    store.audit_event(
        "gc",
        actor=actor,
        detail=f"freed {fmt_bytes(plan.freed_bytes)}: {len(digests)} blob(s), "
        f"{len(plan.partial_files)} partial download(s)",
    )
