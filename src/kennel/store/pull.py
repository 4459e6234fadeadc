"""`kennel pull`: a GGUF, or a transformers (safetensors) model for vLLM, from the Hugging Face
hub (or HF_ENDPOINT) into the store.

Through huggingface_hub: the repo listing with each file's LFS sha256 and size (model_info with
files_metadata), pinned to one commit so the shards of a split model match, file URLs and auth
headers (HF_TOKEN). The bytes stream into store/partial/<sha256>.part under a per-blob lock:
an interrupted pull (network drop, Ctrl-C, kill -9, full disk) leaves the partial file, and the
next pull asks for the rest with a Range request (starting over if the server ignores it).
Only bytes whose sha256 matches the hub's become a blob. A transformers repo is pulled as the
files vLLM loads (config, tokenizer, *.safetensors), each a blob, with the same guarantees.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from huggingface_hub import HfApi, hf_hub_url
from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]  # public, not in __all__

from kennel.catalog.entries import CatalogEntry, find_classifier
from kennel.catalog.entries import find as catalog_find
from kennel.catalog.resolve import choose_gguf, hub_call, hub_endpoint, hub_token, parse_hub_ref, split_names
from kennel.errors import ChecksumError, ModelNotFoundError, ModelSourceError, RemoteError
from kennel.store.add import check_gguf, default_name, version_tags
from kennel.store.blobs import check_free_space, disk_full
from kennel.store.classifier_pull import ONNX_PATHS, add_classifier, classifier_files, looks_like_classifier
from kennel.store.names import DEFAULT_TAG, check_name, parse_ref
from kennel.store.profile import ModelFormat, Profile
from kennel.store.registry import Store, VersionInfo

MAX_STALLED_ATTEMPTS = 5  # tries in a row that bring no new byte
MAX_REQUESTS = 200  # per file, whatever happens: the loop always ends
PullProgress = Callable[[str, int, int], None]  # file name, bytes done, bytes total
# what vLLM reads from a transformers repo (top level only: no original/ checkpoints, no .bin
# duplicates of the safetensors, no custom code, which kennel would never run)
FOLDER_FILES = re.compile(
    r"(config\.json|generation_config\.json|tokenizer(_config)?\.json|special_tokens_map\.json|"
    r"added_tokens\.json|tokenizer\.model|vocab\.(json|txt)|merges\.txt|chat_template\.(json|jinja)|"
    r"preprocessor_config\.json|modules\.json|sentence_bert_config\.json|1_Pooling/config\.json|"
    r"[^/]+\.safetensors(\.index\.json)?)"
)


@dataclass(frozen=True)
class RemoteFile:
    path: str  # in the repo
    size: int
    sha256: str | None  # from the hub's LFS metadata; None for non-LFS files
    git_oid: str | None = None  # a non-LFS file's git blob id (sha1 of "blob SIZE\0" + bytes)


@dataclass(frozen=True)
class PullTarget:
    name: str  # in the store
    repo: str
    commit: str
    files: tuple[RemoteFile, ...]  # shards in order
    quant: str | None
    catalog_name: str | None
    format: ModelFormat = "gguf"
    classifier: bool = False  # a prompt-injection classifier for the guard (classifier_pull.py)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


def plan_pull(
    ref: str,
    *,
    file: str | None = None,
    revision: str | None = None,
    name: str | None = None,
    default_quant: Callable[[CatalogEntry], str] | None = None,
) -> PullTarget:
    """What to download for ``ref``: a catalog NAME[:QUANT] or hf.co/OWNER/REPO[:QUANT]."""
    head, _, quant = ref.strip().partition(":")
    entry = catalog_find(head)
    classifier = find_classifier(head) if entry is None else None
    if classifier is not None:
        return _plan_repo(
            classifier.hf_repo,
            quant=None,
            file=None,
            revision=revision,
            name=name or classifier.name,
            catalog_name=classifier.name,
            lenient_file=False,
            classifier=True,
        )
    if entry is not None:
        if entry.gguf is None:
            raise ModelNotFoundError(
                f"The catalog lists no GGUF source for {entry.name}.",
                hint="Pull a GGUF repo by its hf.co/OWNER/REPO name instead.",
            )
        q = (quant or (default_quant(entry) if default_quant else "Q4_K_M")).upper()
        listed = entry.gguf.file(q) if q in entry.gguf.quants else None
        return _plan_repo(
            entry.gguf.repo,
            quant=q,
            file=file or listed,
            revision=revision,
            name=name or entry.name,
            catalog_name=entry.name,
            lenient_file=file is None,
        )
    repo, hub_quant = parse_hub_ref(ref)
    if repo is None:
        parse_ref(head)  # a name with path tricks or shell characters gets its own clear error
        raise ModelNotFoundError(
            f"{ref!r} is neither a catalog model nor a Hugging Face repo.",
            hint="Use a catalog name (`kennel catalog`) or hf.co/OWNER/REPO[:QUANT].",
        )
    return _plan_repo(
        repo, quant=hub_quant, file=file, revision=revision, name=name, catalog_name=None, lenient_file=False
    )


def _plan_repo(
    repo: str,
    *,
    quant: str | None,
    file: str | None,
    revision: str | None,
    name: str | None,
    catalog_name: str | None,
    lenient_file: bool,
    classifier: bool = False,
) -> PullTarget:
    api = HfApi(endpoint=hub_endpoint(), token=hub_token())
    info = hub_call(f"hf.co/{repo}", api.model_info, repo, revision=revision, files_metadata=True)
    siblings = {s.rfilename: s for s in (info.siblings or [])}
    commit = info.sha or revision or "main"
    if (
        not classifier
        and file is None
        and any(p in siblings for p in ONNX_PATHS)
        and "config.json" in siblings
    ):
        # an ONNX export next to config.json: a classifier when its architecture says so
        classifier = looks_like_classifier(_read_json(repo, commit, "config.json"))
    if classifier:
        wanted = tuple(_remote(n, siblings[n]) for n in classifier_files(repo, siblings))
        store_name = check_name(name) if name else default_name(repo.rsplit("/", 1)[-1])
        return PullTarget(
            store_name, repo, commit, wanted, None, catalog_name, "transformers", classifier=True
        )
    ggufs = {
        n: int(s.size or 0)
        for n, s in siblings.items()
        if n.lower().endswith(".gguf") and "mmproj" not in n.lower()
    }
    folder = "config.json" in siblings and any(n.endswith(".safetensors") for n in siblings)
    if not ggufs and file is None and folder:
        return _plan_folder(repo, info, siblings, name=name, catalog_name=catalog_name, revision=revision)
    if lenient_file and file not in ggufs:
        file = None  # the catalog's expected name moved: fall back to matching the quant
    chosen = choose_gguf(repo, ggufs, quant=quant, file=file)
    files = []
    for n in split_names(chosen):
        s = siblings.get(n)
        if s is None:
            raise ModelNotFoundError(
                f"hf.co/{repo} lacks {n}, a shard of {chosen}.", hint="The upload is incomplete."
            )
        files.append(
            RemoteFile(n, int(s.lfs.size if s.lfs else s.size or 0), s.lfs.sha256 if s.lfs else None)
        )
    store_name = check_name(name) if name else default_name(chosen)
    return PullTarget(store_name, repo, info.sha or revision or "main", tuple(files), quant, catalog_name)


def _plan_folder(
    repo: str,
    info: Any,
    siblings: dict[str, Any],
    *,
    name: str | None,
    catalog_name: str | None,
    revision: str | None,
) -> PullTarget:
    """A transformers repo: the files vLLM loads, config.json first."""
    chosen = sorted((n for n in siblings if FOLDER_FILES.fullmatch(n)), key=lambda n: (n != "config.json", n))
    index = "model.safetensors.index.json"
    if index in siblings:  # the shards it names; not a consolidated copy of the same weights
        shards = set(_read_index(repo, info.sha or revision or "main"))
        if shards:
            chosen = [n for n in chosen if not n.endswith(".safetensors") or n in shards]
    files = tuple(_remote(n, siblings[n]) for n in chosen)
    store_name = check_name(name) if name else default_name(repo.rsplit("/", 1)[-1])
    commit = info.sha or revision or "main"
    return PullTarget(store_name, repo, commit, files, None, catalog_name, format="transformers")


def _remote(n: str, s: Any) -> RemoteFile:
    return RemoteFile(
        n,
        int(s.lfs.size if s.lfs else s.size or 0),
        s.lfs.sha256 if s.lfs else None,
        None if s.lfs else getattr(s, "blob_id", None),
    )


def _read_index(repo: str, commit: str) -> list[str]:
    """The shard names in a repo's model.safetensors.index.json."""
    try:
        return sorted(set(_read_json(repo, commit, "model.safetensors.index.json")["weight_map"].values()))
    except (KeyError, AttributeError) as exc:
        raise RemoteError(
            f"hf.co/{repo} has a model.safetensors.index.json kennel cannot read ({exc})."
        ) from exc


