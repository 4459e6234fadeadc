"""The prompt-injection guard: run the detectors over a request and decide what to do.

    guard = Guard("block")
    verdict = guard.scan_messages([("system", sys_prompt), ("user", text)])
    verdict.raise_if_blocked()          # PromptInjectionError (HTTP 400) in mode "block"

Modes: "off" scans nothing; "log" scans and records (``suspicious``) but never flags; "flag" sets
``flagged`` for the server to log, count or tag the response; "block" also sets ``blocked``.
Scores combine as a noisy-OR over distinct kinds of evidence, so two weak, independent signals (a
zero-width character inside a word and a half-matched phrase) add up where one alone does not.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Final, Literal, Protocol, get_args

from kennel.errors import InvalidOptionError, PromptInjectionError
from kennel.guard.detectors import EncodedDetector, Finding, PhraseDetector, detect_invisible
from kennel.guard.normalize import normalize

Mode = Literal["off", "log", "flag", "block"]
MODES: Final[tuple[Mode, ...]] = get_args(Mode)

# Roles whose content the operator or the model wrote. Everything else (user, tool, function,
# unknown roles) carries text from outside and is scanned.
TRUSTED_ROLES: Final[frozenset[str]] = frozenset({"system", "developer", "assistant"})


class Classifier(Protocol):
    """Anything with a ``score(text) -> probability of injection``; ``OnnxClassifier`` is one."""

    def score(self, text: str) -> float: ...


@dataclass(frozen=True)
class Verdict:
    mode: Mode
    flagged: bool  # "flag" or "block" mode and score >= threshold
    blocked: bool  # "block" mode and flagged
    findings: tuple[Finding, ...]
    seconds: float  # time spent scanning
    score: float = 0.0  # combined evidence, 0..1
    suspicious: bool = False  # score >= threshold whatever the mode (what "log" would have flagged)

    @property
    def labels(self) -> tuple[str, ...]:
        """Distinct labels of the findings, strongest first."""
        seen: dict[str, None] = {}
        for f in sorted(self.findings, key=lambda f: -f.score):
            seen.setdefault(f.label, None)
        return tuple(seen)

    def summary(self) -> str:
        """One line for a log: score and the findings."""
        parts = ", ".join(
            f"{f.detector}:{f.label}={f.score:.2f}" for f in sorted(self.findings, key=lambda f: -f.score)
        )
        return f"score={self.score:.2f} {parts or 'no findings'}"

    def raise_if_blocked(self) -> None:
        if self.blocked:
            raise PromptInjectionError(
                f"The request was refused: it looks like a prompt injection ({', '.join(self.labels)}).",
                hint="If this is legitimate text, rephrase it; the server operator can set the guard "
                "to 'flag' or 'log' instead of 'block'.",
                labels=self.labels,
            )


class Guard:
    def __init__(
        self, mode: Mode = "flag", *, threshold: float = 0.5, classifier: Classifier | None = None
    ) -> None:
        if mode not in MODES:
            raise InvalidOptionError(f"unknown guard mode {mode!r}", hint=f"Use one of: {', '.join(MODES)}.")
        if not 0.0 < threshold <= 1.0:
            raise InvalidOptionError(f"guard threshold {threshold} is outside (0, 1]")
        self.mode: Mode = mode
        self.threshold = threshold
        self.classifier = classifier
        # Built once: compiling the phrase tables is the only costly step.
        self._phrases = PhraseDetector() if mode != "off" else None
        self._encoded = EncodedDetector(self._phrases) if self._phrases is not None else None
        self._off = Verdict(mode, False, False, (), 0.0)

    def scan(self, text: str) -> Verdict:
        if self._phrases is None:
            return self._off
        return self.scan_messages([("user", text)])

    def scan_messages(self, messages: Iterable[tuple[str, str | None]]) -> Verdict:
        """Scan the untrusted messages of a chat (not system/developer/assistant), as a whole."""
        if self._phrases is None or self._encoded is None:
            return self._off
        started = time.perf_counter()
        findings: list[Finding] = []
        untrusted: list[tuple[int, str]] = []
        for i, (role, content) in enumerate(messages):
            if content and role.lower() not in TRUSTED_ROLES:
                untrusted.append((i, content))
                findings += [replace(f, message=i) for f in self._heuristics(content)]
        score = combine(findings)
        if self.classifier is not None and score < self.threshold and untrusted:
            # Only when the heuristics have not decided: the classifier costs ~100 ms a message.
            for i, content in untrusted:
                p = float(self.classifier.score(content))
                if p > 0.0:
                    findings.append(Finding("classifier", "injection", round(p, 3), f"p={p:.3f}", i))
            score = combine(findings)
        return self._verdict(tuple(findings), score, time.perf_counter() - started)

    def _heuristics(self, text: str) -> list[Finding]:
        assert self._phrases is not None and self._encoded is not None
        norm = normalize(text)
        return [
            *self._phrases.detect(norm),
            *detect_invisible(norm, self._phrases),
            *self._encoded.detect(text),
        ]

    def _verdict(self, findings: tuple[Finding, ...], score: float, seconds: float) -> Verdict:
        suspicious = score >= self.threshold
        flagged = suspicious and self.mode in ("flag", "block")
        return Verdict(
            self.mode, flagged, flagged and self.mode == "block", findings, seconds, score, suspicious
        )


def combine(findings: Iterable[Finding]) -> float:
    """Noisy-OR over kinds of evidence; repeats of one kind (the same phrase family in three
    messages) count once, at their strongest."""
    strongest: dict[tuple[str, str], float] = {}
    for f in findings:
        key = (f.detector, f.label)
        strongest[key] = max(strongest.get(key, 0.0), f.score)
    miss = 1.0
    for s in strongest.values():
        miss *= 1.0 - min(max(s, 0.0), 1.0)
    return round(1.0 - miss, 3)
