"""``python -m kennel.engines.reaper ENGINE ARGS...``: runs an engine process and takes everything
it started down with it.

kennel starts this in a session of its own, asked to receive SIGTERM when kennel dies
(``PR_SET_PDEATHSIG``, even after ``kill -9``). The engine runs as its child, in the same process
group, with its output on the same pipe. On SIGTERM (kennel stopping it, or kennel gone) the
engine gets SIGTERM to stop in order, then after a grace period the whole group gets SIGKILL:
what the engine started (vLLM's engine core, which does not watch its parent) goes too. When the
engine exits by itself, so does this, with its exit code, after clearing the group.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time

GRACE = 8.0  # seconds the engine has to stop after SIGTERM (kennel kills the group at 10)
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the engine between fork and exec
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m kennel.engines.reaper ENGINE [ARGS...]", file=sys.stderr)
        return 2
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() == 1:  # kennel died before the call above: nothing to serve
            return 1
    engine = subprocess.Popen(argv, preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)

    deadline: list[float] = []  # set when asked to stop: when the group gets SIGKILL

    def stop(signum: int, frame: object) -> None:
        # only signal here: the main loop below does the waiting (poll() in a signal handler
        # would find the wait lock held by the interrupted code and see nothing)
        if not deadline:
            deadline.append(time.monotonic() + GRACE)
            engine.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is kennel's to handle
    while engine.poll() is None:
        if deadline and time.monotonic() > deadline[0]:
            break
        time.sleep(0.05)
    _clear_group()
    code = engine.poll()
    if code is None:
        return 137
    return code if code >= 0 else 128 - code


def _clear_group() -> None:
    """SIGKILL to the rest of this process group: what the engine started."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for pid in _group_members():
        with contextlib.suppress(OSError):  # gone meanwhile
            os.kill(pid, signal.SIGKILL)


def _group_members() -> list[int]:
    me, group = os.getpid(), os.getpgrp()
    members = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            if os.getpgid(int(entry)) == group:
                members.append(int(entry))
        except OSError:
            continue
    return members


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
