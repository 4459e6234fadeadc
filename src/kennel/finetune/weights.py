"""The weights a run trains on, from the store: the served GGUF itself (transformers reads a GGUF
and dequantizes it, so a user who only has the GGUF can train), or a transformers folder of the
same model pulled with `kennel pull` (safetensors, the same resume and checksum guarantees).

Either way they are links in the run's folder to the store's read-only blobs, named as
transformers expects; nothing is copied.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kennel.errors import FinetuneError, InvalidOptionError
from kennel.store.profile import Profile
from kennel.store.registry import Store


@dataclass(frozen=True)
class WeightsSource:
    folder: Path  # what transformers' from_pretrained is given
    gguf_file: str | None  # the GGUF's name in ``folder``, when training on the GGUF
    digests: tuple[str, ...]  # the store blobs, for the lineage
    label: str  # for people: "tiny@1 (GGUF, dequantized)"

    @property
    def is_gguf(self) -> bool:
        return self.gguf_file is not None


def link_weights(store: Store, profile: Profile, folder: Path, *, label: str) -> WeightsSource:
    """Links to ``profile``'s base blobs in ``folder``, as transformers loads them."""
    if profile.format == "gguf":
        if len(profile.base) > 1:
            raise FinetuneError(
                f"{label} is a split GGUF, which transformers cannot read.",
                hint="Pull the model's transformers weights (`kennel pull hf.co/OWNER/REPO`) and give "
                "them as --weights.",
            )
        names = ["model.gguf"]  # transformers wants the .gguf suffix; blobs have none
    else:
        names = list(profile.files)
    folder.mkdir(parents=True, exist_ok=True)
    for digest, name in zip(profile.base, names, strict=True):
        link = folder / name
        if not Path(os.path.normpath(link)).is_relative_to(folder):  # Profile checks; this is the lock
            raise InvalidOptionError(f"{name!r} points outside the model folder.")
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.parent / f".{link.name}.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(store.blobs.path(digest))
        os.replace(tmp, link)
    kind = "GGUF, dequantized" if profile.format == "gguf" else "transformers weights"
    return WeightsSource(
        folder=folder,
        gguf_file=names[0] if profile.format == "gguf" else None,
        digests=profile.base,
        label=f"{label} ({kind})",
    )


@contextmanager
def quiet() -> Iterator[None]:
    """transformers' and peft's deprecation notes and tqdm bars, which a kennel user cannot act on,
    kept off the terminal (kennel draws its own progress)."""
    logging: Any = importlib.import_module("transformers.utils.logging")
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        logging.set_verbosity(verbosity)
        logging.enable_progress_bar()


def load_tokenizer(source: WeightsSource) -> Any:
    """The tokenizer of the weights (transformers converts a GGUF's vocabulary); needs transformers,
    not torch, so `kennel finetune check --base` runs without the training stack's heaviest part."""
    from kennel.finetune.stack import require

    (transformers,) = require("transformers")
    extra = {"gguf_file": source.gguf_file} if source.gguf_file else {}
    try:
        with quiet():
            return transformers.AutoTokenizer.from_pretrained(str(source.folder), **extra)
    except (OSError, ValueError, KeyError, NotImplementedError) as exc:
        raise FinetuneError(
            f"transformers cannot read the tokenizer of {source.label}: {str(exc).splitlines()[0][:300]}",
            hint="Pull the model's transformers weights (`kennel pull hf.co/OWNER/REPO`) and give them "
            "as --weights.",
        ) from exc
