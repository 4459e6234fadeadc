"""One engine process (llama-server, vLLM) under kennel's supervision.

kennel starts it on a loopback port it chose, keeps its whole log in a file of its own (0600:
an engine may quote requests when something fails) with its warnings in kennel's log and its
last lines for error messages, waits for its health endpoint, and stops it with SIGTERM then
SIGKILL. It runs under ``kennel.engines.reaper`` in a session of its own: the reaper is told
when kennel dies (even by ``kill -9``) and then stops the engine and everything the engine
started (vLLM's engine core, which does not watch its parent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

import httpx

from kennel.errors import ModelLoadError

LOG_KEEP = 40  # lines kept for the error that explains a failed start or a crash
STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL
MAX_LINE = 4096  # characters of one log line kept (an engine may log a whole response body)
LOG_ROTATE = 50 << 20  # bytes; the engine log moves to .1 past this, when the engine starts
_TROUBLE = re.compile(r"\b(error|warning|fatal|traceback|exception|out of memory)\b", re.I)


def free_port() -> int:
    """A loopback port nothing listens on now (the engine binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
        drop_line: Callable[[str], bool] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = env
        self.health_url = health_url
        self.ready_timeout = ready_timeout
        self.log_file = log_file
        self.drop_line = drop_line  # lines never kept anywhere (an engine's debug output)
        self.lines: deque[str] = deque(maxlen=LOG_KEEP)
        self.load_lines: list[str] = []  # everything said until ready: the memory llama.cpp reports
        self._loading = False
        self._stopping = False
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
        self._stopping = False
        try:
            self.proc = await asyncio.create_subprocess_exec(
                # through the reaper: it dies with kennel and takes the engine's own children along
                sys.executable,
                "-m",
                "kennel.engines.reaper",
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
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
        (an engine says several lines per request). Read in chunks: a line may be longer than
        any buffer (a response body), and the pipe must be drained whatever comes."""
        assert proc.stdout is not None
        out = self._open_log()
        pending = b""
        try:
            while chunk := await proc.stdout.read(1 << 16):
                *lines, pending = (pending + chunk).split(b"\n")
                if len(pending) > MAX_LINE * 4:  # no end in sight: keep its start, drop the rest
                    lines.append(pending)
                    pending = b""
                for raw in lines:
                    self._line(raw.decode("utf-8", "replace").rstrip()[:MAX_LINE], out)
            if pending:
                self._line(pending.decode("utf-8", "replace").rstrip()[:MAX_LINE], out)
        finally:
            if out is not None:
                out.close()

    def _open_log(self) -> IO[str] | None:
        if self.log_file is None:
            return None
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            if self.log_file.stat().st_size > LOG_ROTATE:
                os.replace(self.log_file, self.log_file.with_name(self.log_file.name + ".1"))
        fd = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return os.fdopen(fd, "a", encoding="utf-8", buffering=1)

    def _line(self, text: str, out: IO[str] | None) -> None:
        if not text or (self.drop_line is not None and self.drop_line(text)):
            return
        self.lines.append(text)
        if self._loading:
            self.load_lines.append(text)
        if out is not None:
            out.write(text + "\n")
        loud = _TROUBLE.search(text) and not self._stopping
        self.log.log(logging.WARNING if loud else logging.DEBUG, "%s", text)

    async def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
            while True:
                if self.proc is None or self.proc.returncode is not None:
                    await self._drain_log()
                    code = self.proc.returncode if self.proc else None
                    raise ModelLoadError(
                        f"The engine for {self.name} exited (code {code}) before it was ready: {self.tail()}",
                        hint=f"Those are the engine's last lines; the whole log is {self.log_file}"
                        if self.log_file
                        else "Those are the engine's last lines.",
                    )
                with contextlib.suppress(httpx.HTTPError):
                    r = await client.get(self.health_url)
                    if r.status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise ModelLoadError(
                        f"The engine for {self.name} was not ready within {self.ready_timeout:.0f} s; "
                        f"it was stopped. Its last lines: {self.tail()}",
                        hint="A large model may need longer: `engine_ready_timeout` in the serve config "
                        "(or KENNEL_ENGINE_READY_TIMEOUT); otherwise see the lines above.",
                    )
                await asyncio.sleep(0.25)

    async def _drain_log(self) -> None:
        if self._pump is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._pump), timeout=2.0)

    async def wait(self) -> int:
        """Until the engine process exits; its exit code. Not ``Process.wait()``: that also waits
        for everything holding its output pipe, and a vLLM engine core outlives its server."""
        assert self.proc is not None
        while self.proc.returncode is None:
            await asyncio.sleep(0.5)
        return self.proc.returncode

    async def stop(self) -> None:
        """SIGTERM to the engine, which stops what it started in order (vLLM's engine core);
        SIGKILL to the whole group after ``STOP_GRACE`` seconds, or for what is left over."""
        proc = self.proc
        if proc is None:
            return
        self._stopping = True  # what it says while going is expected: not warnings in kennel's log
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.wait(), timeout=STOP_GRACE)
            except TimeoutError:
                self.log.warning("%s did not stop within %.0f s; killing it", self.name, STOP_GRACE)
        # what it started may outlive it: the group goes too
        self._signal(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, TimeoutError):
            await asyncio.wait_for(proc.wait(), timeout=STOP_GRACE)  # reaped, pipe closed
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump

    @staticmethod
    def _signal(pid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
