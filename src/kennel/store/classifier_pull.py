"""`kennel pull` of a prompt-injection classifier for the guard (a catalog classifier, or a
hf.co repo of a ``*ForSequenceClassification`` model with an ONNX export).

The store keeps it as a transformers-format folder, each file a blob: ``config.json`` (its
labels), the tokenizer (``tokenizer.json``) and ``model.onnx`` (or ``onnx/model.onnx``, as
Hugging Face repos keep it). A repo without an ONNX export is pulled as its safetensors and
exported here with torch and transformers (`pip install kennel[finetune]`); only the export is
kept, the PyTorch weights are not. No code from the repo is ever run, and no pickled weights
(``pytorch_model.bin``) are read.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from kennel.errors import ClassifierUnavailableError, ModelSourceError
from kennel.store.names import DEFAULT_TAG
from kennel.store.profile import Profile
from kennel.store.registry import Store, VersionInfo

ONNX_PATHS = ("model.onnx", "onnx/model.onnx")
TEXT_FILES = re.compile(
    r"(config\.json|tokenizer\.json|tokenizer_config\.json|special_tokens_map\.json|spm\.model|"
    r"added_tokens\.json)"
)
WEIGHTS = "model.safetensors"


def classifier_files(repo: str, siblings: dict[str, Any]) -> list[str]:
    """What to download: the text files and one ONNX export (with its external data, if any),
    else the safetensors to export from."""
    names = sorted(n for n in siblings if TEXT_FILES.fullmatch(n))
    if "config.json" not in names or "tokenizer.json" not in names:
        raise ModelSourceError(
            f"hf.co/{repo} is not a classifier kennel can run: it needs config.json and tokenizer.json.",
            hint="Pick a repo with a fast tokenizer (tokenizer.json), or export one into a folder.",
        )
    onnx = next((p for p in ONNX_PATHS if p in siblings), None)
    if onnx is not None:
        # its external weights, as the exporters name them (model.onnx_data, model.onnx.data)
        data = [n for n in siblings if n in (f"{onnx}_data", f"{onnx}.data")]
        return sorted([*names, onnx, *data], key=lambda n: (n != "config.json", n))
    if WEIGHTS not in siblings:
        raise ModelSourceError(
            f"hf.co/{repo} has neither an ONNX export nor model.safetensors to export from.",
            hint="kennel never loads pickled weights (pytorch_model.bin); use a repo with safetensors.",
        )
    _require_exporter(repo)  # before downloading weights that could not be used
    return sorted([*names, WEIGHTS], key=lambda n: (n != "config.json", n))


def _require_exporter(repo: str) -> None:
    missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        raise ClassifierUnavailableError(
            f"hf.co/{repo} has no ONNX export, and exporting one needs {' and '.join(missing)}.",
            hint="pip install 'kennel[finetune]' (torch and transformers) and pull again, or pull a "
            "classifier whose repo ships onnx/model.onnx.",
        )


def looks_like_classifier(config: dict[str, Any]) -> bool:
    return any(str(a).endswith("ForSequenceClassification") for a in config.get("architectures") or [])


def add_classifier(
    store: Store,
    *,
    name: str,
    repo: str,
    files: dict[str, str],  # path in the repo -> blob digest
    catalog_name: str | None,
    actor: str | None,
    message: str,
) -> VersionInfo:
    """Check what was downloaded, export it to ONNX if needed, and record the version."""
    try:
        config = json.loads(store.blobs.path(files["config.json"]).read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError) as exc:
        raise ModelSourceError(f"hf.co/{repo} has no readable config.json ({exc}).") from exc
    if not config.get("id2label"):
        raise ModelSourceError(
            f"hf.co/{repo} names no labels (id2label) in config.json: not a classifier kennel can read."
        )
    keep = dict(files)
    how = "its ONNX export"
    if not any(p in files for p in ONNX_PATHS):
        weights = keep.pop(WEIGHTS)
        keep["model.onnx"] = _export(store, files, weights, repo)
        how = "exported to ONNX at pull time"
    paths = sorted(keep, key=lambda n: (n != "config.json", n))
    profile = Profile(
        base=tuple(keep[p] for p in paths),
        base_file=repo.rsplit("/", 1)[-1],
        format="transformers",
        files=tuple(paths),
    )
    return store.add_version(
        name,
        profile,
        action="pull",
        actor=actor,
        message=message or f"pulled hf.co/{repo} (prompt-injection classifier, {how})",
        tags=(DEFAULT_TAG,),
        catalog_name=catalog_name,
    )


def _export(store: Store, files: dict[str, str], weights: str, repo: str) -> str:
    """The safetensors classifier exported to ONNX, admitted as a blob; its digest."""
    try:
        import torch
        from transformers import AutoConfig, AutoModelForSequenceClassification
    except ImportError as exc:
        raise ClassifierUnavailableError(
            f"hf.co/{repo} has no ONNX export, and exporting one needs torch and transformers.",
            hint="pip install 'kennel[finetune]' (torch and transformers) and pull again, or pull a "
            "classifier whose repo ships onnx/model.onnx.",
        ) from exc
    work = Path(tempfile.mkdtemp(prefix="classifier-", dir=store.root))
    try:
        src = work / "src"
        src.mkdir()
        for path, digest in files.items():
            if "/" not in path:
                shutil.copyfile(store.blobs.path(digest), src / path)
        shutil.copyfile(store.blobs.path(weights), src / WEIGHTS)
        config = AutoConfig.from_pretrained(src, trust_remote_code=False)
        model = AutoModelForSequenceClassification.from_pretrained(
            src, config=config, trust_remote_code=False, use_safetensors=True
        ).eval()
        names = ["input_ids", "attention_mask"]
        if getattr(config, "type_vocab_size", 0):
            names.append("token_type_ids")
        ids = torch.ones((1, 8), dtype=torch.int64)
        args = tuple(
            ids if n == "input_ids" else torch.ones_like(ids) if n == "attention_mask" else ids * 0
            for n in names
        )
        axes = {n: {0: "batch", 1: "sequence"} for n in names}
        out = work / "model.onnx"
        with warnings.catch_warnings():  # the TorchScript exporter warns that it is deprecated
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                args,
                str(out),
                input_names=names,
                output_names=["logits"],
                dynamic_axes={**axes, "logits": {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
        digest = store.blobs.admit(out, expected=None, move=True)
        store.register_blob(digest, kind="file", file_name="model.onnx", source=f"hf.co/{repo} (exported)")
        return digest
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelSourceError(f"cannot export hf.co/{repo} to ONNX: {exc}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
