"""The prompt-injection guard: run the detectors over a request and decide what to do.

    guard = Guard("block", stage=ClassifierStage(OnnxClassifier(folder)), budget_ms=50)
    verdict = await guard.check([("system", sys_prompt), ("user", text)])
    verdict.raise_if_blocked()          # PromptInjectionError (HTTP 400) in mode "block"

``scan_messages`` is the heuristics alone (synchronous, ~1 µs a character); ``check`` runs them and,
when they do not flag the request, the second stage (``stages.py``) under the latency budget. The
verdict names the stage that decided and the message that carried the strongest evidence, so an
injection inside a tool result or a pasted document is reported as that message, not the request.

Modes: "off" scans nothing; "log" scans and records (``suspicious``) but never flags; "flag" sets
``flagged`` for the server to log, count or tag the response; "block" also sets ``blocked``.
Scores combine as a noisy-OR over distinct kinds of evidence, so two weak, independent signals (a
zero-width character inside a word and a half-matched phrase) add up where one alone does not.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Final, Literal, get_args

from kennel.errors import InvalidOptionError, PromptInjectionError
from kennel.guard.detectors import EncodedDetector, Finding, PhraseDetector, detect_invisible
from kennel.guard.normalize import normalize
from kennel.guard.stages import (
    Classifier,
    ClassifierStage,
    FailMode,
    Scanned,
    Stage,
    StageOutcome,
    run_stage,
)

__all__ = ["MODES", "Classifier", "Guard", "Mode", "Verdict", "combine"]

Mode = Literal["off", "log", "flag", "block"]
MODES: Final[tuple[Mode, ...]] = get_args(Mode)

# Roles whose content the operator or the model wrote. Everything else (user, tool, function,
# unknown roles) carries text from outside and is scanned.
TRUSTED_ROLES: Final[frozenset[str]] = frozenset({"system", "developer", "assistant"})


@dataclass(frozen=True)
class Verdict:
    mode: Mode
    flagged: bool  # "flag" or "block" mode and score >= threshold
    blocked: bool  # "block" mode and flagged
    findings: tuple[Finding, ...]
    seconds: float  # time spent scanning
    score: float = 0.0  # combined evidence, 0..1
    suspicious: bool = False  # score >= threshold whatever the mode (what "log" would have flagged)
    stage: str = "heuristics"  # the stage that decided: heuristics, classifier, llm or similarity
    message: int | None = None  # index of the message with the strongest evidence
    role: str | None = None  # that message's role (user, tool, ...)
    outcome: StageOutcome | None = None  # the second stage's, when it ran

    @property
    def decision(self) -> str:
        """What the metric counts: the stage's failure when it had one, else the verdict."""
        if self.outcome is not None and self.outcome.decision in ("timeout", "error"):
            return self.outcome.decision
        return (
            "blocked"
            if self.blocked
            else "flagged"
            if self.flagged
            else "suspicious"
            if self.suspicious
            else "clean"
        )

    @property
    def where(self) -> str:
        """The message that decided, for a log line or a header: ``message 3 (tool)``."""
        return f"message {self.message} ({self.role})" if self.message is not None else "no message"

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
        if self.blocked and self.outcome is not None and self.outcome.decision in ("timeout", "error"):
            # fail closed: nothing was found, the stage just did not answer; say so
            failed = "did not answer in time" if self.outcome.decision == "timeout" else "failed"
            raise PromptInjectionError(
                f"The request was refused: the prompt-injection guard's second stage "
                f"({self.outcome.stage}) {failed}, and the server is set to fail closed (to refuse "
                "what it could not check). Nothing in the request was found to be an injection.",
                hint="Retry later, or ask the server's operator. Operator: raise guard_budget_ms "
                f"(--guard-budget-ms), check the {self.outcome.stage} stage in the server's log, or set "
                "guard_fail to open.",
                labels=(self.outcome.decision,),
            )
        if self.blocked:
            raise PromptInjectionError(
                f"The request was refused: {self.where} looks like a prompt injection "
                f"({', '.join(self.labels)}; found by the {self.stage} stage).",
                hint="If this is legitimate text, rephrase it; the server operator can set the guard "
                "to 'flag' or 'log' instead of 'block'.",
                labels=self.labels,
            )


