"""How kennel serve holds connections: uvicorn with a deadline for each request's line and headers
and a cap on concurrent connections, so clients that open connections and send half a request
(slowloris) cannot hold the server's sockets. The body has its own deadline (``front``) and idle
kept-alive connections uvicorn's own."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from kennel.errors import InvalidOptionError
from kennel.server.settings import ServeSettings

HEADER_TIMEOUT = 10.0  # seconds from a request's first byte (or the connection) to its last header


class GuardedHttp(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing a connection whose request headers do not arrive in
    time."""

    header_timeout = HEADER_TIMEOUT
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()  # the next request on a kept-alive connection gets the same time

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def uvicorn_config(app: Any, settings: ServeSettings, **overrides: Any) -> uvicorn.Config:
    """The one uvicorn configuration, for `kennel serve` and the tests alike."""
    values: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "http": GuardedHttp,
        "limit_concurrency": settings.max_connections,
        "timeout_keep_alive": 5,
        "log_level": "warning",
        "access_log": False,  # kennel's request log says what happened, without any text
    }
    return uvicorn.Config(app, **{**values, **overrides})


def listening_sockets(settings: ServeSettings) -> list[socket.socket]:
    """The server's sockets: its port and, with ``ollama_port``, a second one on the same host,
    so one app (one pool, one set of keys and metrics) answers on both. Bound as uvicorn binds
    its own (address reuse, inheritable); a port taken since it was checked is the user's error."""
    ports = [settings.port, *([settings.ollama_port] if settings.ollama_port else [])]
    sockets: list[socket.socket] = []
    for port in ports:
        sock = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((settings.host, port))
        except OSError as exc:
            sock.close()
            for s in sockets:
                s.close()
            raise InvalidOptionError(
                f"Cannot listen on {settings.host}:{port} ({exc.strerror}).",
                hint="Another program holds the port: stop it, or choose another port.",
            ) from exc
        sock.set_inheritable(True)
        sockets.append(sock)
    return sockets
