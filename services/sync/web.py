"""The sync service's HTTP surface: connect/disconnect a QBO company, map customers.

Each route carries its authorization rule (`services.common.access`).

Every error is a JSON body `{"error": code, "message": text}` (or a small HTML page when a
browser asks), never a stack trace. Nothing here returns a token.
"""

from __future__ import annotations

import dataclasses
import html
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from services.common import jsoncodec
from services.common.access import Guard, Rule
from services.common.connect_links import USER_ID, ConnectLinks, LinkRejected
from services.common.http_errors import error_response
from services.common.httpbody import BodyRejected, read_json
from services.common.messages import MapCustomer
from services.common.schemas import MessageInvalid, default_schemas
from services.sync import handlers
from services.sync.handlers import CommandRejected, Dependencies
from services.sync.oauth.flow import REALM_ID, ConnectRejected, OAuthFlow
from services.sync.quickbooks.errors import QboError, ReauthRequired
from services.sync.store import RejectedInvoices
from services.sync.vault import NotConnected, TokenVault

NONCE_COOKIE = "qbo_oauth_nonce"
# A mapping body is a realm id and a name or id: a few hundred bytes.
MAX_MAPPING_BODY_BYTES = 16 * 1024

log = structlog.get_logger(__name__)


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
    return error_response(status, code, message)


async def internal_error(request: Request, exc: Exception) -> Response:
    """Anything unexpected: logged here, answered as JSON without internals."""
    log.error(
        "sync.unhandled_exception", path=request.url.path, method=request.method, exc_info=exc
    )
    return JSON({"error": "internal", "message": "internal server error"}, status_code=500)


def oauth_routes(
    flow: OAuthFlow,
    vault: TokenVault,
    links: ConnectLinks,
    guard: Guard,
    *,
    public_url: str,
    secure_cookies: bool,
) -> list[Route]:
    """Connect links, the OAuth round trip with Intuit, and the connections' status."""
    connecting = Connecting(flow, links, public_url=public_url, secure_cookies=secure_cookies)
    connections = Connections(vault)
    realm = "{realm_id:str}"
    return [
        Route("/connect-links", guard(Rule.SERVICE, connecting.create_link), methods=["POST"]),
        Route("/oauth/connect", guard(Rule.CONNECT_LINK, connecting.connect), methods=["GET"]),
        Route("/oauth/callback", guard(Rule.OAUTH_STATE, connecting.callback), methods=["GET"]),
        Route(
            f"/connections/{realm}/disconnect",
            guard(Rule.SERVICE, _realm_checked(connections.disconnect)),
            methods=["POST"],
        ),
        Route(
            f"/connections/{realm}",
            guard(Rule.SERVICE, _realm_checked(connections.show)),
            methods=["GET"],
        ),
    ]


@dataclasses.dataclass(frozen=True)
class Connecting:
    """An app user connects a company: a connect link signed for them, then Intuit's consent
    page and its callback (`OAuthFlow`, signed single-use state bound to a browser nonce)."""

    flow: OAuthFlow
    links: ConnectLinks
    public_url: str
    secure_cookies: bool

    async def create_link(self, request: Request) -> Response:
        body = await _json_object(request)
        if isinstance(body, Response):
            return body
        user_id = body.get("user_id")
        if not isinstance(user_id, str) or not USER_ID.match(user_id):
            return error(400, "bad_user", "user_id must be 1-128 of A-Z a-z 0-9 . _ : @ -")
        link = self.links.sign(user_id)
        return JSON(
            {
                "user_id": user_id,
                "connect_url": link.url(self.public_url),
                "expires_at": link.expires_at,
            },
            status_code=201,
        )

    async def connect(self, request: Request) -> Response:
        token = request.query_params.get("link")
        if not token:
            return error(
                401,
                "link_required",
                "connecting starts from a connect link signed for the app user; "
                "ask the app for a new one",
                request,
            )
        try:
            user_id = self.links.verify(token)
        except LinkRejected as exc:
            return error(401, "bad_link", exc.reason, request)
        try:
            started = await self.flow.start(user_id)
        except ConnectRejected as exc:
            return error(exc.status, exc.code, exc.reason, request)
        response = RedirectResponse(started.authorize_url, status_code=302)
        response.headers["Referrer-Policy"] = "no-referrer"  # the link is a credential for a while
        response.set_cookie(
            NONCE_COOKIE,
            started.state.nonce,
            max_age=600,
            httponly=True,
            secure=self.secure_cookies,
            samesite="lax",  # sent on Intuit's top-level redirect back to us
            path="/oauth",
        )
        return response

    async def callback(self, request: Request) -> Response:
        try:
            conn = await self.flow.finish(
                dict(request.query_params), request.cookies.get(NONCE_COOKIE)
            )
        except ConnectRejected as exc:
            return error(exc.status, exc.code, exc.reason, request)
        if "text/html" in request.headers.get("accept", ""):
            response: Response = HTMLResponse(
                "<!doctype html><title>qbo-sync</title><h1>QuickBooks connected</h1>"
                f"<p>Company {html.escape(conn.realm_id)} is connected for "
                f"{html.escape(conn.user_id)}.</p>"
            )
        else:
            response = JSON({"connected": True, "connection": conn.public()})
        response.delete_cookie(NONCE_COOKIE, path="/oauth")
        return response


