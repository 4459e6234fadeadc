"""Printing for every command: rich for people, JSON (with a schema tag) for scripts."""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from typing import Any

from rich.console import Console

JSON_SCHEMA_VERSION = 1


def console() -> Console:
    # piped output (logs, CI) gets wide lines instead of rich's 80-column default
    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def err_console() -> Console:
    # soft_wrap: an error stays one line (grep-able, as scripts expect), however long the path
    return Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(kind: str, payload: dict[str, Any]) -> None:
    """One JSON document on stdout: {"schema": "kennel.<kind>/v1", ...}."""
    doc = {"schema": f"kennel.{kind}/v{JSON_SCHEMA_VERSION}", **payload}
    sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")


def status(message: str, *, enabled: bool = True) -> Any:
    """A spinner on stderr for slow steps; silent when output is for scripts."""
    if not enabled:
        return nullcontext()
    return err_console().status(message, spinner="dots")
