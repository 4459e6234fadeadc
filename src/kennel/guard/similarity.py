"""Similarity to known attacks as the second stage, Rebuff-style: embed the input with a served
embedding model and compare it with a multilingual set of attacks.

The shipped set is ``data/attacks.jsonl`` (short attacks in English, Vietnamese and Chinese,
written for kennel, none taken from the evaluation sets); ``kennel guard add-example`` appends the
user's own to ``KENNEL_HOME/guard/examples.jsonl``. The attacks' embeddings are computed once per
stage by the served model and kept. A long message is compared sentence by sentence, so one attack
sentence inside a pasted document is not diluted by the document around it.

``calibrate`` picks the cosine threshold from labelled scores (the development set, with the
embedding model the site serves): the lowest threshold whose false-positive rate stays within the
target. The default threshold is a starting point, not a calibrated value; see the README.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from kennel.errors import InvalidOptionError
from kennel.guard.stages import Scanned, StageScore, check_threshold
from kennel.settings import KennelHome

# texts in, one vector per text out: the server asks its pool's embedding model
Embed = Callable[[Sequence[str]], Awaitable[Sequence[Sequence[float]]]]

DEFAULT_THRESHOLD = 0.85
MAX_EXAMPLE_CHARS = 2000
_WINDOW, _MAX_WINDOWS = 400, 32
# a sentence ends at . ! ? (then a space), at 。！？ or at a line break
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])|\n+")
LANGS = ("en", "vi", "zh", "other")


@dataclass(frozen=True)
class AttackExample:
    text: str
    lang: str
    source: str = "kennel"  # kennel (shipped) or user


def shipped_examples() -> list[AttackExample]:
    text = resources.files("kennel.guard").joinpath("data", "attacks.jsonl").read_text(encoding="utf-8")
    return [AttackExample(**json.loads(line)) for line in text.splitlines() if line.strip()]


def user_examples_path(home: KennelHome) -> Path:
    return home.root / "guard" / "examples.jsonl"


def user_examples(home: KennelHome) -> list[AttackExample]:
    path = user_examples_path(home)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            out.append(AttackExample(str(d["text"]), str(d.get("lang", "other")), "user"))
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidOptionError(f"{path}:{n} is not a guard example ({exc})") from exc
    return out


def add_example(home: KennelHome, text: str, lang: str = "other") -> Path:
    """Append one attack to the user's set; the file is rewritten aside and renamed, so a crash
    leaves the old one whole."""
    text = text.strip()
    if not text:
        raise InvalidOptionError("an attack example needs some text")
    if lang not in LANGS:
        raise InvalidOptionError(f"unknown language {lang!r}", hint=f"Use one of: {', '.join(LANGS)}.")
    if len(text) > MAX_EXAMPLE_CHARS:
        raise InvalidOptionError(
            f"an attack example is at most {MAX_EXAMPLE_CHARS} characters, not {len(text)}",
            hint="Add the attack sentence itself; the stage compares sentence by sentence.",
        )
    from filelock import FileLock  # only here: the CLI's start-up stays light

    path = user_examples_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    # two `add-example` at once would each rewrite the file from what it read: one would be lost
    with FileLock(str(path.with_name(f".{path.name}.lock")), timeout=30):
        if any(e.text == text for e in user_examples(home)):  # also checks the file is readable
            return path  # already there: adding it twice would change nothing but the file's size
        try:
            old = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            old = ""
        if old and not old.endswith("\n"):
            old += "\n"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(
            old + json.dumps({"text": text, "lang": lang}, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        tmp.replace(path)
    return path


def windows(text: str) -> list[str]:
    """The text's sentences (over-long ones cut in pieces), each compared on its own, so one
    attack sentence is not diluted by the document around it; past ``_MAX_WINDOWS`` sentences,
    neighbours are grouped so the count stays bounded."""
    pieces: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        sentence = " ".join(sentence.split())
        pieces += [sentence[i : i + _WINDOW] for i in range(0, len(sentence), _WINDOW)]
    if not pieces:
        return [" ".join(text.split())]
    group = math.ceil(len(pieces) / _MAX_WINDOWS)
    return [" ".join(pieces[i : i + group]) for i in range(0, len(pieces), group)]


def unit_rows(vectors: Sequence[Sequence[float]]) -> np.ndarray:
    """The vectors as rows of length 1 (a zero vector stays zero: its cosine with anything is 0)."""
    try:
        m = np.asarray(vectors, dtype=np.float64)
    except ValueError:  # numpy refuses rows of different lengths
        m = np.empty(0)
    if m.ndim != 2:
        raise InvalidOptionError("the embedding model answered vectors of different lengths")
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    out = np.zeros_like(m)
    np.divide(m, norms, out=out, where=norms > 0)
    return out


class SimilarityStage:
    """The highest cosine similarity between any window of an untrusted message and any known
    attack is the stage's score."""

    name = "similarity"

    def __init__(
        self, embed: Embed, examples: Iterable[AttackExample], *, threshold: float = DEFAULT_THRESHOLD
    ) -> None:
        check_threshold("similarity", threshold)
        self.embed = embed
        self.examples = tuple(examples)
        if not self.examples:
            raise InvalidOptionError("the similarity stage has no attack examples to compare with")
        self.threshold = threshold
        self._attacks: np.ndarray | None = None  # one unit row per example
        self._pending: asyncio.Future[np.ndarray] | None = None

    async def attack_vectors(self) -> np.ndarray:
        """The attacks' embeddings as unit rows, computed once. The computation is shielded: a
        request that times out waiting for it does not cancel it, so a later one finds it done."""
        if self._attacks is not None:
            return self._attacks
        if self._pending is None or (self._pending.done() and self._pending.exception() is not None):
            self._pending = asyncio.ensure_future(self._embed_attacks())
        return await asyncio.shield(self._pending)

    async def _embed_attacks(self) -> np.ndarray:
        self._attacks = unit_rows(_counted(await self.embed([e.text for e in self.examples]), self.examples))
        return self._attacks

    async def score(self, texts: Sequence[Scanned]) -> StageScore:
        """One matrix product of the windows' unit rows with the attacks': a long message against
        hundreds of examples takes milliseconds, not the event loop's tenth of a second that
        pairwise Python loops took."""
        attacks = await self.attack_vectors()
        pieces = [(t.index, w) for t in texts for w in windows(t.text)]
        vectors = unit_rows(_counted(await self.embed([w for _, w in pieces]), pieces))
        if vectors.shape[1] != attacks.shape[1]:
            raise InvalidOptionError(
                f"the embedding model answered vectors of {vectors.shape[1]} numbers; the known "
                f"attacks' have {attacks.shape[1]}",
                hint="Restart kennel serve after changing the guard's embedding model.",
            )
        cos = vectors @ attacks.T
        row, nearest = np.unravel_index(int(np.argmax(cos)), cos.shape)
        best, near = float(cos[row, nearest]), self.examples[int(nearest)]
        where = pieces[int(row)][0]
        return StageScore(round(max(best, 0.0), 4), where, f"cos={best:.3f} ~ {near.lang}:{near.text[:40]!r}")


