"""Shared fixtures: an isolated KENNEL_HOME, no network but loopback, generated GGUF models."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kennel.model.shape import ModelShape
from kennel.model.synthetic import CHAT_TEMPLATE, synthetic_shape, write_synthetic_gguf


@pytest.fixture(autouse=True)
def kennel_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "kennel-home"
    monkeypatch.setenv("KENNEL_HOME", str(home))
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv(
        "HF_ENDPOINT", "http://127.0.0.1:9"
    )  # a closed loopback port unless a test sets its own
    return home


def _is_loopback(address: object) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback  # type: ignore[arg-type]
    except ValueError:
        return isinstance(host, str) and host.startswith("/")  # unix sockets


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection outside 127.0.0.0/8 fails the test instead of reaching the internet."""
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: object) -> object:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
            raise AssertionError(f"test tried to reach {address}: only loopback is allowed")
        return real_connect(self, address)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", guarded)


ModelFactory = Callable[..., tuple[Path, ModelShape]]


@pytest.fixture(scope="session")
def make_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelFactory]:
    """Write (once per session) a synthetic GGUF for the given synthetic_shape arguments."""
    root = tmp_path_factory.mktemp("models")
    cache: dict[str, tuple[Path, ModelShape]] = {}

    def make(
        tensor_types: dict[str, int] | None = None,
        file_type: int = 1,
        chat_template: str = CHAT_TEMPLATE,
        pooling: int | None = None,
        **kw: object,
    ) -> tuple[Path, ModelShape]:
        key = repr(
            (sorted(kw.items()), sorted((tensor_types or {}).items()), file_type, chat_template, pooling)
        )
        if key not in cache:
            shape = synthetic_shape(**kw)  # type: ignore[arg-type]
            path = root / f"m{len(cache)}.gguf"
            write_synthetic_gguf(
                path,
                shape,
                tensor_types=tensor_types,
                file_type=file_type,
                chat_template=chat_template,
                pooling=pooling,
            )
            cache[key] = (path, shape)
        return cache[key]

    yield make
