"""A loopback HTTP server that speaks the Hugging Face endpoints kennel uses.

    GET /api/models/OWNER/REPO[/revision/REV]     model info with file sizes (siblings)
    GET|HEAD /OWNER/REPO/resolve/REV/FILE         file bytes, honouring Range (206)
    GET /files/NAME                               plain URL serving of the same files

Behaviours per file let tests simulate servers that ignore Range, answer HTML, drop the
connection part-way (``drop_at``), serve wrong bytes (``corrupt``), or trickle slowly
(``delay``). GGUF siblings carry LFS metadata (size, sha256 of the true bytes), as the hub's
``?blobs=true`` listing does. Every request is counted, so tests can assert what travelled.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Repo:
    files: dict[str, bytes] = field(default_factory=dict)
    gated: bool = False


@dataclass
class HubState:
    repos: dict[str, Repo] = field(default_factory=dict)
    ignore_range: set[str] = field(default_factory=set)
    html: set[str] = field(default_factory=set)
    drop_at: dict[str, list[int]] = field(default_factory=dict)  # file -> offsets where a response dies
    corrupt: set[str] = field(default_factory=set)  # files served with one byte flipped
    delay: dict[str, float] = field(default_factory=dict)  # file -> seconds per 64 KiB chunk
    requests: list[str] = field(default_factory=list)
    ranges: list[str] = field(default_factory=list)  # Range headers of file requests ("" if none)
    bytes_sent: int = 0


class _Handler(BaseHTTPRequestHandler):
    state: HubState

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def _send(
        self,
        status: int,
        body: bytes,
        ctype: str = "application/octet-stream",
        extra: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
            self.state.bytes_sent += len(body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        st = self.state
        st.requests.append(f"{self.command} {self.path}")
        path = self.path.split("?")[0]
        m = re.match(r"^/api/models/([^/]+/[^/]+)(?:/revision/[^/]+)?$", path)
        if m:
            return self._info(m.group(1))
        m = re.match(r"^/([^/]+/[^/]+)/resolve/[^/]+/(.+)$", path)
        if m:
            repo = st.repos.get(m.group(1))
            if repo is None or m.group(2) not in repo.files:
                return self._send(
                    404,
                    b'{"error": "Entry not found"}',
                    "application/json",
                    {"X-Error-Code": "EntryNotFound"},
                )
            if repo.gated:
                return self._send(
                    403, b'{"error": "gated"}', "application/json", {"X-Error-Code": "GatedRepo"}
                )
            return self._file(m.group(2), repo.files[m.group(2)])
        m = re.match(r"^/files/(.+)$", path)
        if m:
            for repo in st.repos.values():
                if m.group(1) in repo.files:
                    return self._file(m.group(1), repo.files[m.group(1)])
        return self._send(404, b"<html><body>Not Found</body></html>", "text/html")

    def _info(self, repo_id: str) -> None:
        repo = self.state.repos.get(repo_id)
        if repo is None:
            return self._send(
                404,
                b'{"error": "Repository not found"}',
                "application/json",
                {"X-Error-Code": "RepoNotFound"},
            )
        if repo.gated:
            return self._send(403, b'{"error": "gated"}', "application/json", {"X-Error-Code": "GatedRepo"})
        siblings = []
        for n, b in sorted(repo.files.items()):
            git_oid = hashlib.sha1(b"blob %d\0" % len(b) + b, usedforsecurity=False).hexdigest()
            sib: dict[str, Any] = {"rfilename": n, "size": len(b), "blobId": git_oid}
            if n.endswith((".gguf", ".safetensors")):
                sib["lfs"] = {"size": len(b), "sha256": hashlib.sha256(b).hexdigest(), "pointerSize": 134}
            siblings.append(sib)
        doc = {"id": repo_id, "modelId": repo_id, "sha": "0" * 40, "private": False, "siblings": siblings}
        self._send(200, json.dumps(doc).encode(), "application/json")

    def _file(self, name: str, data: bytes) -> None:
        if name in self.state.html:
            return self._send(
                200, b"<!doctype html><html><body>Sign in</body></html>", "text/html; charset=utf-8"
            )
        rng = self.headers.get("Range")
        self.state.ranges.append(rng or "")
        if name in self.state.corrupt:
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        m = re.match(r"bytes=(\d+)-(\d*)", rng or "")
        if m and name not in self.state.ignore_range:
            start = int(m.group(1))
            end = min(int(m.group(2)) if m.group(2) else len(data) - 1, len(data) - 1)
            if start >= len(data):
                return self._send(416, b"", extra={"Content-Range": f"bytes */{len(data)}"})
            extra = {"Content-Range": f"bytes {start}-{end}/{len(data)}", "Accept-Ranges": "bytes"}
            if name in self.state.drop_at or name in self.state.delay:
                return self._stream(name, 206, data, start, end + 1, extra)
            return self._send(206, data[start : end + 1], extra=extra)
        if name in self.state.drop_at or name in self.state.delay:
            return self._stream(name, 200, data, 0, len(data), {})
        self._send(200, data)

    def _stream(
        self, name: str, status: int, data: bytes, start: int, end: int, extra: dict[str, str]
    ) -> None:
        """Send data[start:end] in 64 KiB chunks, slowly if asked, dying at the next drop offset."""
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start))
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD":
            return
        drops = self.state.drop_at.get(name, [])
        stop = next((d for d in drops if start < d < end), None)
        if stop is not None:
            drops.remove(stop)
        pos = start
        while pos < (stop if stop is not None else end):
            chunk = data[pos : min(pos + 65536, stop if stop is not None else end)]
            self.wfile.write(chunk)
            self.wfile.flush()
            self.state.bytes_sent += len(chunk)
            pos += len(chunk)
            time.sleep(self.state.delay.get(name, 0.0))
        if stop is not None:  # the connection dies mid-body, as a flaky proxy would do it
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that stop reading after the header they need are expected


@contextmanager
def hub_server(state: HubState | None = None) -> Iterator[tuple[str, HubState]]:
    st = state or HubState()
    handler = type("Handler", (_Handler,), {"state": st})
    server = _QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", st
    finally:
        server.shutdown()
        server.server_close()
