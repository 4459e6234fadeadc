"""A KENNEL_HOME that cannot take writes (read-only, not ours, a full disk) is said plainly, with
where it is, by every command that writes there; never "internal error" nor a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

KENNEL = [sys.executable, "-m", "kennel.cli.main"]
# a place no process may create a folder in, root included (the tests may run as root, for whom
# file modes do not count)
UNWRITABLE = "/proc/kennel-home"


@pytest.mark.parametrize(
    "args",
    [("keys", "ls"), ("keys", "create", "desk"), ("ls",), ("serve", "--model", "tiny.gguf")],
    ids=["keys ls", "keys create", "ls", "serve"],
)
def test_an_unwritable_home_is_named_with_a_fix(args: tuple[str, ...]) -> None:
    r = subprocess.run(
        [*KENNEL, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "KENNEL_HOME": UNWRITABLE},
    )
    assert r.returncode == 2, r.stderr
    assert "KENNEL_HOME is not writable" in r.stderr and UNWRITABLE in r.stderr
    assert "KENNEL_HOME=" in r.stderr  # the way out
    assert (
        "internal error" not in r.stderr and "Traceback" not in r.stderr and "move it aside" not in r.stderr
    )
    assert "kennel serve on" not in r.stderr  # nothing started before the error
