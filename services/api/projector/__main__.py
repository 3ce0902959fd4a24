"""The projector's command line (see the package docstring):

python -m services.api.projector            # run the projector on its own
python -m services.api.projector --rebuild  # drop the read model, replay the whole topic
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence

from services.api.metrics import ApiMetrics
from services.api.producer import LazyProducer
from services.api.projector.consumer import run_projector
from services.api.projector.dead_letters import DeadLetters
from services.api.projector.projection import Projector
from services.api.projector.rebuild import rebuild
from services.api.store import ReadInvoices
from services.common import jsoncodec
from services.common.logging import configure_logging
from services.common.mongo import make_client
from services.common.settings import get_settings


async def _main(rebuild_only: bool) -> int:
    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    mongo = make_client(settings.mongodb_uri, app_name="qbo-sync-projector")
    producer = LazyProducer(settings.kafka_bootstrap_servers, f"{settings.kafka_client_id}-dlq")
    projector = Projector(
        ReadInvoices(mongo[settings.mongodb_database]),
        DeadLetters(producer, settings.dead_letter_topic),
        ApiMetrics(),
    )
    try:
        if rebuild_only:
            report = await rebuild(settings, projector)
            print(
                jsoncodec.dumps(
                    {
                        "rebuilt": True,
                        "partitions": report.partitions,
                        "records": report.records,
                        "outcomes": dict(report.outcomes),
                    }
                ),
                flush=True,
            )
            return 0
        task = asyncio.create_task(run_projector(settings, projector))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return 0
    finally:
        await producer.stop()
        await mongo.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.api.projector")
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help="drop the read model, replay the invoice events topic from the earliest offset, exit",
    )
    args = parser.parse_args(argv)
    sys.exit(asyncio.run(_main(args.rebuild)))


if __name__ == "__main__":
    main()
