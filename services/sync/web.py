"""The sync service's HTTP surface: connect/disconnect a QBO company and health checks.

Every error is a JSON body `{"error": code, "message": text}` (or a small HTML page when a
browser asks), never a stack trace. Nothing here returns a token.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from services.common import jsoncodec
from services.sync.oauth.flow import REALM_ID, ConnectRejected, OAuthFlow
from services.sync.vault import NotConnected, TokenVault

NONCE_COOKIE = "qbo_oauth_nonce"


class JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return jsoncodec.dumpb(content)


def error(status: int, code: str, message: str, request: Request | None = None) -> Response:
    if request is not None and "text/html" in request.headers.get("accept", ""):
        page = (
            f"<!doctype html><title>qbo-sync</title><h1>Could not connect QuickBooks</h1>"
            f"<p>{html.escape(message)}</p><p><code>{html.escape(code)}</code></p>"
        )
        return HTMLResponse(page, status_code=status)
    return JSON({"error": code, "message": message}, status_code=status)


def oauth_routes(flow: OAuthFlow, vault: TokenVault, secure_cookies: bool) -> list[Route]:
    async def connect(request: Request) -> Response:
        try:
            started = await flow.start(request.query_params.get("user"))
        except ConnectRejected as exc:
            return error(exc.status, exc.code, exc.reason, request)
        response = RedirectResponse(started.authorize_url, status_code=302)
        response.set_cookie(
            NONCE_COOKIE,
            started.state.nonce,
            max_age=600,
            httponly=True,
            secure=secure_cookies,
            samesite="lax",  # sent on Intuit's top-level redirect back to us
            path="/oauth",
        )
        return response

    async def callback(request: Request) -> Response:
        try:
            conn = await flow.finish(dict(request.query_params), request.cookies.get(NONCE_COOKIE))
        except ConnectRejected as exc:
            return error(exc.status, exc.code, exc.reason, request)
        body = {"connected": True, "connection": conn.public()}
        if "text/html" in request.headers.get("accept", ""):
            response: Response = HTMLResponse(
                "<!doctype html><title>qbo-sync</title><h1>QuickBooks connected</h1>"
                f"<p>Company {html.escape(conn.realm_id)} is connected for "
                f"{html.escape(conn.user_id)}.</p>"
            )
        else:
            response = JSON(body)
        response.delete_cookie(NONCE_COOKIE, path="/oauth")
        return response

    async def disconnect(request: Request) -> Response:
        realm_id = request.path_params["realm_id"]
        try:
            conn = await vault.disconnect(realm_id)
        except NotConnected:
            return error(404, "not_connected", f"realm {realm_id} is not connected")
        return JSON({"connection": conn.public()})

    async def show(request: Request) -> Response:
        realm_id = request.path_params["realm_id"]
        try:
            conn = await vault.get(realm_id)
        except NotConnected:
            return error(404, "not_connected", f"realm {realm_id} is not connected")
        return JSON({"connection": conn.public()})

    realm = "{realm_id:str}"
    return [
        Route("/oauth/connect", connect, methods=["GET"]),
        Route("/oauth/callback", callback, methods=["GET"]),
        Route(f"/connections/{realm}/disconnect", _realm_checked(disconnect), methods=["POST"]),
        Route(f"/connections/{realm}", _realm_checked(show), methods=["GET"]),
    ]


def _realm_checked(
    handler: Callable[[Request], Any],
) -> Callable[[Request], Any]:
    async def checked(request: Request) -> Response:
        if not REALM_ID.match(request.path_params["realm_id"]):
            return error(400, "bad_realm", "realm id must be a QBO company id (digits)")
        response: Response = await handler(request)
        return response

    return checked
