"""Golden-prompt checkups: a suite of prompts with deterministic assertions, run against an
OpenAI-compatible endpoint, measured (time to first token, latency, tokens/s) and recorded.

    suite.py        the YAML format (close to promptfoo's) and its validation
    assertions.py   the assertion types: pure functions over a Response
    runner.py       streaming requests, timings, one PromptResult per prompt
    results.py      the CSV and SQLite history
"""

from __future__ import annotations

from kennel.checkup.assertions import Assertion, Outcome, Response, Score, parse_assertion, score
from kennel.checkup.results import CSV_COLUMNS, record
from kennel.checkup.runner import (
    PromptResult,
    RunInfo,
    RunResult,
    Target,
    local_target,
    run_suite,
    url_target,
)
from kennel.checkup.suite import PromptCase, Suite, load_default_suite, load_suite, parse_suite

__all__ = [
    "CSV_COLUMNS",
    "Assertion",
    "Outcome",
    "PromptCase",
    "PromptResult",
    "Response",
    "RunInfo",
    "RunResult",
    "Score",
    "Suite",
    "Target",
    "load_default_suite",
    "load_suite",
    "local_target",
    "parse_assertion",
    "parse_suite",
    "record",
    "run_suite",
    "score",
    "url_target",
]
