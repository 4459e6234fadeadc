"""Errors as clients expect them: OpenAI's envelope ``{"error": {message, type, param, code}}``
with the status, type and code of each kennel error taken from one explicit table."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

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

# OpenAI's types per status, for errors kennel did not raise itself (validation, routing)
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
}

# kennel's errors: (envelope type, code). Clients branch on these; change them only on purpose.
ERROR_TABLE: dict[type[KennelError], tuple[str, str]] = {
    ContextLengthError: ("invalid_request_error", "context_length_exceeded"),
    PromptInjectionError: ("prompt_injection", "prompt_injection"),
    InvalidRequestError: ("invalid_request_error", "invalid_request"),
    RequestTimeoutError: ("invalid_request_error", "request_timeout"),
    RequestTooLargeError: ("invalid_request_error", "request_too_large"),
    AuthError: ("authentication_error", "invalid_api_key"),
    ForbiddenError: ("permission_error", "model_not_allowed"),
    RateLimitError: ("rate_limit_error", "rate_limit_exceeded"),
    QueueFullError: ("rate_limit_error", "queue_full"),
    ModelNotServedError: ("not_found_error", "model_not_found"),
    ClientGoneError: ("client_closed_request", "client_closed_request"),
    ModelLoadError: ("server_error", "model_load_failed"),
    EngineError: ("server_error", "engine_error"),
    ModelLoadingError: ("service_unavailable", "model_loading"),
    InsufficientMemoryError: ("service_unavailable", "insufficient_memory"),
}


def error_response(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    retry_after: float | None = None,
    type_: str | None = None,
) -> JSONResponse:
    body = error_body(status, message, param=param, code=code, type_=type_)
    headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after else None
    return JSONResponse(body, status_code=status, headers=headers)


def error_body(
    status: int, message: str, *, param: str | None, code: str | None, type_: str | None
) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": type_ or _TYPES.get(status, "server_error"),
            "param": param,
            "code": code,
        }
    }


def kennel_error_body(exc: KennelError) -> dict[str, Any]:
    """The envelope for ``exc``: also what a stream sends when it fails after its status line."""
    status = int(getattr(exc, "status_code", 400))
    text = exc.message + (f" {exc.hint}" if exc.hint else "")
    type_, code = next((v for cls, v in ERROR_TABLE.items() if isinstance(exc, cls)), (None, None))
    return error_body(status, text, param=None, code=code, type_=type_)


def kennel_error_response(exc: KennelError) -> JSONResponse:
    status = int(getattr(exc, "status_code", 400))
    retry = getattr(exc, "retry_after", None)
    headers = {"Retry-After": str(max(1, round(retry)))} if retry else None
    return JSONResponse(kennel_error_body(exc), status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(KennelError)
    async def _kennel(_: Request, exc: KennelError) -> JSONResponse:
        return kennel_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        msg = str(first.get("msg", "invalid request"))
        if first.get("type") == "json_invalid":  # its location is a byte offset, not a field
            msg, loc = "The body is not valid JSON (or not UTF-8).", []
        return error_response(
            400,
            f"{'.'.join(loc) + ': ' if loc else ''}{msg}",
            param=".".join(loc) or None,
            code="invalid_request",
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> JSONResponse:
        logging.getLogger("kennel.server").exception("internal error")
        return error_response(500, f"Internal error ({type(exc).__name__}); see the server log.")
