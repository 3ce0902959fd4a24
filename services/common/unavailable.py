"""HTTP answers while MongoDB or Kafka does not answer: a quick 503 with Retry-After, not a 500.

A request that finds a dependency down has done nothing wrong and may succeed shortly, so
clients (and load balancers) are told to retry rather than shown an internal error. Request
paths bound their MongoDB operations (`REQUEST_TIMEOUT_S` in the settings: a per-operation limit
on the api's request client, a per-request one here in `RequestDeadline`), so the answer comes
in seconds even when the server is frozen rather than gone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pymongo
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError
from pymongo.errors import ConnectionFailure, PyMongoError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from services.common.http_errors import error_response

RETRY_AFTER_S = "5"

ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]


def dependency_down(exc: BaseException) -> bool:
    """Whether `exc` says MongoDB or Kafka could not be reached or did not answer in time."""
    if isinstance(exc, ConnectionFailure):  # server selection, network errors and timeouts
        return True
    if isinstance(exc, PyMongoError):
        return exc.timeout  # an operation that ran out of its time limit
    if isinstance(exc, KafkaConnectionError | KafkaTimeoutError):
        return True
    return isinstance(exc, KafkaError) and exc.retriable


def unavailable(message: str = "a service this request needs is unavailable; retry") -> Response:
    return error_response(503, "unavailable", message, {"Retry-After": RETRY_AFTER_S})


def unavailable_handlers(otherwise: ExceptionHandler) -> dict[type[Exception], ExceptionHandler]:
    """Starlette exception handlers: 503 for a dependency that is down, `otherwise` for the rest
    of the MongoDB and Kafka errors (they are bugs or refusals, not outages)."""

    async def handle(request: Request, exc: Exception) -> Response:
        if dependency_down(exc):
            return unavailable()
        return await otherwise(request, exc)

    return {PyMongoError: handle, KafkaError: handle}


class RequestDeadline:
    """ASGI middleware: every MongoDB operation of a request shares one time limit.

    PyMongo's client-side operation timeout covers server selection and the wait for the
    reply, so an unreachable or frozen server costs a request `seconds` at most; the error it
    raises is answered 503 by `unavailable_handlers`.
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self._app = app
        self._seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        with pymongo.timeout(self._seconds):
            await self._app(scope, receive, send)
