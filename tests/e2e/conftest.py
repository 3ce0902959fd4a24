"""End-to-end fixtures: a real headless Chromium (Debian's, driven by Playwright) and, for the
full-stack tests, the emulator, the sync service and the api as separate processes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright

from services.common.settings import Settings
from tests.infra import ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_chromium() -> None:
    # Never `playwright install`: the browser comes from Debian's packages (see .ci/run).
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)",
            pytrace=False,
        )


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    require_chromium()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    opened = await context.new_page()
    try:
        yield opened
    finally:
        await context.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Process:
    name: str
    process: asyncio.subprocess.Process
    log: Path

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.name} (last {lines} lines) ---\n" + "\n".join(text.splitlines()[-lines:])


@dataclass
class Stack:
    """The emulator, the sync service and the api, each in its own process."""

    emulator_url: str
    sync_url: str
    api_url: str
    settings: Settings
    processes: list[Process] = field(default_factory=list)

    def logs(self) -> str:
        return "\n".join(p.tail() for p in self.processes)


async def spawn(name: str, args: list[str], env: Mapping[str, str], logs: Path) -> Process:
    log = logs / f"{name}.log"
    handle = log.open("wb")
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-u", "-m", *args, cwd=ROOT, env=dict(env), stdout=handle, stderr=handle
        )
    finally:
        handle.close()  # the child keeps its own descriptor
    return Process(name, process, log)


async def wait_http(url: str, process: Process, within_s: float = 60.0) -> None:
    async with httpx.AsyncClient(timeout=2) as client:
        async with asyncio.timeout(within_s):
            while True:
                if process.process.returncode is not None:
                    raise RuntimeError(f"{process.name} exited early\n{process.tail()}")
                try:
                    if (await client.get(url)).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)


async def stop(process: Process) -> None:
    if process.process.returncode is not None:
        return
    process.process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.process.wait(), 20)
    except TimeoutError:
        process.process.kill()
        await process.process.wait()


def stack_env(settings: Settings, emulator_url: str, sync_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "MONGODB_URI": settings.mongodb_uri,
        "MONGODB_DATABASE": settings.mongodb_database,
        "COMMANDS_TOPIC": settings.commands_topic,
        "INVOICE_EVENTS_TOPIC": settings.invoice_events_topic,
        "DEAD_LETTER_TOPIC": settings.dead_letter_topic,
        "COMMANDS_PARTITIONS": str(settings.commands_partitions),
        "EVENTS_PARTITIONS": str(settings.events_partitions),
        "SYNC_CONSUMER_GROUP": settings.sync_consumer_group,
        "PROJECTOR_CONSUMER_GROUP": settings.projector_consumer_group,
        "QBO_API_BASE_URL": emulator_url,
        "QBO_OAUTH_AUTHORIZE_URL": f"{emulator_url}/connect/oauth2",
        "QBO_OAUTH_TOKEN_URL": f"{emulator_url}/oauth2/v1/tokens/bearer",
        "QBO_OAUTH_REVOKE_URL": f"{emulator_url}/oauth2/v1/tokens/revoke",
        "QBO_REDIRECT_URI": f"{sync_url}/oauth/callback",
        "SYNC_PUBLIC_URL": sync_url,
        "ENVIRONMENT": "local",
        "API_TOKENS": "",
        "LOG_LEVEL": "INFO",
        "LOG_JSON": "true",
    }


@pytest.fixture
async def stack(settings: Settings, tmp_path: Path) -> AsyncIterator[Stack]:
    """The whole system as `make run` starts it, on free ports, with this test's topics and
    database. Process logs are in the test's tmp_path and shown when start-up fails."""
    emulator_port, sync_port, api_port = free_port(), free_port(), free_port()
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    sync_url = f"http://127.0.0.1:{sync_port}"
    api_url = f"http://127.0.0.1:{api_port}"
    env = stack_env(settings, emulator_url, sync_url)
    running = Stack(emulator_url, sync_url, api_url, settings)
    try:
        emulator = await spawn(
            "emulator",
            ["qbo_emulator", "--host", "127.0.0.1", "--port", str(emulator_port)],
            env,
            tmp_path,
        )
        running.processes.append(emulator)
        await wait_http(f"{emulator_url}/_emulator/health", emulator)
        sync = await spawn(
            "sync",
            ["services.sync", "--host", "127.0.0.1", "--port", str(sync_port)],
            env,
            tmp_path,
        )
        running.processes.append(sync)
        api = await spawn(
            "api", ["services.api", "--host", "127.0.0.1", "--port", str(api_port)], env, tmp_path
        )
        running.processes.append(api)
        await wait_http(f"{sync_url}/healthz", sync)
        await wait_http(f"{api_url}/readyz", api)
        yield running
    finally:
        for process in reversed(running.processes):
            await stop(process)
