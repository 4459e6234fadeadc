"""Byte sources for GGUF headers: a local file, or an https URL read with range requests."""

from __future__ import annotations

import re
from pathlib import Path
from types import TracebackType

import httpx

from kennel.errors import ModelNotFoundError, NotGGUFError, RemoteError

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class FileSource:
    """A local file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = str(path)
        if not path.exists():
            raise ModelNotFoundError(
                f"No file at {path}.", hint="Check the path, or give a Hugging Face repo id or URL."
            )
        if path.is_dir():
            raise ModelNotFoundError(
                f"{path} is a folder, not a model file.", hint="Give the path of a .gguf file in it."
            )
        self._size = path.stat().st_size

    def read_at(self, offset: int, size: int) -> bytes:
        with self.path.open("rb") as f:
            f.seek(offset)
            return f.read(size)

    def total_size(self) -> int | None:
        return self._size


class HttpSource:
    """A remote file read through HTTP range requests: only the asked-for bytes travel."""

    def __init__(
        self,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        client: httpx.Client | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.url = url
        self.name = url
        self._own_client = client is None
        self._client = client or httpx.Client(follow_redirects=True, timeout=timeout)
        self._headers = dict(headers or {})
        self._size: int | None = None

    def __enter__(self) -> HttpSource:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._own_client:
            self._client.close()

    def total_size(self) -> int | None:
        return self._size

    def read_at(self, offset: int, size: int) -> bytes:
        headers = {**self._headers, "Range": f"bytes={offset}-{offset + size - 1}"}
        try:
            with self._client.stream("GET", self.url, headers=headers) as resp:
                self._check(resp)
                if resp.status_code == 416:
                    return b""
                if resp.status_code == 206:
                    self._note_size(resp)
                    return resp.read()
                # The server ignored Range and sends the whole file: read what we need, then stop.
                if length := resp.headers.get("content-length"):
                    self._size = int(length)
                return _read_window(resp, offset, size)
        except httpx.HTTPError as exc:
            raise RemoteError(
                f"Could not read {self.url}: {exc}.",
                hint="Check the network, the URL and any proxy settings (HTTPS_PROXY).",
            ) from exc

    def _note_size(self, resp: httpx.Response) -> None:
        m = _CONTENT_RANGE.match(resp.headers.get("content-range", ""))
        if m and m.group(3) != "*":
            self._size = int(m.group(3))

    def _check(self, resp: httpx.Response) -> None:
        status = resp.status_code
        if status in (404, 410):
            raise ModelNotFoundError(
                f"{self.url} answered {status} Not Found.",
                hint="Check the repository, the file name and the revision.",
            )
        if status in (401, 403):
            raise RemoteError(
                f"{self.url} answered {status}: access denied.",
                hint="For gated or private Hugging Face models set HF_TOKEN, and accept the licence "
                "on the model page.",
            )
        if status >= 400 and status != 416:
            raise RemoteError(
                f"{self.url} answered HTTP {status}.", hint="Try again later, or check the URL."
            )
        if "text/html" in resp.headers.get("content-type", ""):
            raise NotGGUFError(
                f"{self.url} answered with a web page, not a GGUF file.",
                hint="Use the file's download link (on Hugging Face: /resolve/main/FILE.gguf).",
            )


def _read_window(resp: httpx.Response, offset: int, size: int) -> bytes:
    out = bytearray()
    pos = 0
    for chunk in resp.iter_bytes():
        start = max(offset - pos, 0)
        if start < len(chunk):
            out += chunk[start : start + size - len(out)]
        pos += len(chunk)
        if len(out) >= size:
            break
    return bytes(out)
