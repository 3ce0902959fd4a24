"""Child processes of a benchmark or chaos run: start, wait for, signal, restart, measure.

Each child is `python -m <module>` with its own log file, so a run leaves the evidence of what
every process said next to its figures. Only processes started here are ever signalled.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A loopback port nobody listens on right now (the child binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def proc_status_kib(pid: int, key: str) -> int | None:
    """A `kB` figure of /proc/<pid>/status (VmHWM is the peak resident set size)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    return None


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time a process has used so far (/proc/<pid>/stat, fields 14 and 15):
    the figure that does not depend on what else the machine's cores are doing."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; the fields after its closing parenthesis don't.
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


@dataclass
class Child:
    """One `python -m` child. `start` may be called again after it died (a restart)."""

    name: str
    args: Sequence[str]
    env: Mapping[str, str]
    logs: Path
    process: asyncio.subprocess.Process | None = None
    starts: int = 0
    kills: int = 0
    exits: list[int] = field(default_factory=list)

    @property
    def log_path(self) -> Path:
        return self.logs / f"{self.name}.log"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        handle = self.log_path.open("ab")
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-u",
                "-m",
                *self.args,
                cwd=ROOT,
                env=dict(self.env),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=handle,
                stderr=handle,
            )
        finally:
            handle.close()  # the child keeps its own descriptor
        self.starts += 1

    def tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        body = "\n".join(text.splitlines()[-lines:])
        return f"--- {self.name} ({self.log_path}) ---\n{body}"

    async def wait_http(self, url: str, within_s: float = 60.0) -> None:
        """Until `url` answers 200; fails early, with the log's tail, if the child dies."""
        deadline = time.monotonic() + within_s
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                if not self.alive:
                    raise RuntimeError(f"{self.name} exited during start-up\n{self.tail()}")
                try:
                    async with http.get(url) as response:
                        if response.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} did not answer {url}\n{self.tail()}")
                await asyncio.sleep(0.1)

    async def kill(self) -> None:
        """SIGKILL: no clean-up in the child, exactly like a node or container dying."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            self.exits.append(await self.process.wait())
            self.kills += 1

    async def stop(self, within_s: float = 20.0) -> None:
        """SIGTERM, then SIGKILL if the child does not finish in time."""
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.exits.append(await asyncio.wait_for(self.process.wait(), within_s))
        except TimeoutError:
            self.process.kill()
            self.exits.append(await self.process.wait())

    def peak_rss_kib(self) -> int | None:
        return proc_status_kib(self.pid, "VmHWM") if self.alive else None

    def cpu_seconds(self) -> float:
        found = proc_cpu_seconds(self.pid) if self.alive else None
        if found is None:
            raise RuntimeError(f"{self.name} is not running: no CPU time to read")
        return found

    def signal(self, signum: int) -> None:
        if self.alive and self.process is not None:
            self.process.send_signal(signum)


def child_env(overrides: Mapping[str, str]) -> dict[str, str]:
    """The parent's environment plus `overrides`, as every child gets it."""
    return {**os.environ, **overrides}
