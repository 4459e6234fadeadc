"""Loopback HTTP servers for tests: a handler on a free 127.0.0.1 port, served from a thread and
shut down when the test leaves; the webhook receiver the alert tests share; and waiting for a
server a test started (in a thread, a process or a container) to be ready."""

from __future__ import annotations

import json
import socketserver
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest


class Quiet(BaseHTTPRequestHandler):
    """A handler that keeps the test output clean and answers in one call."""

    def log_message(self, *args: Any) -> None:
        pass

    def reply(
        self, status: int, body: bytes = b"", content_type: str = "", headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def running(server: socketserver.BaseServer) -> Iterator[None]:
    """``server`` answering from a thread until the block ends."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` on a loopback port: the base URL (no trailing slash)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    with running(server):
        yield f"http://127.0.0.1:{server.server_address[1]}"


@contextmanager
def webhook_receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A hook URL and the JSON bodies POSTed to it, in order."""
    got: list[dict[str, Any]] = []

    class Handler(Quiet):
        def do_POST(self) -> None:
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.reply(200)

    with serving(Handler) as url:
        yield url + "/hook", got


def wait_ready(
    url: str,
    *,
    seconds: float = 90.0,
    path: str = "/readyz",
    proc: subprocess.Popen[Any] | None = None,
    thread: threading.Thread | None = None,
    log: Callable[[], str] | None = None,
) -> None:
    """Until ``url + path`` answers 200; fails the test, with the end of the server's ``log``
    (by default what ``proc`` wrote to a stderr pipe), when the server's ``proc`` or ``thread``
    ends first or the time runs out."""
    said = log or (lambda: exited_stderr(proc) if proc is not None else "")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            status = proc.returncode
            pytest.fail(
                f"the server at {url} exited (status {status}) before it was ready:\n{said()[-3000:]}"
            )
        if thread is not None and not thread.is_alive():
            pytest.fail(f"the server at {url} stopped before it was ready (its exception is in the output)")
        try:
            if httpx.get(url + path, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    pytest.fail(f"{url}{path} did not answer 200 within {seconds:g} s:\n{said()[-3000:]}")


def exited_stderr(proc: subprocess.Popen[Any]) -> str:
    """What a process that has exited wrote to its stderr pipe: "" while it runs (reading would
    block) or when its stderr is not a pipe."""
    if proc.poll() is None or proc.stderr is None:
        return ""
    data = proc.stderr.read()
    return data.decode(errors="replace") if isinstance(data, bytes) else str(data)