class Guard:
    """``stage``: the second stage (``classifier`` is shorthand for a ``ClassifierStage``);
    ``budget_ms``: what it may take; ``fail``: ``open`` lets a request through when the stage
    times out or fails, ``closed`` treats it as an injection."""

    def __init__(
        self,
        mode: Mode = "flag",
        *,
        threshold: float = 0.5,
        classifier: Classifier | None = None,
        stage: Stage | None = None,
        budget_ms: float = 50.0,
        fail: FailMode = "open",
    ) -> None:
        if mode not in MODES:
            raise InvalidOptionError(f"unknown guard mode {mode!r}", hint=f"Use one of: {', '.join(MODES)}.")
        if not 0.0 < threshold <= 1.0:
            raise InvalidOptionError(f"guard threshold {threshold} is outside (0, 1]")
        if budget_ms <= 0:
            raise InvalidOptionError(f"guard budget {budget_ms} ms must be positive")
        if fail not in ("open", "closed"):
            raise InvalidOptionError(f"guard_fail {fail!r} is not open or closed")
        if classifier is not None and stage is not None:
            raise InvalidOptionError("give the guard a classifier or a stage, not both")
        self.mode: Mode = mode
        self.threshold = threshold
        self.stage: Stage | None = ClassifierStage(classifier) if classifier is not None else stage
        self.budget_s = budget_ms / 1000.0
        self.fail: FailMode = fail
        # Built once: compiling the phrase tables is the only costly step.
        self._phrases = PhraseDetector() if mode != "off" else None
        self._encoded = EncodedDetector(self._phrases) if self._phrases is not None else None
        self._off = Verdict(mode, False, False, (), 0.0)

    def scan(self, text: str) -> Verdict:
        if self._phrases is None:
            return self._off
        return self.scan_messages([("user", text)])

    def scan_messages(self, messages: Iterable[tuple[str, str | None]]) -> Verdict:
        """The heuristics over the untrusted messages of a chat (not system/developer/assistant)."""
        if self._phrases is None or self._encoded is None:
            return self._off
        started = time.perf_counter()
        findings: list[Finding] = []
        roles: dict[int, str] = {}
        for i, (role, content) in enumerate(messages):
            if content and role.lower() not in TRUSTED_ROLES:
                roles[i] = role.lower()
                findings += [replace(f, message=i) for f in self._heuristics(content)]
        v = self._verdict(tuple(findings), combine(findings), time.perf_counter() - started)
        strongest = max(findings, key=lambda f: f.score, default=None)
        if strongest is not None and strongest.message is not None:
            v = replace(v, message=strongest.message, role=roles.get(strongest.message))
        return v

    async def check(self, messages: Sequence[tuple[str, str | None]]) -> Verdict:
        """The heuristics, then (when they do not flag) the second stage within the budget."""
        if self._phrases is None:
            return self._off
        size = sum(len(c or "") for _, c in messages)
        # ~1 µs a character: long inputs are scanned off the event loop so other requests flow
        v = (
            self.scan_messages(messages)
            if size < 20_000
            else await asyncio.to_thread(self.scan_messages, messages)
        )
        texts = [
            Scanned(i, role.lower(), content)
            for i, (role, content) in enumerate(messages)
            if content and role.lower() not in TRUSTED_ROLES
        ]
        if self.stage is None or v.suspicious or not texts:
            return v
        out = await run_stage(self.stage, texts, budget_s=self.budget_s)
        findings = list(v.findings)
        if out.decision in ("timeout", "error"):
            if self.fail == "closed":
                findings.append(Finding(out.stage, out.decision, 1.0, out.detail, None))
        elif out.score > 0.0:
            findings.append(Finding(out.stage, "injection", round(out.score, 3), out.detail, out.message))
        score = combine(findings)
        failed_closed = self.fail == "closed" and out.decision in ("timeout", "error")
        verdict = self._verdict(
            tuple(findings),
            score,
            v.seconds + out.seconds,
            decided=out.decision == "flagged" or failed_closed,
        )
        message = out.message if out.message is not None else v.message
        roles = {t.index: t.role for t in texts}
        return replace(
            verdict,
            stage=out.stage,
            outcome=out,
            message=message,
            role=roles.get(message) if message is not None else None,
        )

    def _heuristics(self, text: str) -> list[Finding]:
        assert self._phrases is not None and self._encoded is not None
        norm = normalize(text)
        return [
            *self._phrases.detect(norm),
            *detect_invisible(norm, self._phrases),
            *self._encoded.detect(text),
        ]

    def _verdict(
        self, findings: tuple[Finding, ...], score: float, seconds: float, *, decided: bool | None = None
    ) -> Verdict:
        # the second stage, when it ran, decides by its own threshold; else the combined score
        suspicious = decided if decided is not None else score >= self.threshold
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
