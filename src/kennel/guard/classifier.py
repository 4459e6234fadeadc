"""An optional learned classifier, run from a local directory with onnxruntime.

Heuristics miss paraphrases; a classifier such as protectai/deberta-v3-base-prompt-injection-v2
(Apache-2.0, English) exported to ONNX catches more, at ~100 ms a request on CPU. onnxruntime and
tokenizers are not kennel dependencies: this module imports without them and says what to install
when a classifier is asked for. Nothing is fetched at run time: the model directory is local.
"""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path
from typing import Any

from kennel.errors import ClassifierUnavailableError, ModelNotFoundError, ModelSourceError

# Label names that mean "attack" in the classifiers people export (ProtectAI: SAFE/INJECTION,
# Prompt Guard: BENIGN/INJECTION/JAILBREAK or BENIGN/MALICIOUS).
_POSITIVE = ("INJECTION", "JAILBREAK", "MALICIOUS", "UNSAFE")
_MAX_WINDOWS = 8  # a long input is scored in overlapping windows, at most this many


class OnnxClassifier:
    """A sequence classifier in ``path`` (``model.onnx``, ``tokenizer.json``, optional
    ``config.json`` with ``id2label``); ``score(text)`` is the probability of an injection."""

    name = "onnx"

    def __init__(self, path: str | Path, *, max_length: int = 512, threads: int = 1) -> None:
        root = Path(path).expanduser()
        onnx = classifier_files(root)
        ort, tokenizers = _require("onnxruntime", "tokenizers")
        try:
            tokenizer = tokenizers.Tokenizer.from_file(str(root / "tokenizer.json"))
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            session = ort.InferenceSession(
                str(onnx), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime and tokenizers raise their own untyped errors
            raise ModelSourceError(f"cannot load the classifier in {root}: {exc}") from exc
        tokenizer.no_padding()
        max_length = min(max_length, _max_positions(root / "config.json") or max_length)
        tokenizer.enable_truncation(max_length=max_length, stride=min(64, max_length // 4))
        self._tokenizer: Any = tokenizer
        self._session: Any = session
        self._inputs = {i.name for i in session.get_inputs()}
        self._positive = _positive_labels(root / "config.json")

    def score(self, text: str) -> float:
        import numpy as np  # only here, so importing the guard stays cheap

        encoding = self._tokenizer.encode(text)
        windows = [encoding, *encoding.overflowing][:_MAX_WINDOWS]
        best = 0.0
        for w in windows:
            feed = {
                "input_ids": np.array([w.ids], dtype=np.int64),
                "attention_mask": np.array([w.attention_mask], dtype=np.int64),
                "token_type_ids": np.array([w.type_ids], dtype=np.int64),
            }
            logits = self._session.run(None, {k: v for k, v in feed.items() if k in self._inputs})[0][0]
            best = max(best, _positive_probability([float(x) for x in logits], self._positive))
        return best


def classifier_files(root: Path) -> Path:
    """The ONNX export in a classifier folder (at its top, or in onnx/ as Hugging Face repos keep
    one), checked with its tokenizer; ``ModelNotFoundError`` when either is missing."""
    if not root.is_dir():
        raise ModelNotFoundError(
            f"no classifier model directory at {root}",
            hint="Point the guard at a local folder holding model.onnx and tokenizer.json "
            "(an ONNX export of a prompt-injection classifier).",
        )
    onnx = next((p for p in (root / "model.onnx", root / "onnx" / "model.onnx") if p.is_file()), None)
    missing = [
        name
        for name, p in (("model.onnx", onnx), ("tokenizer.json", root / "tokenizer.json"))
        if p is None or not p.is_file()
    ]
    if onnx is None or missing:
        raise ModelNotFoundError(
            f"the classifier directory {root} has no {' or '.join(missing)}",
            hint="Export the classifier to ONNX (for example with optimum) into that folder.",
        )
    return onnx


def require_runtime() -> None:
    """onnxruntime and tokenizers, imported; ``ClassifierUnavailableError`` naming the missing."""
    _require("onnxruntime", "tokenizers")


def _require(*modules: str) -> list[Any]:
    """Import the optional packages, naming every one that is missing in a single error."""
    found: list[Any] = []
    missing: list[str] = []
    cause: ImportError | None = None
    for name in modules:
        try:
            found.append(importlib.import_module(name))
        except ImportError as exc:
            missing.append(name)
            cause = exc
    if missing:
        raise ClassifierUnavailableError(
            f"the ONNX prompt-injection classifier needs {' and '.join(missing)}, not installed here",
            hint="Install the guard extra next to kennel: `pip install 'kennel[guard]'` (that is, pip "
            "install onnxruntime tokenizers), or run the guard with heuristics only (no classifier).",
        ) from cause
    return found


def _max_positions(config: Path) -> int | None:
    """The longest input the model takes (its position table), from config.json."""
    try:
        n = json.loads(config.read_text(encoding="utf-8")).get("max_position_embeddings")
    except (OSError, ValueError, AttributeError):
        return None
    return int(n) if isinstance(n, int) and n > 8 else None


def _positive_labels(config: Path) -> tuple[int, ...]:
    """Indices of the attack labels from config.json; label 1 of a two-label model otherwise."""
    try:
        id2label = json.loads(config.read_text(encoding="utf-8")).get("id2label", {})
    except (OSError, ValueError):
        id2label = {}
    found = tuple(int(i) for i, name in id2label.items() if any(p in str(name).upper() for p in _POSITIVE))
    return found or (1,)


def _positive_probability(logits: list[float], positive: tuple[int, ...]) -> float:
    top = max(logits)
    exps = [math.exp(x - top) for x in logits]
    return sum(exps[i] for i in positive if i < len(exps)) / sum(exps)
