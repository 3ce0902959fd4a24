"""`python -m bench.loadgen`: a closed-loop HTTP load generator, run as its own process.

N connections each send a request, wait for the answer, and send the next, for a fixed time
(and never more than `--max-requests`): the rate it reports is what the server sustains at that
concurrency, and the latencies are per request. It only ever targets loopback addresses.
Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

import aiohttp

from bench.stats import percentile

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class LoadResult:
    url: str
    connections: int
    seconds: float
    requests: int
    errors: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    response_bytes: int


async def hammer(
    url: str,
    headers: Mapping[str, str],
    connections: int,
    seconds: float,
    warmup_s: float,
    max_requests: int,
) -> LoadResult:
    if urlsplit(url).hostname not in LOOPBACK:
        raise SystemExit(f"refusing to load {url}: only loopback targets are allowed")
    latencies: list[float] = []
    errors = 0
    size = 0
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def one() -> tuple[float, bool, int]:
            began = time.perf_counter()
            try:
                async with http.get(url, headers=dict(headers)) as response:
                    body = await response.read()
                    ok = response.status == 200
            except (aiohttp.ClientError, TimeoutError):
                return time.perf_counter() - began, False, 0
            return time.perf_counter() - began, ok, len(body)

        async def loop(until: float, record: bool) -> None:
            nonlocal errors, size
            while time.perf_counter() < until and len(latencies) + errors < max_requests:
                elapsed, ok, length = await one()
                if not record:
                    continue
                if ok:
                    latencies.append(elapsed)
                    size = length
                else:
                    errors += 1

        warm_until = time.perf_counter() + warmup_s
        await asyncio.gather(*(loop(warm_until, False) for _ in range(connections)))
        began = time.perf_counter()
        await asyncio.gather(*(loop(began + seconds, True) for _ in range(connections)))
        measured = time.perf_counter() - began
    return LoadResult(
        url=url,
        connections=connections,
        seconds=measured,
        requests=len(latencies),
        errors=errors,
        requests_per_s=len(latencies) / measured,
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        response_bytes=size,
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
    parser.add_argument("--url", required=True)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--max-requests", type=int, default=1_000_000)
    parser.add_argument("--header", action="append", default=[], help="'Name: value'")
    args = parser.parse_args()
    headers = dict(h.split(":", 1) for h in args.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    result = asyncio.run(
        hammer(args.url, headers, args.connections, args.seconds, args.warmup, args.max_requests)
    )
    print(json.dumps(asdict(result)), flush=True)


if __name__ == "__main__":
    main()
