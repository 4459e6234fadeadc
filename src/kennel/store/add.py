"""Putting a GGUF into the store: checks shared by `kennel import` and `kennel pull`, and the
local import itself. Nothing that fails the checks becomes a blob."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import ValidationError

from kennel.catalog.resolve import split_names
from kennel.errors import InvalidOptionError, ModelNotFoundError, NotGGUFError, validation_text
from kennel.fit.quant import scheme_for_file
from kennel.model.gguf_header import GGUFHeader, read_header
from kennel.model.gguf_shape import file_type_name
from kennel.model.sources import FileSource
from kennel.store.blobs import Progress
from kennel.store.names import DEFAULT_TAG, check_name, parse_ref
from kennel.store.profile import Profile, ProfileSpec
from kennel.store.registry import Store, VersionInfo

_SPLIT = re.compile(r"-\d{5}-of-\d{5}$", re.IGNORECASE)
_QUANT_SUFFIX = re.compile(r"[-._](i?q\d[\w]*|f16|bf16|f32)$", re.IGNORECASE)


def check_gguf(path: Path) -> GGUFHeader:
    """The parsed header of a complete GGUF file, or NotGGUFError / TruncatedModelError."""
    if not path.is_file():
        raise ModelNotFoundError(f"No file at {path}.", hint="Check the path.")
    return read_header(FileSource(path))


def blob_kind(header: GGUFHeader) -> str:
    return "adapter" if header.metadata.get("general.type") == "adapter" else "gguf"


def quant_tag(header: GGUFHeader) -> str | None:
    """The quantization as a tag (q4_k_m), from the file type the header declares."""
    s = scheme_for_file(file_type_name(header))
    return s.name.lower() if s else None


def default_name(file_name: str) -> str:
    """qwen2.5-7b-instruct from Qwen2.5-7B-Instruct-Q4_K_M-00001-of-00002.gguf."""
    stem = _SPLIT.sub("", file_name.rsplit("/", 1)[-1].removesuffix(".gguf"))
    stem = _QUANT_SUFFIX.sub("", stem).lower()
    stem = re.sub(r"[^a-z0-9._\-]+", "-", stem).strip(".-_") or "model"
    return check_name(stem[:128])


def version_tags(header: GGUFHeader, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    q = quant_tag(header)
    return (DEFAULT_TAG, *([q] if q else []), *extra)


def admit_gguf(
    store: Store, path: Path, *, progress: Progress | None = None
) -> tuple[tuple[str, ...], GGUFHeader]:
    """Check and copy a model GGUF (every shard of a split one) in; its digests and header."""
    path = path.expanduser()
    header = check_gguf(path)
    if blob_kind(header) == "adapter":
        raise NotGGUFError(
            f"{path.name} is a LoRA adapter, not a model.",
            hint="Use it in a profile: `adapter: PATH` in the YAML given to `kennel create NAME -f FILE`.",
        )
    split = int(header.metadata.get("split.count", 1) or 1) > 1
    shards = [path.with_name(n) for n in split_names(path.name)] if split else [path]
    digests = []
    for shard in shards:
        check_gguf(shard)
        digest = store.blobs.admit(shard, expected=None, move=False, progress=progress)
        store.register_blob(digest, kind="gguf", file_name=shard.name, source=str(shard.resolve()))
        digests.append(digest)
    return tuple(digests), header


def import_gguf(
    store: Store,
    path: Path,
    *,
    name: str | None = None,
    actor: str | None = None,
    message: str = "",
    progress: Progress | None = None,
) -> VersionInfo:
    """Copy a local GGUF into the store as a new version of ``name`` (default: from the file name)."""
    model = check_name(name) if name else default_name(path.name)  # before copying anything in
    digests, header = admit_gguf(store, path, progress=progress)
    profile = Profile(base=digests, base_file=path.name)
    return store.add_version(
        model,
        profile,
        action="import",
        actor=actor,
        message=message or f"imported {path.name}",
        tags=version_tags(header),
    )


def admit_adapter(store: Store, path: Path) -> str:
    """A LoRA adapter GGUF as a blob (for a profile's ``adapter``)."""
    header = check_gguf(path.expanduser())
    if blob_kind(header) != "adapter":
        raise NotGGUFError(
            f"{path.name} is not a LoRA adapter GGUF (general.type is not 'adapter').",
            hint="Convert the adapter with llama.cpp's convert_lora_to_gguf.py.",
        )
    digest = store.blobs.admit(path.expanduser(), expected=None, move=False)
    store.register_blob(digest, kind="adapter", file_name=path.name, source=str(path.expanduser().resolve()))
    return digest


def build_profile(
    store: Store, name: str, spec: ProfileSpec, *, base_dir: Path, from_ref: str | None = None
) -> Profile:
    """The profile a spec describes: its ``from`` (or the model's latest) with the spec's fields laid over.

    ``from``: NAME, NAME:TAG, NAME@V (inherit that version), sha256:HEX (a blob), or a .gguf path
    (copied in). Relative paths are read from ``base_dir``, the spec file's folder.
    """
    source = from_ref or spec.from_
    fields: dict[str, object] = {}
    if source is None:
        if name not in store.models():
            raise InvalidOptionError(
                f"{name} is not in the store yet, so its profile needs `from`.",
                hint="Add `from: MODEL[:TAG]`, `from: ./model.gguf` or `from: sha256:HEX`.",
            )
        source = name
    if source.startswith("sha256:"):
        blob = store.find_blob(source.removeprefix("sha256:"))
        fields.update(base=(blob.digest,), base_file=blob.file_name)
    elif source.lower().endswith(".gguf") or "/" in source or (base_dir / source).is_file():
        digests, _ = admit_gguf(store, _local(base_dir, source))
        fields.update(base=digests, base_file=Path(source).name)
    else:
        parent = store.resolve(parse_ref(source)).profile
        fields.update(parent.model_dump())
    if spec.adapter is not None:
        fields["adapter"] = (
            store.find_blob(spec.adapter.removeprefix("sha256:")).digest
            if spec.adapter.startswith("sha256:")
            else admit_adapter(store, _local(base_dir, spec.adapter))
        )
    overrides = spec.overrides()
    parent_params = fields.get("parameters")
    if spec.parameters is not None and isinstance(parent_params, dict):
        # sampling merges key by key: setting top_p keeps an inherited temperature
        inherited = {k: v for k, v in parent_params.items() if v is not None}
        overrides["parameters"] = {**inherited, **spec.parameters.model_dump(exclude_none=True)}
    fields.update(overrides)
    try:
        profile = Profile.model_validate(fields)
    except ValidationError as exc:
        problem = validation_text(exc.errors()[0])
        raise InvalidOptionError(f"The profile for {name} is invalid: {problem}.") from exc
    if profile.adapter and profile.format == "gguf":
        _check_adapter_fits(store, base=profile.base[0], adapter=profile.adapter)
    return profile


def _check_adapter_fits(store: Store, *, base: str, adapter: str) -> None:
    """Refuse, when the version is made rather than when llama.cpp first loads it, an adapter whose
    tensors do not fit the base (another model, or another size of it)."""
    from kennel.finetune.adapter_gguf import BaseLayout, check_adapter

    layout = BaseLayout.from_header(read_header(FileSource(store.blobs.path(base))))
    check_adapter(read_header(FileSource(store.blobs.path(adapter))), layout)


def _local(base_dir: Path, path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else base_dir / p
