"""`python -m bench.bare_server`: the floor for figure 5, a bare Starlette JSON endpoint.

It serves the api's own listing response (read from a file) on the same path, serialised per
request with the same exact-decimal JSON encoder, by uvicorn in its own process: everything the
api does except authentication, the database and building the page.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.common import jsoncodec


def bare_app(payload_file: Path) -> Starlette:
    payload = jsoncodec.loads(payload_file.read_bytes())

    async def invoices(_: Request) -> Response:
        return Response(jsoncodec.dumpb(payload), media_type="application/json")

    return Starlette(routes=[Route("/api/customers/{localCustomerId}/invoices", invoices)])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--payload", type=Path, required=True)
    args = parser.parse_args()
    uvicorn.run(
        bare_app(args.payload), host=args.host, port=args.port, log_config=None, access_log=False
    )


if __name__ == "__main__":
    main()
