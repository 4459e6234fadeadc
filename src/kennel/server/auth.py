"""Who is calling: the API key, checked once per request. Sent as ``Authorization: Bearer`` (OpenAI's
clients, and Ollama's with OLLAMA_API_KEY) or as ``x-api-key`` (Anthropic's)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, Request

from kennel.errors import AuthError, StoreApiError
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
    if not secret:
        secret = request.headers.get("x-api-key", "").strip() or None
    notes = request.scope.setdefault("state", {})  # for the request log line
    try:
        if secret is None and header.strip():  # a key sent without its scheme: say so, not "missing"
            raise AuthError(
                "The Authorization header must be 'Bearer' and the key.",
                reason="malformed",
                hint="Send 'Authorization: Bearer kn-…', or the key alone as x-api-key.",
            )
        key = state.keys.verify(secret)
    except AuthError as exc:
        notes["auth_failure"] = exc.reason
        raise
    notes["key"] = key.name
    return key


Key = Annotated[ApiKey | None, Depends(authenticate)]


def check_key(request: Request, key: ApiKey | None, model: str) -> None:
    """The key may use ``model``, and is within its rate limit."""
    if key is None:
        return
    key.check_model(model)
    state: AppState = request.app.state.kennel
    state.limiter.check(key.name, key.rpm, time.monotonic())


def require_store_api(request: Request, key: ApiKey | None) -> None:
    """Changing the store (Ollama's pull, delete, copy) is on by default only for a server without
    keys (loopback, one person's machine). With keys in use it takes ``store_api: true``, and then
    an admin key (``--role admin``; keys made before roles existed are admins): a user key, even
    one for every model, must not add or remove models for everyone."""
    state: AppState = request.app.state.kennel
    enabled = state.settings.store_api
    if enabled is None:
        enabled = key is None
    if not enabled:
        raise StoreApiError(
            "This server does not let API clients change its model store (pull, delete, copy).",
            hint="Run `kennel pull` / `kennel rm` on the server, or set store_api: true in its config.",
        )
    if key is not None and not key.is_admin:
        raise StoreApiError(
            f"The key {key.name!r} is a user key; it may not change the model store.",
            hint="Use an admin key (`kennel keys create NAME --role admin`), "
            "or run `kennel pull` / `kennel rm` on the server.",
        )
