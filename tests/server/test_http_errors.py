"""Error envelopes clients branch on: status, OpenAI's type and code and Anthropic's type for every
kennel error, from one explicit table (not from class names); Ollama's shape is the message."""

from __future__ import annotations

import json

import pytest

from kennel.errors import (
    AuthError,
    ChecksumError,
    ClientGoneError,
    ContextLengthError,
    DiskSpaceError,
    EngineError,
    ForbiddenError,
    ForeignRequestError,
    InsufficientMemoryError,
    InUseError,
    InvalidNameError,
    InvalidRequestError,
    KennelError,
    ModelLoadError,
    ModelLoadingError,
    ModelNotFoundError,
    ModelNotServedError,
    ModelSourceError,
    NotInStoreError,
    PromptInjectionError,
    QueueFullError,
    RateLimitError,
    RemoteError,
    RequestTimeoutError,
    RequestTooLargeError,
    StoreApiError,
    StoreError,
)
from kennel.server.http_errors import ERROR_TABLE, dialect_of, kennel_error_body, kennel_error_response

PINNED: list[tuple[KennelError, int, str, str, str]] = [
    (
        ContextLengthError("x"),
        400,
        "invalid_request_error",
        "context_length_exceeded",
        "invalid_request_error",
    ),
    (InvalidRequestError("x"), 400, "invalid_request_error", "invalid_request", "invalid_request_error"),
    (PromptInjectionError("x"), 400, "prompt_injection", "prompt_injection", "invalid_request_error"),
    (RequestTimeoutError("x"), 408, "invalid_request_error", "request_timeout", "invalid_request_error"),
    (RequestTooLargeError("x"), 413, "invalid_request_error", "request_too_large", "request_too_large"),
    (AuthError("x"), 401, "authentication_error", "invalid_api_key", "authentication_error"),
    (ForbiddenError("x"), 403, "permission_error", "model_not_allowed", "permission_error"),
    (StoreApiError("x"), 403, "permission_error", "store_api_not_allowed", "permission_error"),
    (ForeignRequestError("x"), 403, "permission_error", "origin_not_allowed", "permission_error"),
    (ModelNotServedError("x"), 404, "not_found_error", "model_not_found", "not_found_error"),
    (RateLimitError("x", retry_after=3), 429, "rate_limit_error", "rate_limit_exceeded", "rate_limit_error"),
    (QueueFullError("x", retry_after=2), 429, "rate_limit_error", "queue_full", "rate_limit_error"),
    (ClientGoneError("x"), 499, "client_closed_request", "client_closed_request", "api_error"),
    (ModelLoadError("x"), 500, "server_error", "model_load_failed", "api_error"),
    (EngineError("x"), 500, "server_error", "engine_error", "api_error"),
    (ModelLoadingError("x", retry_after=5), 503, "service_unavailable", "model_loading", "overloaded_error"),
    (InsufficientMemoryError("x"), 503, "service_unavailable", "insufficient_memory", "overloaded_error"),
    # the store and the hub, behind Ollama's /api/pull, /api/delete and /api/copy
    (NotInStoreError("x"), 404, "not_found_error", "model_not_found", "not_found_error"),
    (InvalidNameError("x"), 400, "invalid_request_error", "invalid_name", "invalid_request_error"),
    (InUseError("x"), 409, "invalid_request_error", "model_in_use", "invalid_request_error"),
    (DiskSpaceError("x"), 507, "server_error", "disk_full", "api_error"),
    (ChecksumError("x"), 502, "server_error", "checksum_mismatch", "api_error"),
    (StoreError("x"), 500, "server_error", "store_error", "api_error"),
    (ModelNotFoundError("x"), 404, "not_found_error", "model_not_found", "not_found_error"),
    (ModelSourceError("x"), 400, "invalid_request_error", "invalid_model", "invalid_request_error"),
    (RemoteError("x"), 502, "server_error", "hub_error", "api_error"),
]


@pytest.mark.parametrize(
    ("exc", "status", "type_", "code", "anthropic"), PINNED, ids=[type(e).__name__ for e, *_ in PINNED]
)
def test_each_error_has_its_status_type_and_code(
    exc: KennelError, status: int, type_: str, code: str, anthropic: str
) -> None:
    r = kennel_error_response(exc)
    body = json.loads(r.body)["error"]
    assert (r.status_code, body["type"], body["code"]) == (status, type_, code)
    assert body == kennel_error_body(exc)["error"] and body["message"].startswith("x")
    retry = getattr(exc, "retry_after", None)
    assert r.headers.get("retry-after") == (str(round(retry)) if retry else None)
    # the same error in Anthropic's shape and in Ollama's: same status, same Retry-After
    a = kennel_error_response(exc, "anthropic")
    assert (a.status_code, json.loads(a.body)) == (
        status,
        {"type": "error", "error": {"type": anthropic, "message": "x"}},
    )
    o = kennel_error_response(exc, "ollama")
    assert (o.status_code, json.loads(o.body), o.headers.get("retry-after")) == (
        status,
        {"error": "x"},
        r.headers.get("retry-after"),
    )


def test_the_table_is_the_whole_story() -> None:
    """Every serving error class is pinned above; a new one must be added to both."""
    assert {type(e) for e, *_ in PINNED} == set(ERROR_TABLE)


def test_the_shape_follows_the_path() -> None:
    assert dialect_of("/api/chat") == dialect_of("/api/tags") == "ollama"
    assert dialect_of("/v1/messages") == dialect_of("/v1/messages/count_tokens") == "anthropic"
    assert (
        dialect_of("/v1/chat/completions")
        == dialect_of("/v1/responses")
        == dialect_of("/metrics")
        == "openai"
    )