@dataclasses.dataclass(frozen=True)
class Connections:
    """A connected company's status, and disconnecting it (tokens are never shown)."""

    vault: TokenVault

    async def disconnect(self, request: Request) -> Response:
        realm_id = request.path_params["realm_id"]
        try:
            conn = await self.vault.disconnect(realm_id)
        except NotConnected:
            return error(404, "not_connected", f"realm {realm_id} is not connected")
        return JSON({"connection": conn.public()})

    async def show(self, request: Request) -> Response:
        realm_id = request.path_params["realm_id"]
        try:
            conn = await self.vault.get(realm_id)
        except NotConnected:
            return error(404, "not_connected", f"realm {realm_id} is not connected")
        return JSON({"connection": conn.public()})


async def _json_object(request: Request) -> dict[str, Any] | Response:
    """The request's JSON object body (a few hundred bytes: a realm and a name, or a user id),
    read with the shared limits, or the 4xx to answer."""
    try:
        body = await read_json(request, max_bytes=MAX_MAPPING_BODY_BYTES)
    except BodyRejected as exc:
        return error(exc.status, exc.code, exc.message)
    if not isinstance(body, dict):
        return error(400, "bad_json", "the body must be a JSON object")
    return body


def _realm_checked(
    handler: Callable[[Request], Any],
) -> Callable[[Request], Any]:
    async def checked(request: Request) -> Response:
        if not REALM_ID.match(request.path_params["realm_id"]):
            return error(400, "bad_realm", "realm id must be a QBO company id (digits)")
        response: Response = await handler(request)
        return response

    return checked


def mapping_routes(deps: Dependencies, guard: Guard) -> list[Route]:
    """`POST /customers/{localCustomerId}/mapping`: map synchronously and say what happened.

    Body: `{"realm_id": "...", "display_name": "..."}` or `{"realm_id": "...",
    "qbo_customer_id": "..."}`. Ambiguous or missing matches come back with the candidates.
    """

    async def map_customer(request: Request) -> Response:
        local_id = request.path_params["local_customer_id"]
        body = await _json_object(request)
        if isinstance(body, Response):
            return body
        try:
            command = MapCustomer(
                realm_id=str(body.get("realm_id", "")),
                issued_by="api",
                local_customer_id=local_id,
                display_name=body.get("display_name"),
                qbo_customer_id=body.get("qbo_customer_id"),
            )
            default_schemas().validate_command(command.to_dict())
        except (MessageInvalid, TypeError) as exc:
            return error(400, "bad_request", str(exc))
        try:
            mapping = await handlers.map_customer(command, deps)
        except CommandRejected as exc:
            status = 409 if exc.code == "ambiguous" else 404
            return JSON({"error": exc.code, "message": exc.reason, **exc.details}, status)
        except ReauthRequired as exc:
            return error(409, "needs_reauth", str(exc))
        except NotConnected as exc:
            return error(404, "not_connected", str(exc))
        except QboError as exc:
            return error(502, "qbo_unavailable", f"QuickBooks did not answer: {exc.message}")
        return JSON({"mapping": dataclasses.asdict(mapping)})

    return [
        Route(
            "/customers/{local_customer_id:str}/mapping",
            guard(Rule.SERVICE, map_customer),
            methods=["POST", "PUT"],
        ),
    ]


class QueryRejected(ValueError):
    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(message)


def rejected_query(params: Mapping[str, str]) -> tuple[str | None, int]:
    """`realm_id` and `limit` of `GET /rejected-invoices`, or `QueryRejected` (a 400)."""
    realm_id = params.get("realm_id")
    if realm_id is not None and not REALM_ID.match(realm_id):
        raise QueryRejected("bad_realm", "realm id must be a QBO company id (digits)")
    limit_text = params.get("limit", "100")
    # Length first: int() of thousands of digits is refused by Python itself.
    if not (len(limit_text) <= 4 and limit_text.isascii() and limit_text.isdigit()):
        raise QueryRejected("bad_limit", "limit must be an integer from 1 to 1000")
    limit = int(limit_text)
    if not 1 <= limit <= 1000:
        raise QueryRejected("bad_limit", "limit must be an integer from 1 to 1000")
    return realm_id, limit


def rejected_invoice_routes(rejected: RejectedInvoices) -> list[Route]:
    """`GET /rejected-invoices[?realm_id=…&limit=…]`: the invoices QBO sent that could not be
    stored, newest first, with the reason and Intuit's JSON, for an operator to fix in QBO."""

    async def list_rejected(request: Request) -> Response:
        try:
            realm_id, limit = rejected_query(request.query_params)
        except QueryRejected as exc:
            return error(400, exc.code, exc.message)
        docs = await rejected.list(realm_id, limit)
        return JSON(
            {
                "rejected_invoices": [
                    {
                        "realm_id": d.get("realm_id"),
                        "invoice_id": d.get("invoice_id"),
                        "reason": d.get("reason"),
                        "source": d.get("source"),
                        "command_id": d.get("command_id"),
                        "first_seen_at": d.get("first_seen_at"),
                        "last_seen_at": d.get("last_seen_at"),
                        "times_seen": d.get("times_seen"),
                        "raw_json": d.get("raw_json"),
                        "raw_truncated": bool(d.get("raw_truncated")),
                    }
                    for d in docs
                ]
            }
        )

    return [Route("/rejected-invoices", list_rejected, methods=["GET"])]
