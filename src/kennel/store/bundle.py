"""Bundles for air-gapped sites: `kennel export NAME -o bundle.tar`, `kennel import bundle.tar`.

A bundle is a plain tar (GGUF does not compress) holding exactly:

    manifest.json              kennel-bundle/1: model, version, tags, profile, blobs, catalog entry
    SHA256SUMS                 sha256sum format, for the manifest and every blob
    blobs/sha256-<hex>         the blobs

On import nothing is extracted by name: each blob member is streamed into a partial file while
hashed, and admitted only after every blob and the manifest matched their checksums. Links,
absolute paths, '..' and any other member make the bundle invalid.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kennel.catalog.entries import find as catalog_find
from kennel.errors import BundleError, ChecksumError, InvalidOptionError
from kennel.store.blobs import CHUNK, check_free_space
from kennel.store.names import Ref, check_name
from kennel.store.profile import Profile
from kennel.store.registry import Store, VersionInfo, now

FORMAT = "kennel-bundle/1"
_BLOB_MEMBER = re.compile(r"^blobs/sha256-([0-9a-f]{64})$")
BundleProgress = Callable[[str, int, int], None]


def export_bundle(
    store: Store, ref: Ref, out: Path, *, progress: BundleProgress | None = None
) -> dict[str, Any]:
    v = store.resolve(ref)
    blobs = [store.blob(d) for d, _, _ in v.profile.blobs()]
    catalog_name = store.catalog_name(v.model)
    entry = catalog_find(catalog_name) if catalog_name else None
    manifest = {
        "format": FORMAT,
        "exported_at": now(),
        "model": v.model,
        "version": v.version,
        "tags": list(v.tags),
        "message": v.message,
        "profile": v.profile.to_yaml(),
        "blobs": [
            {"digest": b.digest, "size": b.size, "kind": b.kind, "file_name": b.file_name} for b in blobs
        ],
        "catalog": entry.model_dump(mode="json") if entry else None,
    }
    raw = json.dumps(manifest, indent=2).encode()
    sums = [f"{hashlib.sha256(raw).hexdigest()}  manifest.json"] + [
        f"{b.digest}  blobs/sha256-{b.digest}" for b in blobs
    ]
    total = sum(b.size for b in blobs)
    out = out.expanduser()
    folder = out.parent if out.parent != Path() else Path.cwd()
    if not folder.is_dir():  # a typo in -o should not grow a tree of folders
        raise InvalidOptionError(
            f"There is no folder {folder} to write {out.name} in.",
            hint=f"Create it first (mkdir -p {folder}), or give -o a path in an existing folder.",
        )
    check_free_space(folder, total, what=str(out))
    tmp = out.with_name(out.name + ".partial")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, "manifest.json", raw)
        _add_bytes(tar, "SHA256SUMS", ("\n".join(sums) + "\n").encode())
        done = 0
        for b in blobs:
            info = tarfile.TarInfo(f"blobs/sha256-{b.digest}")
            info.size, info.mtime, info.mode = b.size, 0, 0o444
            with store.blobs.path(b.digest).open("rb") as f:
                tar.addfile(info, _Counting(f, done, total, progress))
            done += b.size
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, out)
    return manifest


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o444
    tar.addfile(info, io.BytesIO(data))


class _Counting(io.RawIOBase):
    """A reader that reports export progress as tarfile pulls the blob through it."""

    def __init__(self, f: io.BufferedReader, start: int, total: int, progress: BundleProgress | None) -> None:
        self.f, self.n, self.total, self.progress = f, start, total, progress

    def read(self, size: int = -1) -> bytes:
        data = self.f.read(size)
        self.n += len(data)
        if self.progress:
            self.progress("export", self.n, self.total)
        return data


def import_bundle(
    store: Store,
    path: Path,
    *,
    name: str | None = None,
    actor: str | None = None,
    message: str = "",
    progress: BundleProgress | None = None,
) -> VersionInfo:
    path = path.expanduser()
    try:
        tar = tarfile.open(path, "r:")  # noqa: SIM115  # closed by the `with tar` below
    except (OSError, tarfile.TarError) as exc:
        raise BundleError(
            f"{path} is not a kennel bundle (not a readable tar: {exc}).",
            hint="Make one with `kennel export NAME -o bundle.tar`.",
        ) from exc
    staged: dict[str, Path] = {}
    try:
        try:
            with tar:
                manifest, sums = _read_index(tar, path)
                # names are checked before any blob is admitted
                model = check_name(name or manifest["model"])
                tags = [
                    "latest",
                    *(
                        check_name(t, what="tag")
                        for t in manifest.get("tags", [])
                        if isinstance(t, str) and t != "latest"
                    ),
                ]
                check_free_space(store.root, sum(int(b["size"]) for b in manifest["blobs"]), what=path.name)
                staged = _stage_blobs(store, tar, manifest, sums, path, progress)
        except (tarfile.TarError, EOFError) as exc:
            raise BundleError(
                f"{path.name} is damaged or incomplete ({exc}).", hint="Copy it again, or export it again."
            ) from exc
        profile = Profile.from_yaml(manifest["profile"])
        for b in manifest["blobs"]:
            digest = store.blobs.admit(staged.pop(b["digest"]), expected=b["digest"], move=True)
            store.register_blob(
                digest, kind=b["kind"], file_name=b["file_name"], source=f"bundle {path.name}"
            )
        entry = manifest.get("catalog") or {}
        return store.add_version(
            model,
            profile,
            action="import",
            actor=actor,
            tags=tags,
            message=message or f"imported bundle {path.name} ({manifest['model']}@{manifest['version']})",
            catalog_name=entry.get("name") if catalog_find(str(entry.get("name", ""))) else None,
        )
    finally:
        for p in staged.values():
            p.unlink(missing_ok=True)


def _read_index(tar: tarfile.TarFile, path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    members = {}
    for m in tar.getmembers():
        if not m.isfile() or m.name.startswith("/") or ".." in m.name.split("/"):
            raise BundleError(
                f"{path.name} holds an unsafe member {m.name!r} (a link, device or path outside).",
                hint="Only bundles made by `kennel export` can be imported.",
            )
        if m.name not in ("manifest.json", "SHA256SUMS") and not _BLOB_MEMBER.match(m.name):
            raise BundleError(f"{path.name} holds an unexpected member {m.name!r}.")
        members[m.name] = m
    for needed in ("manifest.json", "SHA256SUMS"):
        if needed not in members:
            raise BundleError(f"{path.name} has no {needed}; it is not a kennel bundle or it is incomplete.")
    raw = _read_small(tar, members["manifest.json"])
    sums = {}
    for line in _read_small(tar, members["SHA256SUMS"]).decode(errors="replace").splitlines():
        digest, _, member = line.partition("  ")
        sums[member.strip()] = digest.strip()
    if hashlib.sha256(raw).hexdigest() != sums.get("manifest.json"):
        raise ChecksumError(
            f"The manifest of {path.name} does not match its SHA256SUMS.",
            hint="The bundle was altered or damaged in transit; export it again.",
        )
    try:
        manifest = json.loads(raw)
        needs = {d for d, _, _ in Profile.from_yaml(manifest["profile"]).blobs()}
        ok = (
            manifest["format"] == FORMAT
            and isinstance(manifest["blobs"], list)
            and isinstance(manifest["model"], str)
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"The manifest of {path.name} is not a {FORMAT} manifest ({exc}).") from exc
    if not ok:
        raise BundleError(
            f"The manifest of {path.name} is not a {FORMAT} manifest.",
            hint="It may come from a newer kennel; upgrade kennel here.",
        )
    for b in manifest["blobs"]:
        member = f"blobs/sha256-{b['digest']}"
        if member not in members or members[member].size != int(b["size"]) or sums.get(member) != b["digest"]:
            raise BundleError(
                f"{path.name} lacks {member} or lists it with another size or checksum.",
                hint="The bundle is incomplete; export it again.",
            )
    listed = {f"blobs/sha256-{b['digest']}" for b in manifest["blobs"]}
    extra = sorted(n for n in members if _BLOB_MEMBER.match(n) and n not in listed)
    if extra:
        raise BundleError(
            f"{path.name} holds {extra[0]!r}, which its manifest does not list.",
            hint="Only bundles made by `kennel export` can be imported.",
        )
    if not needs <= {b["digest"] for b in manifest["blobs"]}:
        raise BundleError(
            f"The profile in {path.name} uses blobs the bundle does not hold.",
            hint="The bundle is incomplete; export it again.",
        )
    return manifest, sums


def _read_small(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    if member.size > 16 * 2**20:
        raise BundleError(f"{member.name} is implausibly large ({member.size} bytes).")
    f = tar.extractfile(member)
    return f.read() if f is not None else b""


def _stage_blobs(
    store: Store,
    tar: tarfile.TarFile,
    manifest: dict[str, Any],
    sums: dict[str, str],
    path: Path,
    progress: BundleProgress | None,
) -> dict[str, Path]:
    staged: dict[str, Path] = {}
    total = sum(int(b["size"]) for b in manifest["blobs"])
    done = 0
    try:
        for b in manifest["blobs"]:
            digest = b["digest"]
            f = tar.extractfile(f"blobs/sha256-{digest}")
            if f is None:
                raise BundleError(f"{path.name}: blobs/sha256-{digest} is not a regular file.")
            part = store.blobs.partial_path(f"bundle-{os.getpid()}-{digest}")
            staged[digest] = part
            h = hashlib.sha256()
            with part.open("wb") as out:
                while chunk := f.read(CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress("import", done, total)
            if h.hexdigest() != digest:
                raise ChecksumError(
                    f"Blob {digest[:12]}… in {path.name} has sha256 {h.hexdigest()[:12]}….",
                    hint="The bundle was damaged in transit; copy or export it again.",
                )
    except BaseException:
        for p in staged.values():
            p.unlink(missing_ok=True)
        raise
    return staged
