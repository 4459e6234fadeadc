"""Errors as each client expects them, chosen by the request's path: OpenAI's envelope
``{"error": {message, type, param, code}}`` (also the Responses API's), Anthropic's
``{"type": "error", "error": {type, message}}`` on /v1/messages and Ollama's ``{"error": message}``
on /api/. The status, types and code of each kennel error come from one explicit table."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

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
    validation_problem,
)

Dialect = Literal["openai", "anthropic", "ollama"]

# whose error shape a path answers in: the first prefix that matches, else OpenAI's
DIALECTS: tuple[tuple[str, Dialect], ...] = (("/api/", "ollama"), ("/v1/messages", "anthropic"))

# OpenAI's and Anthropic's types per status, for errors kennel did not raise itself (validation,
# routing) and for statuses the table below does not name
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


_HTTP_CODES = {404: "unknown_path", 405: "method_not_allowed"}


@dataclass(frozen=True)
class ErrorKind:
    type: str  # OpenAI's envelope type
    code: str  # OpenAI's envelope code
    anthropic: str  # Anthropic's error type (its shape has no code)
    status: int | None = None  # for errors that carry no HTTP status of their own (store, hub)


# kennel's errors, most specific first. Clients branch on these; change them only on purpose.
ERROR_TABLE: dict[type[KennelError], ErrorKind] = {
    ContextLengthError: ErrorKind(
        "invalid_request_error", "context_length_exceeded", "invalid_request_error"
    ),
    PromptInjectionError: ErrorKind("prompt_injection", "prompt_injection", "invalid_request_error"),
    InvalidRequestError: ErrorKind("invalid_request_error", "invalid_request", "invalid_request_error"),
    RequestTimeoutError: ErrorKind("invalid_request_error", "request_timeout", "invalid_request_error"),
    RequestTooLargeError: ErrorKind("invalid_request_error", "request_too_large", "request_too_large"),
    AuthError: ErrorKind("authentication_error", "invalid_api_key", "authentication_error"),
    StoreApiError: ErrorKind("permission_error", "store_api_not_allowed", "permission_error"),
    ForeignRequestError: ErrorKind("permission_error", "origin_not_allowed", "permission_error"),
    ForbiddenError: ErrorKind("permission_error", "model_not_allowed", "permission_error"),
    RateLimitError: ErrorKind("rate_limit_error", "rate_limit_exceeded", "rate_limit_error"),
    QueueFullError: ErrorKind("rate_limit_error", "queue_full", "rate_limit_error"),
    ModelNotServedError: ErrorKind("not_found_error", "model_not_found", "not_found_error"),
    ClientGoneError: ErrorKind("client_closed_request", "client_closed_request", "api_error"),
    ModelLoadError: ErrorKind("server_error", "model_load_failed", "api_error"),
    EngineError: ErrorKind("server_error", "engine_error", "api_error"),
    ModelLoadingError: ErrorKind("service_unavailable", "model_loading", "overloaded_error"),
    InsufficientMemoryError: ErrorKind("service_unavailable", "insufficient_memory", "overloaded_error"),
    # the store and the hub, met through Ollama's /api/pull, /api/delete and /api/copy
    NotInStoreError: ErrorKind("not_found_error", "model_not_found", "not_found_error", 404),
    InvalidNameError: ErrorKind("invalid_request_error", "invalid_name", "invalid_request_error", 400),
    InUseError: ErrorKind("invalid_request_error", "model_in_use", "invalid_request_error", 409),
    DiskSpaceError: ErrorKind("server_error", "disk_full", "api_error", 507),
    ChecksumError: ErrorKind("server_error", "checksum_mismatch", "api_error", 502),
    StoreError: ErrorKind("server_error", "store_error", "api_error", 500),
    ModelNotFoundError: ErrorKind("not_found_error", "model_not_found", "not_found_error", 404),
    ModelSourceError: ErrorKind("invalid_request_error", "invalid_model", "invalid_request_error", 400),
    RemoteError: ErrorKind("server_error", "hub_error", "api_error", 502),
}


def dialect_of(path: str) -> Dialect:
    return next((d for prefix, d in DIALECTS if path.startswith(prefix)), "openai")


def _kind(exc: KennelError) -> ErrorKind | None:
    return next((v for cls, v in ERROR_TABLE.items() if isinstance(exc, cls)), None)


def status_of_error(exc: KennelError) -> int:
    """The HTTP status of a kennel error: its own, else the table's, else 400."""
    own = getattr(exc, "status_code", None)
    if own is not None:
        return int(own)
    kind = _kind(exc)
    return kind.status if kind is not None and kind.status is not None else 400


def error_response(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    retry_after: float | None = None,
    type_: str | None = None,
    dialect: Dialect = "openai",
) -> JSONResponse:
    body = error_body(status, message, param=param, code=code, type_=type_, dialect=dialect)
    headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after else None
    return JSONResponse(body, status_code=status, headers=headers)


def error_body(
    status: int,
    message: str,
    *,
    param: str | None,
    code: str | None,
    type_: str | None,
    anthropic_type: str | None = None,
    dialect: Dialect = "openai",
) -> dict[str, Any]:
    if dialect == "ollama":
        return {"error": message}
    if dialect == "anthropic":
        kind = anthropic_type or _ANTHROPIC_TYPES.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}
    return {
        "error": {
            "message": message,
            "type": type_ or _TYPES.get(status, "server_error"),
            "param": param,
            "code": code,
        }
    }


def kennel_error_body(exc: KennelError, dialect: Dialect = "openai") -> dict[str, Any]:
    """The body for ``exc``: also what a stream sends when it fails after its status line."""
    text = exc.message + (f" {exc.hint}" if exc.hint else "")
    kind = _kind(exc)
    return error_body(
        status_of_error(exc),
        text,
        param=None,
        code=kind.code if kind else None,
        type_=kind.type if kind else None,
        anthropic_type=kind.anthropic if kind else None,
        dialect=dialect,
    )


def kennel_error_response(exc: KennelError, dialect: Dialect = "openai") -> JSONResponse:
    retry = getattr(exc, "retry_after", None)
    headers = {"Retry-After": str(max(1, round(retry)))} if retry else None
    return JSONResponse(kennel_error_body(exc, dialect), status_code=status_of_error(exc), headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(KennelError)
    async def _kennel(request: Request, exc: KennelError) -> JSONResponse:
        return kennel_error_response(exc, dialect_of(request.url.path))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where, msg = validation_problem(first, drop=("body",))
        if first.get("type") == "json_invalid":  # its location is a byte offset, not a field
            where, msg = "", "The body is not valid JSON (or not UTF-8)."
        return error_response(
            400,
            f"{where}: {msg}" if where else msg,
            param=where or None,
            code="invalid_request",
            dialect=dialect_of(request.url.path),
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Starlette's own refusals (no such path, wrong method) get a stable code like kennel's
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        return error_response(
            exc.status_code, str(exc.detail), code=code, dialect=dialect_of(request.url.path)
        )

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        logging.getLogger("kennel.server").exception("internal error")
        return error_response(
            500,
            f"Internal error ({type(exc).__name__}); see the server log.",
            dialect=dialect_of(request.url.path),
        )