def _read_json(repo: str, commit: str, path: str) -> Any:
    """A small JSON file of the repo, read directly."""
    url = hf_hub_url(repo, path, revision=commit, endpoint=hub_endpoint())
    try:
        r = httpx.get(url, headers=build_hf_headers(token=hub_token()), follow_redirects=True, timeout=30.0)
        r.raise_for_status()
        return r.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise RemoteError(
            f"hf.co/{repo} has a {path} kennel cannot read ({exc}).",
            hint="Check HF_ENDPOINT and the network, or pull again later.",
        ) from exc


def pull(
    store: Store,
    target: PullTarget,
    *,
    actor: str | None = None,
    message: str = "",
    progress: PullProgress | None = None,
    client: httpx.Client | None = None,
) -> VersionInfo:
    """Download the target's files (resuming), verify, admit, and record a version."""
    missing = [f for f in target.files if not (f.sha256 and store.blobs.has(f.sha256))]
    partials = [store.blobs.partial_path(_key(f, target)) for f in missing]
    partial_bytes = sum(p.stat().st_size for p in partials if p.exists())
    check_free_space(
        store.root, sum(f.size for f in missing) - partial_bytes, what=f"{target.repo} ({target.name})"
    )
    own = client is None
    http = client or httpx.Client(follow_redirects=True, timeout=httpx.Timeout(30.0, read=60.0))
    digests = []
    try:
        for f in target.files:
            digests.append(_fetch_one(store, target, f, http, progress))
    finally:
        if own:
            http.close()
    if target.classifier:
        files = {f.path: d for f, d in zip(target.files, digests, strict=True)}
        return add_classifier(
            store,
            name=target.name,
            repo=target.repo,
            files=files,
            catalog_name=target.catalog_name,
            actor=actor,
            message=message,
        )
    if target.format == "transformers":
        return _add_folder(store, target, digests, actor=actor, message=message)
    header = check_gguf(store.blobs.path(digests[0]))
    profile = Profile(base=tuple(digests), base_file=target.files[0].path.rsplit("/", 1)[-1])
    return store.add_version(
        target.name,
        profile,
        action="pull",
        actor=actor,
        message=message or f"pulled hf.co/{target.repo}/{target.files[0].path}",
        tags=version_tags(header),
        catalog_name=target.catalog_name,
    )


