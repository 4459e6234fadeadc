"""Names in the store and the references users type: NAME, NAME:TAG, NAME@VERSION.

Names end up in file names, shell commands and URLs, so they are held to a small alphabet:
lower-case letters, digits, '.', '-' and '_', starting with a letter or digit, no '..'.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kennel.errors import InvalidNameError

MAX_NAME = 128
_NAME = re.compile(r"^[a-z0-9][a-z0-9._\-]{0,127}$")
DEFAULT_TAG = "latest"


def check_name(name: str, *, what: str = "model name") -> str:
    """``name`` lower-cased if it is safe to use, else InvalidNameError saying why."""
    n = name.strip().lower()
    if not _NAME.match(n) or ".." in n or n.endswith((".", "-")):
        bad = sorted({c for c in name if not re.match(r"[A-Za-z0-9._\-]", c)})
        if ".." in n:  # named first: a path climbing out is the worst thing wrong with it
            why = "it contains '..'"
        elif bad:
            why = f"it contains {' '.join(repr(c) for c in bad)}"
        elif len(n) > MAX_NAME:
            why = f"it is {len(n)} characters long, more than {MAX_NAME}"
        elif not n:
            why = "it is empty"
        elif n.endswith((".", "-")) or not n[0].isalnum():
            why = "it must start with a letter or digit and end with one"
        else:
            why = "it has a bad shape"
        raise InvalidNameError(
            f"{name!r} is not a valid {what}: {why}.",
            hint=(
                f"Use lower-case letters, digits, '.', '-' and '_' (at most {MAX_NAME}), "
                "e.g. qwen2.5-7b or prod."
            ),
        )
    return n


@dataclass(frozen=True)
class Ref:
    """A model in the store, optionally pinned to a tag or a version number."""

    name: str
    tag: str | None = None
    version: int | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}@{self.version}"
        return f"{self.name}:{self.tag}" if self.tag else self.name


def parse_ref(text: str) -> Ref:
    """NAME, NAME:TAG or NAME@VERSION (a bare NAME means its `latest` tag when one is needed)."""
    s = text.strip()
    if "@" in s:
        name, _, v = s.partition("@")
        if not v.isdigit() or int(v) < 1:
            raise InvalidNameError(
                f"{text!r}: the version after '@' must be a number like 3.",
                hint="See the versions with `kennel history NAME`.",
            )
        return Ref(check_name(name), version=int(v))
    if ":" in s:
        name, _, tag = s.partition(":")
        return Ref(check_name(name), tag=check_name(tag, what="tag"))
    return Ref(check_name(s))
