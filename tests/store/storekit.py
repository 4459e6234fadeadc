"""Helpers shared by the store tests: small generated GGUF files and a look at the store's folders."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from kennel.model.shape import ModelShape
from kennel.settings import KennelHome
from kennel.store.registry import AuditEntry, Store

ModelFactory = Callable[..., tuple[Path, ModelShape]]

# the smallest shape the synthetic writer makes: about 100 KB, written once per session
SMALL: dict[str, int] = {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_ff": 32, "n_vocab": 300}
Q8_0 = 7  # LlamaFileType.MOSTLY_Q8_0: the header says Q8_0, so imports get a q8_0 tag


def gguf(make_model: ModelFactory, dest: Path, *, variant: str = "alpha") -> Path:
    """A copy at ``dest`` of a tiny Q8_0 GGUF; another ``variant`` gives other bytes (another blob)."""
    src, _ = make_model(file_type=Q8_0, name=variant, **SMALL)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return dest


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def open_store(home: Path | None = None) -> Store:
    return Store.open(KennelHome(home) if home is not None else KennelHome.from_env())


def blob_files(store: Store) -> set[str]:
    """Names of the files in store/blobs (whatever they are)."""
    return {p.name for p in store.blobs.blobs.iterdir()} if store.blobs.blobs.is_dir() else set()


def blob_rows(store: Store) -> set[str]:
    return {r[0] for r in store.conn.execute("SELECT digest FROM blobs")}


def partials(store: Store) -> list[Path]:
    return sorted(store.blobs.partial.iterdir()) if store.blobs.partial.is_dir() else []


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def tags_from_audit(entries: list[AuditEntry]) -> dict[str, int]:
    """Replay the tag events of a model's history: the tags the log says it has now."""
    tags: dict[str, int] = {}
    for e in entries:
        if e.tag is None:
            continue
        if e.version_after is None:
            tags.pop(e.tag, None)
        else:
            tags[e.tag] = e.version_after
    return tags
