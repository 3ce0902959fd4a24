"""While MongoDB or Kafka does not answer, both services answer quickly with a 503 JSON body and
Retry-After, never a slow or plain-text 500. MongoDB is reached through a TCP relay that can be
frozen (connections stay open, nothing comes back: a stopped process) or point nowhere."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from services.common.mongo import Document
from services.common.settings import Settings
from services.sync.app import sync_service
from tests.api_support import REALM, running_api, seed_mapping
from tests.integration.conftest import SYNC_AUTH
from tests.support import bound_socket, serve_asgi

pytestmark = pytest.mark.integration

DEV_AUTH = {"Authorization": "Bearer dev-token"}  # the token a local api accepts
REQUEST_TIMEOUT_S = 1.0
# The answer may take the request timeout plus scheduling slack on a busy machine, never more.
QUICK_S = REQUEST_TIMEOUT_S + 2.0


class FreezableRelay:
    """Forwards TCP connections to `target`; `freeze()` stops passing bytes either way while
    keeping every connection open, as a stopped server process would."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> FreezableRelay:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        for task in self._tasks:
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Frozen inside the block; flowing again after it, so clients can close cleanly."""
        self._flowing.clear()
        try:
            yield
        finally:
            self._flowing.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        self._writers += [writer, upstream_writer]
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await source.read(65536):
                await self._flowing.wait()
                sink.write(data)
                await sink.drain()
        sink.close()


@pytest.fixture
async def relay(settings: Settings) -> AsyncIterator[FreezableRelay]:
    target = urlsplit(settings.mongodb_uri)
    async with FreezableRelay(target.hostname or "127.0.0.1", target.port or 27017) as running:
        yield running


def through(settings: Settings, relay: FreezableRelay) -> Settings:
    return settings.model_copy(
        update={
            "mongodb_uri": f"mongodb://127.0.0.1:{relay.port}/?directConnection=true",
            "request_timeout_s": REQUEST_TIMEOUT_S,
        }
    )


def nowhere() -> int:
    sock = bound_socket()  # a loopback port nothing listens on once closed
    port = int(sock.getsockname()[1])
    sock.close()
    return port


async def timed(request: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await request
    return response, time.monotonic() - started


def assert_unavailable(response: httpx.Response, elapsed_s: float) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"] == "unavailable"
    assert int(response.headers["retry-after"]) > 0
    assert elapsed_s < QUICK_S, f"answered after {elapsed_s:.1f} s"


async def test_the_api_answers_503_quickly_while_mongodb_is_frozen(
    settings: Settings, relay: FreezableRelay, mongo_db: AsyncDatabase[Document]
) -> None:
    await seed_mapping(mongo_db, "cust-42")
    async with running_api(through(settings, relay), run_projector=False) as api:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as client:
            path = "/api/customers/cust-42/invoices"
            ok = await client.get(path, headers=DEV_AUTH)
            assert ok.status_code == 200, ok.text
            with relay.frozen():
                for request in (
                    client.get(path, headers=DEV_AUTH),
                    client.post("/api/customers/cust-42/refreshInvoices", headers=DEV_AUTH),
                ):
                    assert_unavailable(*await timed(request))


async def test_the_api_answers_503_quickly_when_mongodb_or_kafka_cannot_be_reached(
    settings: Settings, mongo_db: AsyncDatabase[Document]
) -> None:
    await seed_mapping(mongo_db, "cust-42")
    no_mongo = settings.model_copy(
        update={
            "mongodb_uri": f"mongodb://127.0.0.1:{nowhere()}/",
            "request_timeout_s": REQUEST_TIMEOUT_S,
        }
    )
    async with running_api(no_mongo, run_projector=False) as api:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as client:
            get = client.get("/api/customers/cust-42/invoices", headers=DEV_AUTH)
            assert_unavailable(*await timed(get))

    no_kafka = settings.model_copy(
        update={"kafka_bootstrap_servers": f"127.0.0.1:{nowhere()}", "request_timeout_s": 1.0}
    )
    async with running_api(no_kafka, run_projector=False) as api:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as client:
            post = client.post("/api/customers/cust-42/refreshInvoices", headers=DEV_AUTH)
            assert_unavailable(*await timed(post))


async def test_the_sync_service_answers_503_json_quickly_while_mongodb_is_frozen(
    settings: Settings, relay: FreezableRelay
) -> None:
    async with sync_service(through(settings, relay)) as service:
        sock = bound_socket()
        async with serve_asgi(service.web_app(), sock) as base_url:
            async with httpx.AsyncClient(
                base_url=base_url, timeout=60, headers=SYNC_AUTH
            ) as client:
                missing = await client.get(f"/connections/{REALM}")
                assert missing.status_code == 404, missing.text  # MongoDB answers
                link = await client.post("/connect-links", json={"user_id": "alice"})
                assert link.status_code == 201, link.text
                # The link names sync's public URL; this test serves sync elsewhere.
                connect = urlsplit(link.json()["connect_url"])
                connect_url = f"{connect.path}?{connect.query}"
                with relay.frozen():
                    for request in (
                        client.get(f"/connections/{REALM}"),
                        client.get(connect_url),
                        client.post(
                            "/customers/cust-1/mapping",
                            json={"realm_id": REALM, "display_name": "Acme"},
                        ),
                    ):
                        assert_unavailable(*await timed(request))
                    # The metrics still answer, quickly: the outbox age is unknown, not a 503.
                    scraped, elapsed_s = await timed(client.get("/metrics"))
                    assert scraped.status_code == 200, scraped.text
                    assert "qbo_sync_outbox_oldest_age_seconds NaN" in scraped.text.splitlines()
                    assert elapsed_s < QUICK_S, f"answered after {elapsed_s:.1f} s"
