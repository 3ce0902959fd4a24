"""Figure 5: the invoice listing under load, next to a bare Starlette endpoint.

Both servers run in their own processes and get the same load from a third process
(`bench.loadgen`), one after the other, so they never compete with each other for the 2 cores.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from bench.loadgen import LoadResult
from bench.procs import ROOT, Child, child_env, free_port


async def run_loadgen(
    url: str, connections: int, seconds: float, headers: dict[str, str]
) -> LoadResult:
    args = ["-m", "bench.loadgen", "--url", url, "--connections", str(connections)]
    args += ["--seconds", str(seconds)]
    for name, value in headers.items():
        args += ["--header", f"{name}: {value}"]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=seconds + 60)
    if process.returncode != 0:
        raise RuntimeError(f"loadgen failed ({process.returncode}): {err.decode()[-2000:]}")
    return LoadResult(**json.loads(out))


async def bare_server(payload: bytes, logs: Path) -> tuple[Child, str]:
    """Start the bare endpoint serving `payload`; returns it and its listing URL."""
    payload_file = logs / "bare-payload.json"
    await asyncio.to_thread(payload_file.write_bytes, payload)
    port = free_port()
    child = Child(
        "bare-starlette",
        ["bench.bare_server", "--port", str(port), "--payload", str(payload_file)],
        child_env({}),
        logs,
    )
    await child.start()
    url = f"http://127.0.0.1:{port}/api/customers/bare/invoices"
    await child.wait_http(url)
    return child, url
