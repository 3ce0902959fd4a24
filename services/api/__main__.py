"""`python -m services.api`: the read API, the dashboard and the event projector, one process."""

from __future__ import annotations

import argparse
import asyncio
import sys

import uvicorn

from services.api.app import OWN_SECRETS, api_service
from services.common.credentials import InsecureConfiguration, require_own_secrets
from services.common.logging import configure_logging
from services.common.settings import get_settings


async def serve(host: str, port: int) -> None:
    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    require_own_secrets(settings, OWN_SECRETS, host)
    async with api_service(settings) as service:
        config = uvicorn.Config(
            service.web_app(),
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
        await uvicorn.Server(config).serve()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services.api")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.host, args.port))
    except InsecureConfiguration as exc:
        sys.exit(f"refusing to start: {exc}")


if __name__ == "__main__":
    main()
