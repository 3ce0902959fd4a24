"""The error document both services answer with: `{"error": code, "message": text}` (the api's
`models.Error` describes it in the OpenAPI document)."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import JSONResponse, Response


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)
