"""Benchmark-scale seeding, process start-up and configuration plumbing.

Timings are printed (run with ``-s`` to see them), not asserted: CI machines
vary too much for a wall-clock assertion to mean anything.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import aiohttp
from aiohttp import web

from qbo_emulator.app import STATE_KEY, create_app
from qbo_emulator.config import EmulatorConfig
from qbo_emulator.state import EmulatorState
from qbo_emulator.testing import RunningEmulator

from .helpers import REALM, admin_post, run_query


async def test_seed_100k_invoices_over_http(
    emu: RunningEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    started = time.perf_counter()
    status, body = await admin_post(
        session,
        emu,
        f"/realms/{REALM}/seed",
        {"customers": 1000, "invoices_per_customer": 100, "customer_names": ["O'Brien"]},
    )
    elapsed = time.perf_counter() - started
    print(f"\nseeded 1,000 customers + 100,000 invoices over HTTP in {elapsed:.3f} s")
    assert status == 200
    assert body == {"customers": 1000, "invoices": 100_000}

    _, counted = await run_query(session, emu, token, "select count(*) from Invoice")
    assert counted["QueryResponse"]["totalCount"] == 100_000
    started = time.perf_counter()
    _, last_page = await run_query(
        session, emu, token, "select * from Invoice startposition 99001 maxresults 1000"
    )
    print(f"last page of 1,000 invoices served in {time.perf_counter() - started:.3f} s")
    invoices = last_page["QueryResponse"]["Invoice"]
    assert (invoices[0]["Id"], invoices[-1]["Id"]) == ("99001", "100000")
    _, one_customer = await run_query(
        session, emu, token, "select * from Invoice where CustomerRef = '1' maxresults 1000"
    )
    assert len(one_customer["QueryResponse"]["Invoice"]) == 100
    assert one_customer["QueryResponse"]["Invoice"][0]["CustomerRef"]["name"] == "O'Brien"
    customer = emu.state.get_customer(REALM, "1")
    assert customer["Balance"] == sum(
        i["Balance"] for i in one_customer["QueryResponse"]["Invoice"]
    )


def test_seed_names_are_made_unique() -> None:
    state = EmulatorState()
    state.seed(REALM, 3, 0, customer_names=["Same", "same", "Same"])
    names = [state.get_customer(REALM, str(i))["DisplayName"] for i in (1, 2, 3)]
    assert names == ["Same", "same (2)", "Same (3)"]


async def test_process_starts_and_prints_ready_line() -> None:
    started = time.perf_counter()
    env = {**os.environ, "QBO_EMULATOR_THROTTLE_PER_MINUTE": "42"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "qbo_emulator",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 10)).decode()
        elapsed = time.perf_counter() - started
        print(f"\nprocess ready in {elapsed:.3f} s: {line.strip()}")
        assert line.startswith("qbo-emulator listening on http://127.0.0.1:")
        base_url = line.split(" on ", 1)[1].strip()
        async with aiohttp.ClientSession() as client:
            async with client.get(base_url + "/_emulator/health") as response:
                assert response.status == 200
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0


async def test_process_seeds_from_the_command_line() -> None:
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "qbo_emulator",
        "--port",
        "0",
        "--seed-customers",
        "1000",
        "--seed-invoices-per-customer",
        "100",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        print(
            f"\nprocess seeded 100,000 invoices and was ready in "
            f"{time.perf_counter() - started:.3f} s"
        )
        base_url = line.split(" on ", 1)[1].strip()
        async with aiohttp.ClientSession() as client:
            async with client.get(base_url + "/_emulator/stats") as response:
                stats = await response.json()
        assert stats["books"][EmulatorConfig().default_realm_id] == {
            "customers": 1000,
            "invoices": 100_000,
        }
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0


def test_config_from_env() -> None:
    config = EmulatorConfig.from_env(
        {
            "QBO_EMULATOR_CLIENT_ID": "cid",
            "QBO_EMULATOR_THROTTLE_PER_MINUTE": "50",
            "QBO_EMULATOR_ROTATE_REFRESH_TOKENS": "false",
            "QBO_EMULATOR_WEBHOOK_URL": "http://127.0.0.1:9/hooks",
            "UNRELATED": "x",
        }
    )
    assert config.client_id == "cid"
    assert config.throttle_per_minute == 50
    assert config.rotate_refresh_tokens is False
    assert config.webhook_url == "http://127.0.0.1:9/hooks"
    assert config.client_secret == "emulator-client-secret"
    assert config.refresh_token_ttl_s == 8_640_000
    assert config.refresh_token_max_lifetime_s == 157_680_000


def test_create_app_wires_state_and_config() -> None:
    app = create_app(config=EmulatorConfig(throttle_concurrency=3))
    assert isinstance(app, web.Application)
    state = app[STATE_KEY]
    assert state.throttle.concurrency == 3
    existing = EmulatorState()
    app = create_app(existing, EmulatorConfig(client_id="other"))
    assert app[STATE_KEY] is existing
    assert existing.config.client_id == "other"
    assert "other" in existing.tokens.clients
