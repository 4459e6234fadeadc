"""Bundles for air-gapped machines: export, verified import, and bundles that must be refused."""

from __future__ import annotations

import hashlib
import io
import json
import stat
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kennel.errors import BundleError, ChecksumError, InvalidNameError, KennelError
from kennel.store.add import build_profile, import_gguf
from kennel.store.bundle import FORMAT, export_bundle, import_bundle
from kennel.store.names import parse_ref
from kennel.store.profile import ProfileSpec
from kennel.store.registry import Store
from tests.store.storekit import ModelFactory, blob_files, blob_rows, gguf, open_store, partials

Members = list[tuple[tarfile.TarInfo, bytes | None]]


@pytest.fixture
def source(make_model: ModelFactory, tmp_path: Path) -> Iterator[Store]:
    """A store (the default KENNEL_HOME) holding m@1 (imported) and m@2 (a profile), tagged."""
    with open_store() as s:
        import_gguf(s, gguf(make_model, tmp_path / "M-Q8_0.gguf"), name="m")
        spec = ProfileSpec.model_validate(
            {"system": "Réponds en français.", "parameters": {"temperature": 0.3}, "context": 2048}
        )
        s.add_version(
            "m",
            build_profile(s, "m", spec, base_dir=tmp_path),
            action="create",
            tags=["candidate", "prod"],
            message="french",
        )
        yield s


@pytest.fixture
def target(tmp_path: Path) -> Iterator[Store]:
    """A second, empty store in another KENNEL_HOME: the air-gapped machine."""
    with open_store(tmp_path / "other-home") as s:
        yield s


@pytest.fixture
def bundle(source: Store, tmp_path: Path) -> Path:
    out = tmp_path / "m.tar"
    export_bundle(source, parse_ref("m:prod"), out)
    return out


def test_round_trip(source: Store, target: Store, tmp_path: Path) -> None:
    out = tmp_path / "out" / "m.tar"
    out.parent.mkdir()
    seen: list[tuple[str, int, int]] = []
    manifest = export_bundle(source, parse_ref("m:prod"), out, progress=lambda *a: seen.append(a))
    v_src = source.resolve(parse_ref("m:prod"))
    digest = v_src.profile.base[0]
    assert [p.name for p in out.parent.iterdir()] == ["m.tar"], "no .partial left"
    assert manifest["format"] == FORMAT and manifest["model"] == "m" and manifest["version"] == 2
    assert sorted(manifest["tags"]) == ["candidate", "prod"]
    assert seen and seen[-1][1] == seen[-1][2] == source.blob(digest).size
    with tarfile.open(out) as tar:
        assert tar.getnames() == ["manifest.json", "SHA256SUMS", f"blobs/sha256-{digest}"]

    v = import_bundle(target, out, actor="ops")
    assert (v.model, v.version, v.actor) == ("m", 1, "ops")
    assert v.profile == v_src.profile and v.profile.to_yaml() == v_src.profile.to_yaml()
    assert (v.profile.system, v.profile.parameters.temperature, v.profile.context) == (
        "Réponds en français.",
        0.3,
        2048,
    )
    assert target.tags("m") == {"latest": 1, "candidate": 1, "prod": 1}
    blob = target.blobs.path(digest)
    assert blob.read_bytes() == source.blobs.path(digest).read_bytes()
    assert stat.S_IMODE(blob.stat().st_mode) & 0o222 == 0
    info = target.blob(digest)
    assert (info.kind, info.file_name, info.source) == ("gguf", "M-Q8_0.gguf", "bundle m.tar")
    h = target.history("m")
    assert h[0].action == "import" and "m.tar" in h[0].message and "m@2" in h[0].message
    assert partials(target) == [] and blob_files(target) == {blob.name}

    again = import_bundle(target, out)  # the same bundle again: the same version
    assert again.version == 1 and len(target.versions("m")) == 1
    renamed = import_bundle(target, out, name="M-Fr", message="for the FR team")
    assert renamed.model == "m-fr" and renamed.profile == v.profile and renamed.message == "for the FR team"
    assert blob_files(target) == {blob.name}, "one blob for both"


def test_export_of_a_missing_model(source: Store, tmp_path: Path) -> None:
    with pytest.raises(KennelError):
        export_bundle(source, parse_ref("nope"), tmp_path / "x.tar")
    assert not (tmp_path / "x.tar").exists()


# ---- damaged and hostile bundles ---------------------------------------------------------


def _members(path: Path) -> Members:
    out: Members = []
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            f = tar.extractfile(m) if m.isfile() else None
            out.append((m, f.read() if f else None))
    return out


def _write(path: Path, members: Members) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _edit(bundle: Path, out: Path, edit: Callable[[Members], Members]) -> Path:
    return _write(out, edit(_members(bundle)))


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _manifest(members: Members) -> dict[str, object]:
    data = next(d for i, d in members if i.name == "manifest.json")
    assert data is not None
    doc: dict[str, object] = json.loads(data)
    return doc


def _with_manifest(members: Members, doc: dict[str, object], *, fix_sums: bool) -> Members:
    raw = json.dumps(doc).encode()
    out: Members = []
    for info, data in members:
        if info.name == "manifest.json":
            data = raw
        elif info.name == "SHA256SUMS" and fix_sums and data is not None:
            lines = data.decode().splitlines()
            lines[0] = f"{hashlib.sha256(raw).hexdigest()}  manifest.json"
            data = ("\n".join(lines) + "\n").encode()
        out.append((info, data))
    return out


