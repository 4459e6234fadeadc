"""Loopback HTTP servers for tests: a handler on a free 127.0.0.1 port, served from a thread and
shut down when the test leaves, and the webhook receiver the alert tests share."""

from __future__ import annotations

import json
import socketserver
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


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
