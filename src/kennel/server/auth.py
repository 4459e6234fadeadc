"""Who is calling: the API key from the Authorization header, checked once per request."""

from __future__ import annotations

import time

from fastapi import Request

from kennel.errors import AuthError
from kennel.server.keys import ApiKey
from kennel.server.state import AppState


async def authenticate(request: Request) -> ApiKey | None:
    """The caller's API key, or None when the server runs without keys (loopback, none issued)."""
    state: AppState = request.app.state.kennel
    if state.keys is None or not state.keys.list():
        if not state.settings.is_loopback() and not state.settings.insecure:
            raise AuthError(
                "This server requires an API key.", hint="Ask its operator for one (`kennel keys create`)."
            )
        return None
    header = request.headers.get("authorization", "")
    secret = header[7:].strip() if header.lower().startswith("bearer ") else None
    notes = request.scope.setdefault("state", {})  # for the request log line
    try:
        key = state.keys.verify(secret)
    except AuthError as exc:
        notes["auth_failure"] = exc.reason
        raise
    notes["key"] = key.name
    return key


def check_key(request: Request, key: ApiKey | None, model: str) -> None:
    if key is None:
        return
    key.check_model(model)
    state: AppState = request.app.state.kennel
    state.limiter.check(key.name, key.rpm, time.monotonic())