def _add_folder(
    store: Store, target: PullTarget, digests: list[str], *, actor: str | None, message: str
) -> VersionInfo:
    from kennel.model.hf_config import shape_from_config

    try:  # config.json is first: kennel (and vLLM) must understand the model
        shape_from_config(json.loads(store.blobs.path(digests[0]).read_text()), name=target.name)
    except (ValueError, KeyError) as exc:
        raise ModelSourceError(
            f"hf.co/{target.repo} has a config.json kennel cannot read ({exc}).",
            hint="kennel serves transformers models of the architectures `kennel fit` knows.",
        ) from exc
    profile = Profile(
        base=tuple(digests),
        base_file=target.repo.rsplit("/", 1)[-1],
        format="transformers",
        files=tuple(f.path for f in target.files),
    )
    return store.add_version(
        target.name,
        profile,
        action="pull",
        actor=actor,
        message=message or f"pulled hf.co/{target.repo} ({len(target.files)} files)",
        tags=(DEFAULT_TAG,),
        catalog_name=target.catalog_name,
    )


def _key(f: RemoteFile, target: PullTarget) -> str:
    return f.sha256 or hashlib.sha256(f"{target.repo}/{target.commit}/{f.path}".encode()).hexdigest()


def _fetch_one(
    store: Store, target: PullTarget, f: RemoteFile, http: httpx.Client, progress: PullProgress | None
) -> str:
    key = _key(f, target)
    with store.blobs.lock(key):
        if f.sha256 and store.blobs.has(f.sha256):
            if progress:
                progress(f.path, f.size, f.size)
            store.register_blob(
                f.sha256, kind=_kind(target), file_name=_file_name(target, f), source=_source(target, f)
            )
            return f.sha256
        part = store.blobs.partial_path(key)
        url = hf_hub_url(target.repo, f.path, revision=target.commit, endpoint=hub_endpoint())
        download(
            http,
            url,
            part,
            size=f.size,
            headers=build_hf_headers(token=hub_token()),
            on_progress=(lambda done: progress(f.path, done, f.size)) if progress else None,
        )
        if f.sha256 is None and f.git_oid:
            _check_git_oid(part, f)  # a config or tokenizer file, outside LFS: git's own checksum
        first = f.path == target.files[0].path and target.format == "gguf"
        if first and f.sha256 is None:
            _check_or_discard(part)  # without a checksum, the GGUF check is all there is
        digest = store.blobs.admit(part, expected=f.sha256, move=True)
        if first and f.sha256 is not None:
            _check_or_discard(store.blobs.path(digest))
    store.register_blob(
        digest, kind=_kind(target), file_name=_file_name(target, f), source=_source(target, f)
    )
    return digest


