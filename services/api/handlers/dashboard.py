"""The dashboard: one HTML page, its script and its style sheet, served as files."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from services.api.responses import not_found

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
_ASSETS: Mapping[str, str] = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
# The page loads only its own script and style sheet and talks only to this origin.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


async def page(_: Request) -> Response:
    return FileResponse(
        STATIC_DIR / "index.html", media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS
    )


async def asset(request: Request) -> Response:
    name = str(request.path_params["asset"])
    media_type = _ASSETS.get(name)
    if media_type is None:
        raise not_found(f"no asset {name}")
    return FileResponse(STATIC_DIR / name, media_type=media_type, headers=_PAGE_HEADERS)
