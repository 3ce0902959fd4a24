"""`python -m services.sync`: the sync service.

`--role all` (default) runs the HTTP endpoints (OAuth, webhooks, mapping) and one command
consumer in one process; `web` and `worker` split them for deployments that scale them apart.

A process whose command consumer has died must not stay up looking healthy (docs/design.md
invariant 9): its partitions would wait for ever. So when the consumer ends on its own, the
process stops serving HTTP and exits non-zero, and Kubernetes starts a new one.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import structlog
import uvicorn

from services.common import tracing
from services.common.credentials import InsecureConfiguration, require_own_secrets
from services.common.gcpolicy import full_collections_on_a_clock
from services.common.logging import configure_logging
from services.common.settings import get_settings
from services.common.shutdown import stop_on_signals
from services.sync.app import OWN_SECRETS, sync_service

log = structlog.get_logger(__name__)

EXIT_WORKER_DIED = 3


async def supervise(
    worker: asyncio.Task[None] | None, server: uvicorn.Server | None, stop: asyncio.Event
) -> int:
    """Run until both parts stop; the exit code is non-zero when the worker ended unasked."""
    web = asyncio.create_task(server.serve()) if server is not None else None
    tasks: set[asyncio.Task[None]] = {t for t in (worker, web) if t is not None}
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if worker is not None and worker in done and not stop.is_set():
        error = worker.exception() if not worker.cancelled() else None
        log.error(
            "worker.died",
            error=f"{type(error).__name__}: {error}" if error else "ended on its own",
            exc_info=error,
        )
        code = EXIT_WORKER_DIED
        if server is not None:
            server.should_exit = True
    # Once HTTP is drained (a stop signal, or the worker's death), the worker stops too.
    stop.set()
    if web is not None:
        await web
    if worker is not None and worker not in done:
        # The worker lets running commands finish (bounded) and commits only what is done;
        # anything else is redelivered, so stopping loses nothing.
        try:
            await worker
        except Exception:
            log.exception("worker.failed_while_stopping")
            code = code or EXIT_WORKER_DIED
    return code


async def serve(host: str, port: int, role: str) -> int:
    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    tracing.configure_from_settings(settings, "qbo-sync-sync")  # off unless configured
    require_own_secrets(settings, OWN_SECRETS, host if role in ("all", "web") else None)
    stop = asyncio.Event()
    async with (
        full_collections_on_a_clock(settings.gc_full_collection_interval_s),
        sync_service(settings) as service,
    ):
        worker = service.start_worker(stop) if role in ("all", "worker") else None
        server = None
        if role in ("all", "web"):
            config = uvicorn.Config(
                service.web_app(), host=host, port=port, log_config=None, access_log=False
            )
            server = uvicorn.Server(config)

        def stop_requested() -> None:
            stop.set()
            if server is not None:
                server.should_exit = True

        with stop_on_signals(stop_requested):
            return await supervise(worker, server, stop)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services.sync")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--role", choices=["all", "web", "worker"], default="all")
    args = parser.parse_args()
    try:
        code = asyncio.run(serve(args.host, args.port, args.role))
    except InsecureConfiguration as exc:
        sys.exit(f"refusing to start: {exc}")
    sys.exit(code)


if __name__ == "__main__":
    main()
