"""`python -m services.api`: the read API, the dashboard and the event projector, one process.

If the projector task ends while the api still serves, events are no longer projected: the
process stops and exits non-zero so that it is restarted (docs/design.md invariant 9), rather than
answering from a read model that silently stopped moving.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import structlog
import uvicorn

from services.api.app import OWN_SECRETS, api_service
from services.common import tracing
from services.common.credentials import InsecureConfiguration, require_own_secrets
from services.common.gcpolicy import full_collections_on_a_clock
from services.common.logging import configure_logging
from services.common.settings import get_settings
from services.common.shutdown import stop_on_signals

log = structlog.get_logger(__name__)

EXIT_PROJECTOR_DIED = 3


async def serve(host: str, port: int) -> int:
    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    tracing.configure_from_settings(settings, "qbo-sync-api")  # off unless configured
    require_own_secrets(settings, OWN_SECRETS, host)
    async with (
        full_collections_on_a_clock(settings.gc_full_collection_interval_s),
        api_service(settings) as service,
    ):
        config = uvicorn.Config(
            service.web_app(),
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
        server = uvicorn.Server(config)
        with stop_on_signals(lambda: setattr(server, "should_exit", True)):
            return await _serve_until_stopped(server, service.projector_task)


async def _serve_until_stopped(server: uvicorn.Server, projector: asyncio.Task[None] | None) -> int:
    """Serve until asked to stop (0), or until the projector dies (EXIT_PROJECTOR_DIED)."""
    web = asyncio.create_task(server.serve())
    done, _ = await asyncio.wait(
        {t for t in (web, projector) if t is not None}, return_when=asyncio.FIRST_COMPLETED
    )
    if projector is None or projector not in done:
        await web
        return 0
    error = projector.exception() if not projector.cancelled() else None
    log.error("projector.died", error=repr(error), exc_info=error)
    server.should_exit = True
    await web
    return EXIT_PROJECTOR_DIED


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services.api")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    try:
        code = asyncio.run(serve(args.host, args.port))
    except InsecureConfiguration as exc:
        sys.exit(f"refusing to start: {exc}")
    sys.exit(code)


if __name__ == "__main__":
    main()
