"""The store's registry: names, migrations, importing GGUF files, versions, profiles, tags,
rollback, history and diff."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from kennel.errors import (
    InvalidNameError,
    InvalidOptionError,
    KennelError,
    ModelNotFoundError,
    NotGGUFError,
    NotInStoreError,
    StoreError,
    TruncatedModelError,
)
from kennel.store import db
from kennel.store.add import build_profile, default_name, import_gguf
from kennel.store.maintenance import execute_rm, plan_rm
from kennel.store.names import Ref, check_name, parse_ref
from kennel.store.profile import Profile, ProfileSpec
from kennel.store.registry import Store, os_actor
from tests.store.storekit import (
    ModelFactory,
    blob_files,
    blob_rows,
    gguf,
    open_store,
    partials,
    sha256,
    tags_from_audit,
)

# ---- names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("qwen2.5-7b", "qwen2.5-7b"),
        ("Qwen2.5-7B-Instruct", "qwen2.5-7b-instruct"),
        ("a_b.c-d", "a_b.c-d"),
        ("7b", "7b"),
        ("  prod ", "prod"),
        ("x" * 128, "x" * 128),
    ],
)
def test_check_name_accepts_and_lower_cases(text: str, expected: str) -> None:
    assert check_name(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "..",
        "a..b",
        "../x",
        "x/..",
        "a/b",
        "/etc",
        "a\\b",
        "a;b",
        "a$b",
        "$(id)",
        "a`id`",
        "a b",
        "a\tb",
        "a\nb",
        "a|b",
        "a&b",
        "a>b",
        "a*",
        "a?",
        "a'b",
        'a"b',
        "a:b",
        "a@b",
        "~root",
        ".hidden",
        "-rf",
        "_x",
        "x.",
        "x-",
        "é",
        "a\x00b",
        "x" * 129,
    ],
)
def test_check_name_rejects(text: str) -> None:
    with pytest.raises(InvalidNameError) as info:
        check_name(text)
    err = info.value
    assert isinstance(err, StoreError) and isinstance(err, ValueError)
    assert repr(text) in err.message and err.hint and "lower-case" in err.hint


@pytest.mark.parametrize(("text", "char"), [("a;b", "';'"), ("a$b", "'$'"), ("a`b", "'`'"), ("a b", "' '")])
def test_check_name_says_which_character(text: str, char: str) -> None:
    with pytest.raises(InvalidNameError) as info:
        check_name(text)
    assert f"it contains {char}" in info.value.message


def test_check_name_says_dot_dot() -> None:
    with pytest.raises(InvalidNameError, match=r"contains '\.\.'"):
        check_name("../x")


def test_parse_ref_forms() -> None:
    assert parse_ref("Qwen") == Ref("qwen")
    assert parse_ref("qwen:Prod") == Ref("qwen", tag="prod")
    assert parse_ref("qwen@12") == Ref("qwen", version=12)
    assert [str(parse_ref(t)) for t in ("qwen", "qwen:prod", "qwen@3")] == ["qwen", "qwen:prod", "qwen@3"]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "../x",
        "a/b",
        "x:../y",
        "x:a;b",
        "x:",
        ":prod",
        "x:pro d",
        "x@",
        "x@0",
        "x@-1",
        "x@one",
        "x@1;rm",
        "x@1.5",
        "../x@1",
        "a;b@1",
        "x:a:b",
        "x@1@2",
        "$x:prod",
    ],
)
def test_parse_ref_rejects(text: str) -> None:
    with pytest.raises(InvalidNameError):
        parse_ref(text)


def test_default_name_from_file_name() -> None:
    assert default_name("Qwen2.5-7B-Instruct-Q4_K_M-00001-of-00002.gguf") == "qwen2.5-7b-instruct"
    assert default_name("Tiny-Q8_0.gguf") == "tiny"
    assert default_name("weird name;$(x).gguf") == "weird-name-x"


# ---- migrations --------------------------------------------------------------------------

RELEASED = {  # sha256 of each released migration's SQL: a released migration is never edited
    "001_blobs": "0f20c2e7a4de5d7cb0f197d111c6e01ef719d7f23f74c2d5311a4731aca086de",
    "002_models_versions_tags": "9349c3882ddd6e876fd5a1122e22241907fa86bd3094cac115f5b60a3bc07b39",
    "003_audit": "654bf7823ff20cf10703f27fe098815871492a8b84670db141cd0803f7f0be7b",
}


def test_released_migrations_are_append_only() -> None:
    names = [n for n, _ in db.MIGRATIONS]
    assert names[: len(RELEASED)] == list(RELEASED), "released migrations are never renamed or reordered"
    for name, sql in db.MIGRATIONS[: len(RELEASED)]:
        assert hashlib.sha256(sql.encode()).hexdigest() == RELEASED[name], f"{name} was edited"
    assert len(set(names)) == len(names)
    numbers = [int(n.split("_", 1)[0]) for n in names]
    assert numbers == sorted(numbers) == list(range(1, len(names) + 1))


def _applied(path: Path) -> list[str]:
    with sqlite3.connect(path) as raw:
        rows = raw.execute("SELECT name FROM migrations ORDER BY name").fetchall()
    raw.close()
    return [r[0] for r in rows]


def test_new_store_applies_every_migration_once(tmp_path: Path) -> None:
    path = tmp_path / "store" / "kennel.db"
    conn = db.connect(path)
    try:
        assert _applied(path) == [n for n, _ in db.MIGRATIONS]
        assert db.migrate(conn) == []  # nothing left to do
        stamps = conn.execute("SELECT name, applied_at FROM migrations ORDER BY name").fetchall()
    finally:
        conn.close()
    again = db.connect(path)  # reopening applies nothing and rewrites nothing
    try:
        assert db.migrate(again) == []
        assert again.execute("SELECT name, applied_at FROM migrations ORDER BY name").fetchall() == stamps
    finally:
        again.close()


def test_old_store_gets_only_the_missing_migrations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "kennel.db"
    with monkeypatch.context() as m:
        m.setattr(db, "MIGRATIONS", db.MIGRATIONS[:1])
        db.connect(path).close()
    assert _applied(path) == ["001_blobs"]
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        assert db.migrate(conn) == [n for n, _ in db.MIGRATIONS[1:]]
        assert db.migrate(conn) == []
    finally:
        conn.close()


def test_store_from_a_newer_kennel_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "kennel.db"
    db.connect(path).close()
    with sqlite3.connect(path) as raw:
        raw.execute("INSERT INTO migrations VALUES ('004_from_the_future', datetime('now'))")
    raw.close()
    with pytest.raises(StoreError, match="004_from_the_future") as info:
        db.connect(path)
    assert info.value.hint and "Upgrade kennel" in info.value.hint


def test_failed_migration_leaves_nothing_half_done(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "kennel.db"
    db.connect(path).close()
    bad = ("004_broken", "CREATE TABLE half (x INTEGER); INSERT INTO no_such_table VALUES (1)")
    monkeypatch.setattr(db, "MIGRATIONS", (*db.MIGRATIONS, bad))
    with pytest.raises(StoreError, match="cannot be opened"):
        db.connect(path)
    assert "004_broken" not in _applied(path)
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT name FROM sqlite_master WHERE name = 'half'").fetchone() is None
    raw.close()


def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "kennel.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot be opened") as info:
        db.connect(path)
    assert info.value.hint


# ---- importing a GGUF --------------------------------------------------------------------


@pytest.fixture
def store() -> Iterator[Store]:
    with open_store() as s:
        yield s


def test_import_gguf(store: Store, make_model: ModelFactory, tmp_path: Path) -> None:
    src = gguf(make_model, tmp_path / "Tiny-Q8_0.gguf")
    before = (src.read_bytes(), src.stat().st_mtime_ns, stat.S_IMODE(src.stat().st_mode))
    v = import_gguf(store, src, actor="alice")
    digest = sha256(src)
    assert (v.model, v.version, v.tags) == ("tiny", 1, ("latest", "q8_0"))
    assert v.profile == Profile(base=(digest,), base_file="Tiny-Q8_0.gguf")
    assert v.actor == "alice" and "Tiny-Q8_0.gguf" in v.message and not v.removed
    blob = store.blobs.path(digest)
    assert blob.name == f"sha256-{digest}" and blob.parent == store.root / "blobs"
    assert blob.read_bytes() == before[0]
    assert stat.S_IMODE(blob.stat().st_mode) & 0o222 == 0, "blobs are read-only"
    assert not os.access(blob, os.W_OK) or os.geteuid() == 0
    # the user's file is copied, never moved or touched
    assert (src.read_bytes(), src.stat().st_mtime_ns, stat.S_IMODE(src.stat().st_mode)) == before
    info = store.blob(digest)
    assert (info.size, info.kind, info.file_name) == (len(before[0]), "gguf", "Tiny-Q8_0.gguf")
    assert info.source == str(src.resolve())
    assert blob_files(store) == {blob.name} and partials(store) == []
    assert store.resolve(parse_ref("tiny")) == v == store.resolve(parse_ref("tiny:q8_0"))


def test_reimport_reuses_the_version(store: Store, make_model: ModelFactory, tmp_path: Path) -> None:
    src = gguf(make_model, tmp_path / "Tiny-Q8_0.gguf")
    first = import_gguf(store, src)
    again = import_gguf(store, src)
    assert again == first
    assert [v.version for v in store.versions("tiny")] == [1]
    assert [e.action for e in store.history("tiny")] == ["import", "tag", "tag"]  # no second import
    other = import_gguf(store, src, name="Other")  # same bytes under another name: one blob
    assert other.model == "other" and other.profile.base == first.profile.base
    assert len(blob_files(store)) == 1 and partials(store) == []


def test_import_name_is_checked_before_anything_is_copied(
    store: Store, make_model: ModelFactory, tmp_path: Path
) -> None:
    src = gguf(make_model, tmp_path / "Tiny-Q8_0.gguf")
    for bad in ("a;b", "../x", "a b"):
        with pytest.raises(InvalidNameError):
            import_gguf(store, src, name=bad)
    assert blob_files(store) == set() and blob_rows(store) == set() and store.models() == []


def _bad_inputs(tmp_path: Path, good: Path) -> dict[str, tuple[Path, type[KennelError]]]:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(good.read_bytes()[:-100])
    header_cut = tmp_path / "header-cut.gguf"
    header_cut.write_bytes(good.read_bytes()[:200])
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    html = tmp_path / "page.gguf"
    html.write_text("<!DOCTYPE html><html><body>Sign in to continue</body></html>\n" * 20)
    return {
        "truncated": (cut, TruncatedModelError),
        "header cut": (header_cut, TruncatedModelError),
        "empty": (empty, NotGGUFError),
        "html": (html, NotGGUFError),
        "missing": (tmp_path / "missing.gguf", ModelNotFoundError),
        "folder": (tmp_path, ModelNotFoundError),
    }


def test_bad_files_are_refused_and_leave_nothing(
    store: Store, make_model: ModelFactory, tmp_path: Path
) -> None:
    good = gguf(make_model, tmp_path / "src" / "good.gguf")
    for what, (path, error) in _bad_inputs(tmp_path, good).items():
        before = path.read_bytes() if path.is_file() else None
        with pytest.raises(error) as info:
            import_gguf(store, path, name="m")
        assert info.value.message, what
        assert type(info.value) is error, what
        assert blob_files(store) == set() and partials(store) == [], what
        assert blob_rows(store) == set() and store.models() == [], what
        if before is not None:
            assert path.read_bytes() == before, what
    assert store.audit_all() == []


# ---- versions, profiles ------------------------------------------------------------------


def _spec(folder: Path, text: str, name: str = "profile.yaml") -> ProfileSpec:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return ProfileSpec.load(folder / name)


def _create(
    store: Store,
    name: str,
    text: str,
    folder: Path,
    *,
    tags: tuple[str, ...] = ("latest",),
    message: str = "",
) -> int:
    profile = build_profile(store, name, _spec(folder, text), base_dir=folder)
    return store.add_version(name, profile, action="create", tags=tags, message=message).version


def test_create_from_each_kind_of_source(store: Store, make_model: ModelFactory, tmp_path: Path) -> None:
    v1 = import_gguf(store, gguf(make_model, tmp_path / "Tiny-Q8_0.gguf"))
    base = v1.profile.base
    spec = tmp_path / "specs"

    text = (
        "from: tiny\nsystem: You answer in Vietnamese.\nparameters:\n"
        "  temperature: 0.2\n  stop: ['</s>']\ncontext: 4096\n"
    )
    v2 = store.add_version(
        "tiny",
        build_profile(store, "tiny", _spec(spec, text), base_dir=spec),
        action="create",
        tags=["candidate"],
        message="vi",
    )
    assert v2.version == 2 and v2.tags == ("candidate",) and v2.message == "vi"
    p = v2.profile
    assert (p.base, p.base_file, p.system, p.context) == (
        base,
        "Tiny-Q8_0.gguf",
        "You answer in Vietnamese.",
        4096,
    )
    assert p.parameters.temperature == 0.2 and p.parameters.stop == ("</s>",)
    assert store.tags("tiny") == {"latest": 1, "q8_0": 1, "candidate": 2}, (
        "tags not given stay where they are"
    )

    # NAME:TAG and NAME@V inherit that version; fields given are laid over it
    v3 = _create(store, "tiny", "from: tiny:candidate\ncontext: 2048\n", spec)
    p3 = store.version("tiny", v3).profile
    assert (p3.system, p3.parameters.temperature, p3.context) == ("You answer in Vietnamese.", 0.2, 2048)
    p4 = store.version("tiny", _create(store, "tiny", "from: tiny@1\nsystem: Be brief.\n", spec)).profile
    assert (p4.system, p4.context, p4.parameters.temperature) == ("Be brief.", None, None)
    # without `from`, an existing model starts from its latest
    p5 = store.version("tiny", _create(store, "tiny", "template: '{{ x }}'\n", spec)).profile
    assert (p5.system, p5.template) == ("Be brief.", "{{ x }}")

    # sha256:HEX (a prefix) names a blob already in the store
    p6 = store.version("blobbed", _create(store, "blobbed", f"from: sha256:{base[0][:12]}\n", spec)).profile
    assert p6.base == base and p6.base_file == "Tiny-Q8_0.gguf"

    # a .gguf path is read relative to the spec's folder, and copied in
    other = gguf(make_model, spec / "weights" / "Other-Q8_0.gguf", variant="beta")
    p7 = store.version("local", _create(store, "local", "from: weights/Other-Q8_0.gguf\n", spec)).profile
    assert p7.base == (sha256(other),) and p7.base_file == "Other-Q8_0.gguf"
    assert store.blobs.has(sha256(other)) and other.is_file()
    assert [v.version for v in store.versions("tiny")] == [1, 2, 3, 4, 5]


def test_create_needs_a_source_for_a_new_model(store: Store, tmp_path: Path) -> None:
    with pytest.raises(InvalidOptionError, match="needs `from`"):
        build_profile(store, "new", _spec(tmp_path, "system: hi\n"), base_dir=tmp_path)
    with pytest.raises(NotInStoreError):
        build_profile(store, "new", _spec(tmp_path, "from: nothing-here\n"), base_dir=tmp_path)
    with pytest.raises(NotInStoreError):
        build_profile(store, "new", _spec(tmp_path, "from: sha256:0123456789ab\n"), base_dir=tmp_path)
    with pytest.raises(ModelNotFoundError):
        build_profile(store, "new", _spec(tmp_path, "from: ./missing.gguf\n"), base_dir=tmp_path)
    assert store.models() == [] and blob_files(store) == set()


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("from: x\nsystme: typo\n", "systme"),
        ("from: x\nparameters:\n  temperature: 9\n", "temperature"),
        ("from: x\nparameters:\n  top_p: 1.5\n", "top_p"),
        ("from: x\nparameters:\n  tempreature: 0.1\n", "tempreature"),
        ("from: x\ncontext: 10\n", "context"),
        ("from: x\nadapter_scale: 0\n", "adapter_scale"),
        ("- just\n- a list\n", "kennel profile"),
        ("from: [unclosed\n", "not valid YAML"),
    ],
)
def test_invalid_profile_yaml(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "profile.yaml"
    path.write_text(text)
    with pytest.raises(InvalidOptionError, match=words):
        ProfileSpec.load(path)


def test_profile_file_missing(tmp_path: Path) -> None:
    with pytest.raises(InvalidOptionError, match="Cannot read"):
        ProfileSpec.load(tmp_path / "nope.yaml")


def test_versions_are_immutable_and_never_renumbered(
    store: Store, make_model: ModelFactory, tmp_path: Path
) -> None:
    import_gguf(store, gguf(make_model, tmp_path / "m.gguf"))
    v1 = store.version("m", 1)
    _create(store, "m", "system: two\n", tmp_path)
    _create(store, "m", "system: three\n", tmp_path, tags=("scratch",))
    store.remove_tag("m", "scratch")
    execute_rm(store, plan_rm(store, "m@3"))
    assert _create(store, "m", "system: four\n", tmp_path) == 4, "a removed version's number is not reused"
    assert store.version("m", 1).profile == v1.profile and store.version("m", 1).created_at == v1.created_at
    assert store.version("m", 2).profile.system == "two"
    assert store.version("m", 3).removed and store.version("m", 3).profile.system == "three"
    assert [v.version for v in store.versions("m")] == [1, 2, 4]
    assert [v.version for v in store.versions("m", include_removed=True)] == [1, 2, 3, 4]
    with pytest.raises(NotInStoreError, match="removed"):
        store.resolve(parse_ref("m@3"))
    with pytest.raises(NotInStoreError, match="no version 9"):
        store.version("m", 9)
    # the same profile again is the same version: no duplicate
    assert _create(store, "m", "system: two\n", tmp_path, tags=("again",)) == 2
    assert store.tags("m")["again"] == 2


def test_a_version_needs_its_blobs_in_the_store(store: Store) -> None:
    with pytest.raises(NotInStoreError):
        store.add_version("m", Profile(base=("ab" * 32,), base_file="x.gguf"), action="create")
    assert store.models() == []
    with pytest.raises(InvalidNameError):
        store.add_version("m", Profile(base=("ab" * 32,), base_file="x.gguf"), action="create", tags=["a b"])


# ---- tags, rollback ----------------------------------------------------------------------


@pytest.fixture
def three(store: Store, make_model: ModelFactory, tmp_path: Path) -> Store:
    """Model m with versions 1 (imported), 2 and 3 (system prompts); latest at 3."""
    import_gguf(store, gguf(make_model, tmp_path / "m.gguf"), actor="alice")
    _create(store, "m", "system: two\n", tmp_path, message="second")
    _create(store, "m", "system: three\n", tmp_path, message="third")
    return store


def test_tags(three: Store) -> None:
    s = three
    assert s.set_tag(parse_ref("m@2"), "Prod", actor="bob", message="ship") == (None, 2)
    assert s.tags("m")["prod"] == 2
    assert s.set_tag(parse_ref("m@3"), "prod") == (2, 3)
    assert s.set_tag(parse_ref("m:prod"), "canary") == (None, 3)
    assert s.set_tag(parse_ref("m"), "stable") == (None, 3)  # a bare name is its latest
    assert s.resolve(parse_ref("m:prod")).version == 3
    assert s.remove_tag("m", "canary") == 3
    assert "canary" not in s.tags("m")
    with pytest.raises(NotInStoreError, match="no tag 'canary'"):
        s.remove_tag("m", "canary")
    with pytest.raises(NotInStoreError, match="no tag 'canary'"):
        s.resolve(parse_ref("m:canary"))
    with pytest.raises(NotInStoreError, match="no version 7"):
        s.set_tag(parse_ref("m@7"), "prod")
    with pytest.raises(NotInStoreError, match="No model 'nope'"):
        s.set_tag(parse_ref("nope@1"), "prod")
    for bad in ("pro d", "../x", "a;b", "$x", ""):
        with pytest.raises(InvalidNameError):
            s.set_tag(parse_ref("m@1"), bad)
    assert s.tags("m") == {"latest": 3, "prod": 3, "q8_0": 1, "stable": 3}
    assert tags_from_audit(s.history("m")) == s.tags("m")


def test_rollback(three: Store) -> None:
    s = three
    s.set_tag(parse_ref("m@3"), "prod")
    assert s.rollback("m", message="bad answers") == (3, 2)
    assert s.resolve(parse_ref("m")).version == 2
    assert s.rollback("m") == (2, 1)
    with pytest.raises(StoreError, match="oldest") as info:
        s.rollback("m")
    assert not isinstance(info.value, NotInStoreError)
    assert s.tags("m")["latest"] == 1
    assert s.rollback("m", tag="prod", to=1) == (3, 1)
    assert s.rollback("m", tag="prod", to=3) == (1, 3), "--to may also go forward"
    with pytest.raises(NotInStoreError, match="no live version 9"):
        s.rollback("m", tag="prod", to=9)
    with pytest.raises(NotInStoreError, match="no tag 'canary'"):
        s.rollback("m", tag="canary")
    with pytest.raises(NotInStoreError, match="No model 'zzz'"):
        s.rollback("zzz")
    last = s.history("m")[-1]
    assert (last.action, last.tag, last.version_before, last.version_after) == ("rollback", "prod", 1, 3)
    assert tags_from_audit(s.history("m")) == s.tags("m") == {"latest": 1, "prod": 3, "q8_0": 1}


def test_rollback_skips_removed_versions(three: Store) -> None:
    execute_rm(three, plan_rm(three, "m@2"))
    assert three.rollback("m") == (3, 1)


# ---- history, diff -----------------------------------------------------------------------


def test_history_records_who_when_what_why(three: Store) -> None:
    s = three
    s.set_tag(parse_ref("m@2"), "prod", actor="bob", message="ship it")
    s.rollback("m", tag="prod", actor="carol", message="regression")
    s.remove_tag("m", "prod", actor="dave", message="retire")
    h = s.history("m")
    assert [(e.action, e.tag, e.version_before, e.version_after) for e in h] == [
        ("import", None, None, 1),
        ("tag", "latest", None, 1),
        ("tag", "q8_0", None, 1),
        ("create", None, None, 2),
        ("tag", "latest", 1, 2),
        ("create", None, None, 3),
        ("tag", "latest", 2, 3),
        ("tag", "prod", None, 2),
        ("rollback", "prod", 2, 1),
        ("untag", "prod", 1, None),
    ]
    assert [e.id for e in h] == sorted(e.id for e in h)
    for e in h:
        assert datetime.fromisoformat(e.at).tzinfo is not None and e.actor and e.model == "m"
    assert h[0].actor == "alice" and h[3].actor == os_actor()
    assert (h[7].actor, h[7].message) == ("bob", "ship it")
    assert (h[8].actor, h[8].message) == ("carol", "regression")
    assert (h[9].actor, h[9].message) == ("dave", "retire")
    assert h[3].message == "second" and h[5].message == "third"
    # the create entry carries the change as a diff
    assert "--- /dev/null" in h[0].detail and "+base:" in h[0].detail
    assert "--- m@1" in h[3].detail and "+++ m@2" in h[3].detail and "+system: two" in h[3].detail
    assert "-system: two" in h[5].detail and "+system: three" in h[5].detail
    assert tags_from_audit(h) == s.tags("m")
    assert [e.id for e in s.audit_all()] == [e.id for e in h]


def test_audit_log_agrees_with_state(three: Store) -> None:
    s = three
    created = {e.version_after for e in s.history("m") if e.action in ("import", "create")}
    assert created == {v.version for v in s.versions("m", include_removed=True)}
    for v in s.versions("m"):  # each version's row matches its creation entry
        entry = next(
            e for e in s.history("m") if e.action in ("import", "create") and e.version_after == v.version
        )
        assert (entry.actor, entry.message) == (v.actor, v.message)


def test_diff(three: Store) -> None:
    d = three.diff("m", 2, 3)
    assert d.startswith("--- m@2\n+++ m@3\n")
    assert "-system: two\n" in d and "+system: three\n" in d and "base:" in d  # context lines
    assert three.diff("m", 1, 1) == ""
    assert "+system: three" in three.diff("m", 1, 3) and "-system" not in three.diff("m", 1, 3)
    with pytest.raises(NotInStoreError):
        three.diff("m", 1, 9)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("x" * 136, "136 characters long, more than 128"),
        ("-rf", "start with a letter or digit"),
        ("", "empty"),
    ],
)
def test_check_name_says_why_in_words(text: str, why: str) -> None:
    with pytest.raises(InvalidNameError, match=why):
        check_name(text)
