"""JSON responses and errors of the api.

Every error is an `Error` body (`{"error": code, "message": text}`) with a fitting 4xx/5xx
status, and an unexpected exception becomes a plain 500 without internals. Bodies go through
`jsoncodec`, so money (`Decimal`) is written as exact JSON numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from services.api.models import Body, Error
from services.common import jsoncodec
from services.common.unavailable import unavailable_handlers

log = structlog.get_logger(__name__)

_CODES: Mapping[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    503: "unavailable",
}


class JSON(JSONResponse):
    """A model (`models.Body`) or plain data, written with money exact."""

    def render(self, content: Any) -> bytes:
        return jsoncodec.dumpb(content.wire() if isinstance(content, Body) else content)


class ApiError(Exception):
    """Raised by handlers to answer with an error document."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        super().__init__(message)


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", what)


def error(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    return JSON(Error(error=code, message=message), status_code=status, headers=headers)


def invalid_body(exc: ValidationError) -> ApiError:
    """A request body its model refused: 400, naming the first member at fault."""
    first = exc.errors(include_url=False)[0]
    where = str(first["loc"][0]) if first["loc"] else "body"
    return ApiError(400, "bad_request", f"{where}: {first['msg']}")


async def on_api_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error(exc.status, exc.code, exc.message, exc.headers)


async def on_http_exception(_: Request, exc: Exception) -> Response:
    # Starlette's own 404 (no route) and 405 (wrong method), in the same JSON shape.
    assert isinstance(exc, HTTPException)
    code = _CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else code
    return error(exc.status_code, code, message, exc.headers)


async def on_unexpected(request: Request, exc: Exception) -> Response:
    log.error(
        "api.unhandled_exception",
        path=request.url.path,
        method=request.method,
        exc_info=exc,
    )
    return error(500, "internal", "internal server error")


EXCEPTION_HANDLERS = {
    ApiError: on_api_error,
    HTTPException: on_http_exception,
    # MongoDB or Kafka down: 503 with Retry-After; their other errors are unexpected.
    **unavailable_handlers(on_unexpected),
    Exception: on_unexpected,
}
