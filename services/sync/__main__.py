"""`python -m services.sync`: the sync service.

`--role all` (default) runs the HTTP endpoints (OAuth, webhooks, mapping) and one command
consumer in one process; `web` and `worker` split them for deployments that scale them apart.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import uvicorn

from services.common.logging import configure_logging
from services.common.settings import get_settings
from services.sync.app import sync_service


async def serve(host: str, port: int, role: str) -> None:
    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    stop = asyncio.Event()
    async with sync_service(settings) as service:
        worker = (
            asyncio.create_task(service.run_worker(stop)) if role in ("all", "worker") else None
        )
        if role in ("all", "web"):
            # uvicorn owns SIGINT/SIGTERM here; when it has drained HTTP, the worker stops too.
            config = uvicorn.Config(
                service.web_app(), host=host, port=port, log_config=None, access_log=False
            )
            await uvicorn.Server(config).serve()
            stop.set()
        else:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
        if worker is not None:
            # The worker lets running commands finish (bounded) and commits only what is done;
            # anything else is redelivered, so stopping loses nothing.
            await worker


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services.sync")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--role", choices=["all", "web", "worker"], default="all")
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, args.role))


if __name__ == "__main__":
    main()
