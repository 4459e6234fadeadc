"""Error envelopes clients branch on: status, OpenAI's type and code for every kennel error, from
one explicit table (not from class names)."""

from __future__ import annotations

import json

import pytest

from kennel.errors import (
    AuthError,
    ClientGoneError,
    ContextLengthError,
    EngineError,
    ForbiddenError,
    InsufficientMemoryError,
    InvalidRequestError,
    KennelError,
    ModelLoadError,
    ModelLoadingError,
    ModelNotServedError,
    PromptInjectionError,
    QueueFullError,
    RateLimitError,
    RequestTimeoutError,
    RequestTooLargeError,
)
from kennel.server.http_errors import ERROR_TABLE, kennel_error_body, kennel_error_response

PINNED: list[tuple[KennelError, int, str, str]] = [
    (ContextLengthError("x"), 400, "invalid_request_error", "context_length_exceeded"),
    (InvalidRequestError("x"), 400, "invalid_request_error", "invalid_request"),
    (PromptInjectionError("x"), 400, "prompt_injection", "prompt_injection"),
    (RequestTimeoutError("x"), 408, "invalid_request_error", "request_timeout"),
    (RequestTooLargeError("x"), 413, "invalid_request_error", "request_too_large"),
    (AuthError("x"), 401, "authentication_error", "invalid_api_key"),
    (ForbiddenError("x"), 403, "permission_error", "model_not_allowed"),
    (ModelNotServedError("x"), 404, "not_found_error", "model_not_found"),
    (RateLimitError("x", retry_after=3), 429, "rate_limit_error", "rate_limit_exceeded"),
    (QueueFullError("x", retry_after=2), 429, "rate_limit_error", "queue_full"),
    (ClientGoneError("x"), 499, "client_closed_request", "client_closed_request"),
    (ModelLoadError("x"), 500, "server_error", "model_load_failed"),
    (EngineError("x"), 500, "server_error", "engine_error"),
    (ModelLoadingError("x", retry_after=5), 503, "service_unavailable", "model_loading"),
    (InsufficientMemoryError("x"), 503, "service_unavailable", "insufficient_memory"),
]


@pytest.mark.parametrize(
    ("exc", "status", "type_", "code"), PINNED, ids=[type(e).__name__ for e, *_ in PINNED]
)
def test_each_error_has_its_status_type_and_code(
    exc: KennelError, status: int, type_: str, code: str
) -> None:
    r = kennel_error_response(exc)
    body = json.loads(r.body)["error"]
    assert (r.status_code, body["type"], body["code"]) == (status, type_, code)
    assert body == kennel_error_body(exc)["error"] and body["message"].startswith("x")
    retry = getattr(exc, "retry_after", None)
    assert r.headers.get("retry-after") == (str(round(retry)) if retry else None)


def test_the_table_is_the_whole_story() -> None:
    """Every serving error class is pinned above; a new one must be added to both."""
    assert {type(e) for e, *_ in PINNED} == set(ERROR_TABLE)
