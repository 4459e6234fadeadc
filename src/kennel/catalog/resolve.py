"""Turn what the user typed into a ModelShape, reading as few bytes as possible.

    ./model.gguf                       local GGUF: the header only
    https://host/path/model.gguf       GGUF over HTTP: header through range requests
    hf.co/OWNER/REPO[:QUANT]           a GGUF in a Hugging Face repo (QUANT picks the file)
    OWNER/REPO                         a Hugging Face repo: GGUF if it has one, else config.json
    llama-3.1-8b                       a catalog name

Hub access goes through huggingface_hub, which honours HF_ENDPOINT and HF_TOKEN; nothing but
metadata, config.json and GGUF headers is fetched.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx
from huggingface_hub import HfApi, hf_hub_url
from huggingface_hub import errors as hf_errors
from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]  # public, not in __all__

from kennel.catalog import entries as catalog
from kennel.errors import ModelNotFoundError, ModelSourceError, RemoteError
from kennel.model.gguf_header import GGUFHeader, TensorInfo, read_header
from kennel.model.gguf_shape import shape_from_gguf
from kennel.model.hf_config import shape_from_config
from kennel.model.shape import ModelShape
from kennel.model.sources import FileSource, HttpSource

Kind = Literal["gguf-file", "gguf-url", "gguf-hub", "hf-config", "catalog"]
_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
DEFAULT_QUANT_PREFERENCE = ("Q4_K_M", "Q4_K_S", "Q5_K_M", "Q4_0", "Q8_0", "Q6_K")


@dataclass(frozen=True)
class ResolvedModel:
    ref: str
    shape: ModelShape
    kind: Kind
    file_name: str | None = None
    file_size: int | None = None
    repo_files: tuple[tuple[str, int], ...] = field(default=())  # other GGUF files in the repo


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hub_token() -> str | None:
    return os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or None


def resolve(ref: str, *, file: str | None = None, revision: str | None = None) -> ResolvedModel:
    ref = ref.strip()
    if not ref:
        raise ModelSourceError(
            "No model given.", hint="Give a .gguf path, an https URL, a Hugging Face repo or a catalog name."
        )
    if ref.startswith(("https://", "http://")) and not _is_hub_page(ref):
        return _from_url(ref)
    path = Path(ref).expanduser()
    if path.exists() or ref.lower().endswith(".gguf") or ref.startswith((".", "/", "~")):
        return _from_file(path)
    entry = catalog.find(ref.split(":")[0])
    if entry is not None:
        return ResolvedModel(ref=ref, shape=entry.shape(), kind="catalog")
    repo, quant = parse_hub_ref(ref)
    if repo:
        return _from_hub(repo, quant=quant, file=file, revision=revision)
    catalog.get(ref)  # raises with "did you mean"
    raise ModelNotFoundError(f"Cannot read model reference {ref!r}.")


def _is_hub_page(url: str) -> bool:
    return bool(re.match(r"https?://(hf\.co|huggingface\.co)/[^/]+/[^/]+/?$", url))


def parse_hub_ref(ref: str) -> tuple[str | None, str | None]:
    s = re.sub(r"^(https?://)?(www\.)?(hf\.co|huggingface\.co)/", "", ref).rstrip("/")
    quant = None
    if ":" in s:
        s, quant = s.rsplit(":", 1)
    return (s, quant or None) if _REPO.match(s) else (None, None)


def _from_file(path: Path) -> ResolvedModel:
    header = read_header(FileSource(path))
    header = _with_splits_local(path, header)
    return ResolvedModel(
        ref=str(path),
        shape=shape_from_gguf(header, name=_name(path.name, header)),
        kind="gguf-file",
        file_name=path.name,
        file_size=path.stat().st_size,
    )


def _name(file_name: str, header: GGUFHeader) -> str:
    return str(header.metadata.get("general.name") or _SPLIT.sub("", file_name).removesuffix(".gguf"))


def _with_splits_local(path: Path, header: GGUFHeader) -> GGUFHeader:
    count = int(header.metadata.get("split.count", 1) or 1)
    if count <= 1 or not _SPLIT.search(path.name):
        return header
    tensors = list(header.tensors)
    for part in split_names(path.name)[1:]:
        tensors.extend(read_header(FileSource(path.with_name(part))).tensors)
    return GGUFHeader(
        header.version,
        header.metadata,
        tuple(tensors),
        header.data_offset,
        header.header_bytes,
        None,
        header.source,
    )


def _from_url(url: str) -> ResolvedModel:
    with HttpSource(url) as src:
        header = read_header(src)
        size = src.total_size()
    name = url.rsplit("/", 1)[-1].split("?")[0]
    return ResolvedModel(
        ref=url,
        shape=shape_from_gguf(header, name=_name(name, header)),
        kind="gguf-url",
        file_name=name,
        file_size=size,
    )


def _transport_errors() -> tuple[type[BaseException], ...]:
    """What a failed connection raises: huggingface_hub 1.x goes through httpx or requests,
    2.x through its own fork, httpx2."""
    errors: list[type[BaseException]] = [hf_errors.HfHubHTTPError, httpx.HTTPError, OSError]
    for module, name in (("httpx2", "HTTPError"), ("requests.exceptions", "RequestException")):
        with contextlib.suppress(ImportError, AttributeError):
            errors.append(getattr(importlib.import_module(module), name))
    return tuple(errors)


def hub_call(what: str, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    try:
        return fn(*args, **kwargs)
    except hf_errors.GatedRepoError as exc:
        raise RemoteError(
            f"{what} is gated.", hint="Accept its licence on the model page and set HF_TOKEN."
        ) from exc
    except (
        hf_errors.RepositoryNotFoundError,
        hf_errors.RevisionNotFoundError,
        hf_errors.EntryNotFoundError,
    ) as exc:
        raise ModelNotFoundError(
            f"{what} was not found on the hub.", hint="Check the spelling; private repos need HF_TOKEN."
        ) from exc
    except _transport_errors() as exc:
        raise RemoteError(
            f"Cannot reach the Hugging Face hub at {hub_endpoint()} for {what} ({exc}).",
            hint="Check the network, or set HF_ENDPOINT to a mirror. Offline: bring the file in with "
            "`kennel import FILE.gguf` (or a bundle made by `kennel export`), and size local files with "
            "`kennel fit ./FILE.gguf`.",
        ) from exc


def _from_hub(repo: str, *, quant: str | None, file: str | None, revision: str | None) -> ResolvedModel:
    api = HfApi(endpoint=hub_endpoint(), token=hub_token())
    info = hub_call(repo, api.model_info, repo, revision=revision, files_metadata=True)
    files = {s.rfilename: int(s.size or 0) for s in (info.siblings or [])}
    ggufs = {n: sz for n, sz in files.items() if n.lower().endswith(".gguf") and "mmproj" not in n.lower()}
    if file or quant or ggufs:
        chosen = choose_gguf(repo, ggufs, quant=quant, file=file)
        return _hub_gguf(repo, chosen, ggufs, revision)
    if "config.json" in files:
        cfg = _fetch_json(repo, "config.json", revision)
        return ResolvedModel(ref=repo, shape=shape_from_config(cfg, name=repo), kind="hf-config")
    raise ModelSourceError(
        f"{repo} has neither GGUF files nor a config.json.",
        hint="kennel sizes GGUF files and transformers models; check the repo id.",
    )


def choose_gguf(repo: str, ggufs: dict[str, int], *, quant: str | None, file: str | None) -> str:
    if not ggufs:
        raise ModelNotFoundError(
            f"{repo} has no GGUF files.", hint="Drop the :QUANT to size it from its config.json."
        )
    first_parts = sorted(n for n in ggufs if not _SPLIT.search(n) or _SPLIT.search(n).group(1) == "00001")  # type: ignore[union-attr]
    if file:
        if file not in ggufs:
            raise ModelNotFoundError(
                f"{repo} has no file {file!r}.", hint="Files: " + ", ".join(first_parts[:12])
            )
        return file
    wanted = [quant] if quant else list(DEFAULT_QUANT_PREFERENCE)
    for q in wanted:
        pat = re.compile(rf"(^|[^A-Za-z0-9]){re.escape(q)}([^A-Za-z0-9]|$)", re.IGNORECASE)
        hits = [n for n in first_parts if pat.search(n.rsplit("/", 1)[-1])]
        if hits:
            return min(hits, key=len)
    if quant:
        raise ModelNotFoundError(
            f"{repo} has no {quant} GGUF file.", hint="Files: " + ", ".join(first_parts[:12])
        )
    return first_parts[0]


def split_names(first: str) -> list[str]:
    """All shard names of a split GGUF given its first (or any) shard; [first] when not split."""
    m = _SPLIT.search(first)
    if not m:
        return [first]
    count = int(m.group(2))
    return [_SPLIT.sub(f"-{i:05d}-of-{count:05d}.gguf", first) for i in range(1, count + 1)]


def _hub_gguf(repo: str, chosen: str, ggufs: dict[str, int], revision: str | None) -> ResolvedModel:
    headers = build_hf_headers(token=hub_token())
    names = split_names(chosen)
    tensors: list[TensorInfo] = []
    first: GGUFHeader | None = None
    with httpx.Client(follow_redirects=True, timeout=30.0) as client:
        for n in names:
            url = hf_hub_url(repo, n, revision=revision, endpoint=hub_endpoint())
            header = read_header(HttpSource(url, headers=headers, client=client))
            first = first or header
            tensors.extend(header.tensors)
    assert first is not None
    merged = GGUFHeader(
        first.version,
        first.metadata,
        tuple(tensors),
        first.data_offset,
        first.header_bytes,
        None,
        first.source,
    )
    size = sum(ggufs.get(n, 0) for n in names) or None
    return ResolvedModel(
        ref=f"hf.co/{repo}",
        shape=shape_from_gguf(merged, name=_name(chosen, first)),
        kind="gguf-hub",
        file_name=chosen,
        file_size=size,
        repo_files=tuple(sorted(ggufs.items())),
    )


def _fetch_json(repo: str, name: str, revision: str | None) -> dict:  # type: ignore[type-arg]
    url = hf_hub_url(repo, name, revision=revision, endpoint=hub_endpoint())
    try:
        with httpx.Client(follow_redirects=True, timeout=30.0) as client:
            r = client.get(url, headers=build_hf_headers(token=hub_token()))
    except httpx.HTTPError as exc:
        raise RemoteError(
            f"Could not fetch {name} of {repo}: {exc}.", hint="Check the network or HF_ENDPOINT."
        ) from exc
    if r.status_code == 404:
        raise ModelNotFoundError(f"{repo} has no {name}.")
    if r.status_code >= 400:
        raise RemoteError(
            f"Fetching {name} of {repo} answered HTTP {r.status_code}.",
            hint="Gated models need HF_TOKEN and an accepted licence.",
        )
    try:
        doc = json.loads(r.text)
    except ValueError as exc:
        raise ModelSourceError(f"The {name} of {repo} is not valid JSON.") from exc
    if not isinstance(doc, dict):
        raise ModelSourceError(f"The {name} of {repo} is not a JSON object.")
    return doc
