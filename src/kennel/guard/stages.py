"""The guard's second stage: a learned check that runs when the phrase heuristics do not decide.

    stage = ClassifierStage(OnnxClassifier(folder))          # or GuardModelStage, SimilarityStage
    outcome = await run_stage(stage, texts, budget_s=0.05, fail="open")

A stage is anything with a ``name``, a ``threshold`` and ``async score(texts) -> StageScore``;
``texts`` are the untrusted messages as ``(index, role, text)``. ``run_stage`` holds it to the
latency budget: past the budget, or on any error, the stage's outcome is ``timeout`` or ``error``
and the guard fails open (the request goes on) or closed (it is treated as an injection), as the
operator chose. Nothing here blocks the event loop: a CPU-bound classifier runs in threads of its
own, bounded; the guard model and the embedding model are asked through the server's own pool.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final, Literal, Protocol, get_args

from kennel.errors import InvalidOptionError

StageName = Literal["classifier", "llm", "similarity"]
STAGES: Final[tuple[StageName, ...]] = get_args(StageName)
FailMode = Literal["open", "closed"]
StageDecision = Literal["clean", "flagged", "timeout", "error"]


@dataclass(frozen=True)
class Scanned:
    """One untrusted message as a stage sees it."""

    index: int  # its place in the request's messages
    role: str
    text: str


@dataclass(frozen=True)
class StageScore:
    score: float  # 0..1: the stage's belief that the text is an injection
    message: int | None  # the index of the message that scored highest
    detail: str = ""  # for the log: a probability, the guard model's categories, the nearest attack


@dataclass(frozen=True)
class StageOutcome:
    stage: str
    decision: StageDecision
    score: float
    message: int | None
    seconds: float
    detail: str = ""


class Stage(Protocol):
    name: str
    threshold: float  # score at or above which the stage calls the text an injection

    async def score(self, texts: Sequence[Scanned]) -> StageScore: ...


class Classifier(Protocol):
    """Anything with a ``score(text) -> probability of injection``; ``OnnxClassifier`` is one."""

    def score(self, text: str) -> float: ...


class StageBusyError(RuntimeError):
    """The stage still works on earlier requests that gave up on it; counted as a timeout."""


class ClassifierStage:
    """A sequence classifier (CPU-bound, synchronous) run in worker threads of its own, every
    untrusted message in turn; the highest probability is the stage's score.

    A thread cannot be stopped: a call past the budget runs on, its answer unused. So the stage has
    ``workers`` threads (not the event loop's shared executor, which tokenizing and long guard scans
    also use), a call that gave up before its turn is skipped, one that gave up mid-way stops at
    the next message, and past ``max_pending`` calls queued or running a new one is refused at once
    (``StageBusyError``, a timeout) rather than piling up behind them.
    """

    name = "classifier"

    def __init__(
        self, classifier: Classifier, *, threshold: float = 0.5, workers: int = 2, max_pending: int = 8
    ) -> None:
        check_threshold("classifier", threshold)
        if workers < 1 or max_pending < workers:
            raise InvalidOptionError(f"the classifier stage needs 1 <= workers ({workers}) <= max_pending")
        self.classifier = classifier
        self.threshold = threshold
        self.max_pending = max_pending
        self._threads = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kennel-guard")
        self._lock = threading.Lock()
        self.pending = 0  # calls queued or running in the threads, abandoned ones included

    def score_sync(self, texts: Sequence[Scanned], gave_up: threading.Event | None = None) -> StageScore:
        best, where = 0.0, None
        for t in texts:
            if gave_up is not None and gave_up.is_set():
                break  # the caller is gone: its budget passed
            p = float(self.classifier.score(t.text))
            if where is None or p > best:
                best, where = p, t.index
        return StageScore(round(best, 4), where, f"p={best:.3f}")

    async def score(self, texts: Sequence[Scanned]) -> StageScore:
        with self._lock:
            if self.pending >= self.max_pending:
                raise StageBusyError(f"{self.pending} classifier calls still running")
            self.pending += 1
        gave_up = threading.Event()
        try:
            job = self._threads.submit(self.score_sync, texts, gave_up)
        except BaseException:
            self._done(None)
            raise
        job.add_done_callback(self._done)  # in the worker (or here, when cancelled before it ran)
        try:
            return await asyncio.wrap_future(job)
        finally:
            gave_up.set()  # a no-op when it finished; else the worker skips or stops early

    def _done(self, _: object) -> None:
        with self._lock:
            self.pending -= 1

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)


async def run_stage(stage: Stage, texts: Sequence[Scanned], *, budget_s: float) -> StageOutcome:
    """The stage's verdict within ``budget_s`` seconds; ``timeout`` past it, ``error`` when it
    raised. A timed-out guard model's generation is cancelled (and so aborted in its engine); a
    classifier thread cannot be stopped: it finishes on its own, its answer unused, and the
    classifier stage bounds how many such threads there are (``StageBusyError``)."""
    started = time.perf_counter()
    try:
        s = await asyncio.wait_for(stage.score(texts), timeout=budget_s)
    except TimeoutError:
        return StageOutcome(stage.name, "timeout", 0.0, None, time.perf_counter() - started, "over budget")
    except StageBusyError as exc:
        return StageOutcome(stage.name, "timeout", 0.0, None, time.perf_counter() - started, str(exc))
    except Exception as exc:  # a stage is a plug-in: whatever it raises is its failure, counted
        detail = f"{type(exc).__name__}: {exc}"[:200]
        return StageOutcome(stage.name, "error", 0.0, None, time.perf_counter() - started, detail)
    decision: StageDecision = "flagged" if s.score >= stage.threshold else "clean"
    return StageOutcome(stage.name, decision, s.score, s.message, time.perf_counter() - started, s.detail)


def check_threshold(name: str, threshold: float) -> None:
    if not 0.0 < threshold <= 1.0:
        raise InvalidOptionError(f"the {name} stage's threshold {threshold} is outside (0, 1]")
