"""`python -m services.sync`: run the sync service's HTTP server."""

from __future__ import annotations

import argparse
import asyncio

import uvicorn

from services.common.logging import configure_logging
from services.common.settings import get_settings
from services.sync.app import sync_service


async def serve(host: str, port: int) -> None:
    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    async with sync_service(settings) as service:
        config = uvicorn.Config(
            service.web_app(), host=host, port=port, log_config=None, access_log=False
        )
        await uvicorn.Server(config).serve()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services.sync")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
