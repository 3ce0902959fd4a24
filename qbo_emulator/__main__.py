"""``python -m qbo_emulator``: serve the emulator until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

from qbo_emulator.app import create_app
from qbo_emulator.config import EmulatorConfig
from qbo_emulator.state import EmulatorState


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qbo-emulator", description="QuickBooks Online emulator (OAuth, accounting, webhooks)"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8790)
    parser.add_argument("--realm", default=None, help="realm to seed (default: config realm)")
    parser.add_argument("--seed-customers", type=int, default=0)
    parser.add_argument("--seed-invoices-per-customer", type=int, default=0)
    parser.add_argument("--webhook-url", default=None)
    parser.add_argument(
        "--webhook-format", choices=["legacy", "cloudevents"], default="cloudevents"
    )
    parser.add_argument("--log-level", default="WARNING")
    return parser


async def _serve(state: EmulatorState, host: str, port: int) -> None:
    runner = web.AppRunner(create_app(state), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    collector = asyncio.create_task(_collect_on_a_clock())
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = runner.addresses[0][1]
        print(f"qbo-emulator listening on http://{host}:{bound_port}", flush=True)
        await stop.wait()
    finally:
        collector.cancel()
        await runner.cleanup()


async def _collect_on_a_clock(every_s: float = 30.0) -> None:
    """Full garbage collections every `every_s`, not on each quarter of heap growth: seeding and
    paging through 100,000 invoices grows the heap in such steps, and each full collection
    stopped every request for a good part of a second (benchmarks measure latency through here)."""
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, 2**30)
    while True:
        await asyncio.sleep(every_s)
        gc.collect()


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    config = EmulatorConfig.from_env()
    if args.webhook_url:
        config.webhook_url = args.webhook_url
    state = EmulatorState(config)
    state.webhooks.settings.format = args.webhook_format
    if args.seed_customers:
        state.seed(
            args.realm or config.default_realm_id,
            args.seed_customers,
            args.seed_invoices_per_customer,
        )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(state, args.host, args.port))


if __name__ == "__main__":
    main()