def _assert_nothing_admitted(store: Store) -> None:
    assert store.models() == [] and blob_files(store) == set() and blob_rows(store) == set()
    assert partials(store) == [] and store.audit_all() == []


def test_flipped_byte_in_a_blob(bundle: Path, target: Store) -> None:
    raw = bytearray(bundle.read_bytes())
    with tarfile.open(bundle) as tar:
        blob = tar.getmember(tar.getnames()[2])
    raw[blob.offset_data + blob.size // 2] ^= 0x01
    bundle.write_bytes(bytes(raw))
    with pytest.raises(ChecksumError, match="has sha256") as info:
        import_bundle(target, bundle)
    assert info.value.hint
    _assert_nothing_admitted(target)


def test_tampered_manifest(bundle: Path, target: Store, tmp_path: Path) -> None:
    def edit(members: Members) -> Members:
        doc = _manifest(members)
        doc["model"] = "something-else"
        return _with_manifest(members, doc, fix_sums=False)

    with pytest.raises(ChecksumError, match="manifest"):
        import_bundle(target, _edit(bundle, tmp_path / "bad.tar", edit))
    _assert_nothing_admitted(target)


def test_manifest_naming_a_hostile_model_or_tag(bundle: Path, target: Store, tmp_path: Path) -> None:
    """A bundle made by hand, with SHA256SUMS rewritten to match: names are still checked,
    before any blob is admitted."""
    for key, value in (("model", "../../etc"), ("tags", ["prod", "$(reboot)"])):

        def edit(members: Members, key: str = key, value: object = value) -> Members:
            doc = _manifest(members)
            doc[key] = value
            return _with_manifest(members, doc, fix_sums=True)

        with pytest.raises(InvalidNameError):
            import_bundle(target, _edit(bundle, tmp_path / "bad.tar", edit))
        _assert_nothing_admitted(target)


def test_manifest_of_another_format(bundle: Path, target: Store, tmp_path: Path) -> None:
    def edit(members: Members) -> Members:
        doc = _manifest(members)
        doc["format"] = "kennel-bundle/99"
        return _with_manifest(members, doc, fix_sums=True)

    with pytest.raises(BundleError, match="manifest") as info:
        import_bundle(target, _edit(bundle, tmp_path / "bad.tar", edit))
    assert info.value.hint and "newer kennel" in info.value.hint
    _assert_nothing_admitted(target)


def test_profile_using_a_blob_the_bundle_lacks(bundle: Path, target: Store, tmp_path: Path) -> None:
    def edit(members: Members) -> Members:
        doc = _manifest(members)
        doc["profile"] = str(doc["profile"]).replace("base:\n- ", "base:\n- " + "f" * 64 + "\n- ")
        return _with_manifest(members, doc, fix_sums=True)

    with pytest.raises(BundleError, match="does not hold"):
        import_bundle(target, _edit(bundle, tmp_path / "bad.tar", edit))
    _assert_nothing_admitted(target)


def _symlink(name: str, to: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, to
    return info, None


def _hardlink(name: str, to: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.LNKTYPE, to
    return info, None


def _folder(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info, None


HOSTILE: dict[str, Callable[[Members], Members]] = {
    "dot-dot": lambda ms: [*ms, _file("../evil", b"x")],
    "dot-dot inside": lambda ms: [*ms, _file("blobs/../../evil", b"x")],
    "absolute": lambda ms: [*ms, _file("/tmp/evil", b"x")],
    "symlink": lambda ms: [*ms, _symlink("blobs/evil", "/etc/passwd")],
    "symlink as a blob": lambda ms: [ms[0], ms[1], _symlink(ms[2][0].name, "/etc/passwd")],
    "hard link": lambda ms: [*ms, _hardlink("evil", "/etc/passwd")],
    "folder": lambda ms: [_folder("blobs"), *ms],
    "extra member": lambda ms: [*ms, _file("notes.txt", b"hello")],
    "extra blob-like member": lambda ms: [*ms, _file("blobs/sha256-" + "0" * 64, b"x")],
    "no manifest": lambda ms: ms[1:],
    "no SHA256SUMS": lambda ms: [ms[0], ms[2]],
    "no blob": lambda ms: ms[:2],
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_or_malformed_bundle(bundle: Path, target: Store, tmp_path: Path, case: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    bad = _edit(bundle, work / "bad.tar", HOSTILE[case])
    with pytest.raises(BundleError):
        import_bundle(target, bad)
    _assert_nothing_admitted(target)
    assert not (tmp_path / "evil").exists() and [p.name for p in work.iterdir()] == ["bad.tar"]


def test_truncated_bundle(bundle: Path, target: Store) -> None:
    raw = bundle.read_bytes()
    for cut in (len(raw) // 2, 1024 + 100, 700):  # in the blob, in the index, in the first header
        bundle.write_bytes(raw[:cut])
        with pytest.raises(BundleError):
            import_bundle(target, bundle)
        _assert_nothing_admitted(target)


@pytest.mark.parametrize(
    "content", [b"", b"<!DOCTYPE html><html>Not found</html>\n", b"GGUF\x03\x00\x00\x00" + b"\x00" * 600]
)
def test_not_a_tar(target: Store, tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.tar"
    path.write_bytes(content)
    with pytest.raises(BundleError, match="not a kennel bundle"):
        import_bundle(target, path)
    _assert_nothing_admitted(target)


def test_missing_bundle(target: Store, tmp_path: Path) -> None:
    with pytest.raises(BundleError):
        import_bundle(target, tmp_path / "nope.tar")
    _assert_nothing_admitted(target)
