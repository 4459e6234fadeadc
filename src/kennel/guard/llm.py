"""A guard model as the second stage: Qwen3Guard or Llama Guard 3, served by kennel's own engine.

The stage sends each untrusted message to the guard model as a one-turn chat; the model's own chat
template (shipped in its GGUF) wraps it in the safety prompt the model was trained on, so nothing
here imitates that prompt. The answer is parsed in either model's format:

    Qwen3Guard-Gen:   "Safety: Unsafe\\nCategories: Jailbreak"   (Safe | Unsafe | Controversial)
    Llama Guard 3:    "unsafe\\nS14"                               (safe | unsafe + category codes)

``Unsafe`` scores 1.0, ``Controversial`` 0.5 (an injection at the default threshold of 0.5, as
Qwen3Guard's "strict" reading has it), ``Safe`` 0.0. An answer in neither format is an error, so
it is counted and the guard's fail mode applies, rather than read as "safe".
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from kennel.errors import ModelSourceError
from kennel.guard.stages import Scanned, StageScore, check_threshold

log = logging.getLogger("kennel.guard")

# what the stage reads, for messages to the operator
ANSWER_FORMATS = (
    'Qwen3Guard\'s "Safety: Safe|Unsafe|Controversial" (+ "Categories: ...") or Llama Guard 3\'s '
    '"safe" / "unsafe" (+ category codes such as S14)'
)

# (role, text) turns in, the model's whole answer out: the server asks through its pool
Ask = Callable[[Sequence[tuple[str, str]]], Awaitable[str]]

_QWEN = re.compile(r"safety\s*:\s*(safe|unsafe|controversial)\b", re.IGNORECASE)
_QWEN_CATEGORIES = re.compile(r"categories\s*:\s*(.+)", re.IGNORECASE)
_LLAMA = re.compile(r"^\s*(safe|unsafe)\b[ \t]*(?:\r?\n\s*([A-Za-z0-9, ]+))?", re.IGNORECASE)
_SCORES = {"safe": 0.0, "controversial": 0.5, "unsafe": 1.0}


@dataclass(frozen=True)
class GuardAnswer:
    safety: str  # safe | unsafe | controversial
    categories: tuple[str, ...]

    @property
    def score(self) -> float:
        return _SCORES[self.safety]


def parse_answer(text: str) -> GuardAnswer:
    """A Qwen3Guard or Llama Guard 3 answer; ``ModelSourceError`` when it is neither."""
    body = re.sub(r"<think>.*?</think>", "", text, flags=re.DOTALL).strip()
    m = _QWEN.search(body)
    if m is not None:
        cats = _QWEN_CATEGORIES.search(body[m.end() :])
        names = tuple(c.strip() for c in cats.group(1).split(",")) if cats else ()
        return GuardAnswer(m.group(1).lower(), tuple(n for n in names if n and n.lower() != "none"))
    m = _LLAMA.match(body)
    if m is not None:
        codes = tuple(c.strip().upper() for c in (m.group(2) or "").split(",") if c.strip())
        return GuardAnswer(m.group(1).lower(), codes if m.group(1).lower() == "unsafe" else ())
    raise ModelSourceError(f"the guard model's answer is in no known format: {body[:80]!r}")


class GuardModelStage:
    """Asks the guard model about each untrusted message in turn, stopping at the first unsafe
    one (the budget covers them all)."""

    name = "llm"

    def __init__(self, ask: Ask, *, threshold: float = 0.5, model: str = "the guard model") -> None:
        check_threshold("guard model", threshold)
        self.ask = ask
        self.threshold = threshold
        self.model = model
        self._said_unknown = False  # the log says once that the answers are in no known format

    async def score(self, texts: Sequence[Scanned]) -> StageScore:
        best = StageScore(0.0, None, "safe")
        for t in texts:
            said = await self.ask([("user", t.text)])
            try:
                answer = parse_answer(said)
            except ModelSourceError:
                self._unknown_format(said)
                raise
            detail = answer.safety + (f" ({', '.join(answer.categories)})" if answer.categories else "")
            if best.message is None or answer.score > best.score:
                best = StageScore(answer.score, t.index, detail)
            if answer.score >= self.threshold:
                break
        return best

    def _unknown_format(self, said: str) -> None:
        if self._said_unknown:
            return
        self._said_unknown = True
        log.warning(
            "guard: %s answered %r, in neither format the llm stage reads (%s); every request's "
            "second stage fails until it does (with guard_fail closed, every request is blocked). "
            "Is %s a guard model? Serve qwen3guard-0.6b or llama-guard-3-1b as --guard-model.",
            self.model,
            said[:80],
            ANSWER_FORMATS,
            self.model,
        )
