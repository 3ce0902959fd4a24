"""Request bodies read with limits, shared by both services' JSON endpoints.

Every endpoint that reads a body goes through `read_body` (a byte limit enforced on what
arrives, not on what Content-Length claims) and `read_json` (that, plus `jsoncodec`'s depth and
number limits). Whatever the client sends, the outcome is the parsed document or a
`BodyRejected` carrying the 4xx status to answer: never an exception that becomes a 500.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import ClientDisconnect, Request

from services.common import jsoncodec

DEFAULT_MAX_BYTES = 64 * 1024


class BodyRejected(Exception):
    """The body cannot be used: `status` (400 or 413), `code` and `message` for the answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        self.message = message
        super().__init__(message)


async def read_body(request: Request, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    too_large = BodyRejected(413, "too_large", f"the body may be at most {max_bytes} bytes")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    # Content-Length may be absent (chunked) or understated, so count what actually arrives.
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_bytes:
                raise too_large
    except ClientDisconnect:
        raise BodyRejected(400, "client_disconnected", "the body was not received") from None
    return bytes(body)


def parse_json(body: bytes, max_depth: int = jsoncodec.MAX_DEPTH) -> Any:
    try:
        return jsoncodec.loads(body, max_depth=max_depth)
    except jsoncodec.JsonRejected as exc:
        raise BodyRejected(400, "bad_json", f"the body is not usable JSON: {exc}") from None


async def read_json(
    request: Request,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = jsoncodec.MAX_DEPTH,
    empty: Any = None,
) -> Any:
    """The body as JSON; an empty (or blank) body is `empty` when given, else refused."""
    body = await read_body(request, max_bytes)
    if not body.strip():
        if empty is not None:
            return empty
        raise BodyRejected(400, "bad_json", "the body is empty; a JSON document is required")
    return parse_json(body, max_depth)