def _kind(target: PullTarget) -> str:
    return "gguf" if target.format == "gguf" else "file"


def _file_name(target: PullTarget, f: RemoteFile) -> str:
    # a GGUF is known by its file name; a folder's file by its path in the folder
    return f.path.rsplit("/", 1)[-1] if target.format == "gguf" else f.path


def _check_git_oid(part: Path, f: RemoteFile) -> None:
    data = part.read_bytes()  # files outside LFS are small (configs, tokenizers)
    oid = hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()
    if oid != f.git_oid:
        part.unlink(missing_ok=True)
        raise ChecksumError(
            f"{f.path} downloaded with git id {oid[:12]}…, not the {str(f.git_oid)[:12]}… the hub lists.",
            hint="The partial file was deleted; run the command again to download it afresh.",
        )


def _check_or_discard(path: Path) -> None:
    try:
        check_gguf(path)
    except ModelSourceError:
        path.chmod(0o644)
        path.unlink(missing_ok=True)
        raise


def _source(target: PullTarget, f: RemoteFile) -> str:
    return f"hf.co/{target.repo}@{target.commit}/{f.path}"


def download(
    http: httpx.Client,
    url: str,
    part: os.PathLike[str],
    *,
    size: int,
    headers: dict[str, str],
    on_progress: Callable[[int], None] | None = None,
) -> None:
    """Bring ``part`` to ``size`` bytes from ``url``, resuming from what it holds.

    A dropped connection is retried with a short backoff; tries that bring no new byte count
    against MAX_STALLED_ATTEMPTS, any try that makes progress resets the count (as huggingface_hub
    does), and MAX_REQUESTS bounds the loop whatever the server does.
    """
    path = os.fspath(part)
    stalled = 0
    for _ in range(MAX_REQUESTS):
        have = os.path.getsize(path) if os.path.exists(path) else 0
        if have > size:
            os.unlink(path)
            have = 0
        if have == size and size > 0:
            return
        if on_progress:
            on_progress(have)
        try:
            got = _get_range(http, url, path, have, headers, on_progress)
        except (httpx.TransportError, _ShortRead) as exc:
            got = exc.got if isinstance(exc, _ShortRead) else 0
            if got == 0:
                stalled += 1
            else:
                stalled = 0
            if stalled >= MAX_STALLED_ATTEMPTS:
                raise RemoteError(
                    f"The download of {url.rsplit('/', 1)[-1]} keeps failing ({exc}); "
                    f"{have} of {size} bytes are kept.",
                    hint="Check the network and run the same command again: it resumes.",
                ) from exc
            time.sleep(min(0.2 * 2**stalled, 5.0))
            continue
        if got == 0 and size > 0:
            stalled += 1
            if stalled >= MAX_STALLED_ATTEMPTS:
                raise RemoteError(
                    f"The server sends no bytes for {url.rsplit('/', 1)[-1]}.",
                    hint="Try again later; the partial file is kept.",
                )
        if size == 0:
            open(path, "ab").close()
            return
    raise RemoteError(
        f"Gave up on {url.rsplit('/', 1)[-1]} after {MAX_REQUESTS} requests.",
        hint="Run the same command again: it resumes.",
    )


