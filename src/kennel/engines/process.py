"""One engine process (llama-server, vLLM) under kennel's supervision.

kennel starts it on a loopback port it chose, passes its log lines on to kennel's log (``kennel.engine.NAME``)
and keeps the last ones for error messages, waits for its health endpoint, and stops it with
SIGTERM then SIGKILL. The process runs in a process group of its own, so stopping it also stops
what it started (vLLM's engine core, Ray workers); on Linux it is also asked to die with kennel
(``PR_SET_PDEATHSIG``), so even ``kill -9`` of kennel leaves no engine running on.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import re
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import httpx

from kennel.errors import ModelLoadError

LOG_KEEP = 40  # lines kept for the error that explains a failed start or a crash
STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL
_PR_SET_PDEATHSIG = 1
_TROUBLE = re.compile(r"\b(error|warning|fatal|traceback|exception|out of memory)\b", re.I)


def free_port() -> int:
    """A loopback port nothing listens on now (the engine binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    os.setsid()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class EngineProcess:
    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        health_url: str,
        ready_timeout: float,
        log_file: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = env
        self.health_url = health_url
        self.ready_timeout = ready_timeout
        self.log_file = log_file
        self.lines: deque[str] = deque(maxlen=LOG_KEEP)
        self.load_lines: list[str] = []  # everything said until ready: the memory llama.cpp reports
        self._loading = False
        self.proc: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task[None] | None = None
        self.log = logging.getLogger(f"kennel.engine.{name}")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def tail(self, n: int = 8) -> str:
        return " | ".join(list(self.lines)[-n:])

    async def start(self) -> None:
        """Start the process and wait until its health endpoint answers 200; on a timeout or an
        early exit, stop it and raise with its last log lines."""
        self.lines.clear()
        self.load_lines = []
        self._loading = True
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=self.env,
                preexec_fn=_die_with_parent,  # only setsid and prctl in the child: no locks taken
            )
        except OSError as exc:
            raise ModelLoadError(
                f"Could not start the engine for {self.name}: {exc}.",
                hint="Check the engine's path (kennel doctor) and that it is executable.",
            ) from exc
        self._pump = asyncio.create_task(self._read_log(self.proc))
        try:
            await self._wait_healthy()
        except BaseException:
            await self.stop()
            raise
        finally:
            self._loading = False

    async def _read_log(self, proc: asyncio.subprocess.Process) -> None:
        """Every line to the engine's own log file; kennel's log gets its warnings and errors
        (an engine at full verbosity says several lines per request)."""
        assert proc.stdout is not None
        out = None
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            out = self.log_file.open("a", encoding="utf-8", buffering=1)
        try:
            while line := await proc.stdout.readline():
                text = line.decode("utf-8", "replace").rstrip()
                if not text:
                    continue
                self.lines.append(text)
                if self._loading:
                    self.load_lines.append(text)
                if out is not None:
                    out.write(text + "\n")
                self.log.log(logging.WARNING if _TROUBLE.search(text) else logging.DEBUG, "%s", text)
        finally:
            if out is not None:
                out.close()

    async def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                if self.proc is None or self.proc.returncode is not None:
                    await self._drain_log()
                    code = self.proc.returncode if self.proc else None
                    raise ModelLoadError(
                        f"The engine for {self.name} exited (code {code}) before it was ready: {self.tail()}",
                        hint="The lines above are the engine's own; kennel's log has the rest.",
                    )
                with contextlib.suppress(httpx.HTTPError):
                    r = await client.get(self.health_url)
                    if r.status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise ModelLoadError(
                        f"The engine for {self.name} was not ready within {self.ready_timeout:.0f} s; "
                        f"it was stopped. Its last lines: {self.tail()}",
                        hint=(
                            "A large model may need a longer `ready_timeout`; otherwise see the lines above."
                        ),
                    )
                await asyncio.sleep(0.25)

    async def _drain_log(self) -> None:
        if self._pump is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._pump), timeout=2.0)

    async def wait(self) -> int:
        """Until the process exits; its exit code."""
        assert self.proc is not None
        code = await self.proc.wait()
        await self._drain_log()
        return code

    async def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL after ``STOP_GRACE`` seconds."""
        proc = self.proc
        if proc is None:
            return
        if proc.returncode is None:
            self._signal(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout=STOP_GRACE)
            except TimeoutError:
                self.log.warning("%s did not stop within %.0f s; killing it", self.name, STOP_GRACE)
                self._signal(proc.pid, signal.SIGKILL)
                await proc.wait()
        # what it started may outlive it: the group goes too
        self._signal(proc.pid, signal.SIGKILL)
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump

    @staticmethod
    def _signal(pid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