def _counted(vectors: Sequence[Sequence[float]], asked: Sequence[object]) -> Sequence[Sequence[float]]:
    if len(vectors) != len(asked):
        raise InvalidOptionError(
            f"the embedding model answered {len(vectors)} vectors for {len(asked)} texts",
            hint="Check that the guard's embedding model is an embedding model (`kennel ps`).",
        )
    return vectors


def calibrate(scored: Iterable[tuple[float, bool]], *, max_fpr: float = 0.03) -> float:
    """The lowest threshold (a score seen on the data, nudged above a benign one it must pass)
    whose false-positive rate is at most ``max_fpr``; ``scored`` is (score, is_injection)."""
    pairs = list(scored)
    benign = sorted((s for s, inj in pairs if not inj), reverse=True)
    if not benign:
        raise InvalidOptionError("calibrating needs benign examples")
    allowed = math.floor(max_fpr * len(benign))  # benign examples that may score at or above it
    # everything strictly above the (allowed+1)-th highest benign score passes the FPR target
    bar = benign[allowed] if allowed < len(benign) else -1.0
    candidates = sorted({s for s, inj in pairs if inj and s > bar})
    threshold = candidates[0] if candidates else bar + 1e-4
    return round(min(max(threshold, 1e-4), 1.0), 4)