class _ShortRead(Exception):
    def __init__(self, got: int) -> None:
        super().__init__("the connection closed early")
        self.got = got


def _get_range(
    http: httpx.Client,
    url: str,
    path: str,
    have: int,
    headers: dict[str, str],
    on_progress: Callable[[int], None] | None,
) -> int:
    """One request for the bytes after ``have``; returns how many new bytes were written."""
    req_headers = {**headers, "Accept-Encoding": "identity", **({"Range": f"bytes={have}-"} if have else {})}
    got = 0
    with http.stream("GET", url, headers=req_headers) as r:
        if r.status_code == 416:  # our partial is already complete or longer than the file
            os.unlink(path)
            return 0
        _raise_for_status(r, url)
        if r.status_code == 200 and have:
            have = 0  # the server ignored Range: start again from byte 0
        try:
            with open(path, "ab" if have else "wb") as out:
                try:
                    for chunk in r.iter_bytes():  # as it arrives: a kill keeps all received bytes
                        out.write(chunk)
                        got += len(chunk)
                        if on_progress:
                            on_progress(have + got)
                except httpx.TransportError as exc:
                    raise _ShortRead(got) from exc
                finally:
                    out.flush()
                    os.fsync(out.fileno())
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise disk_full(exc, os.path.basename(path)) from exc
            raise
    expected = r.headers.get("Content-Length")
    if expected is not None and got < int(expected):
        raise _ShortRead(got)
    return got


def _raise_for_status(r: httpx.Response, url: str) -> None:
    if r.status_code < 400:
        return
    name = url.rsplit("/", 1)[-1]
    if r.status_code in (401, 403):
        raise RemoteError(
            f"The hub refused {name} (HTTP {r.status_code}).",
            hint="Gated models need HF_TOKEN and an accepted licence on the model page.",
        )
    if r.status_code == 404:
        raise ModelNotFoundError(f"{name} is no longer on the hub.", hint="Check the repo and revision.")
    raise RemoteError(
        f"The hub answered HTTP {r.status_code} for {name}.", hint="Try again later; it resumes."
    )
