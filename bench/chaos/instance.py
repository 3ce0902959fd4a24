"""A Kafka + FerretDB + PostgreSQL instance of its own, run by deploy/local/infra.sh on other
ports.

The chaos run kills and restarts this instance's broker, FerretDB and PostgreSQL, so it must
never be the instance a developer or the test suite is using: it lives in its own state directory
(QBO_LOCAL_DIR) on its own ports.
"""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from bench.procs import ROOT, child_env

INFRA_SH = ROOT / "deploy" / "local" / "infra.sh"


class InfraFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class InfraInstance:
    state_dir: Path
    kafka_port: int = 19192
    controller_port: int = 19193
    mongo_port: int = 27217
    postgres_port: int = 15632

    @property
    def kafka_bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def mongodb_uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.mongo_port}/"

    def _env(self) -> dict[str, str]:
        return child_env(
            {
                "QBO_LOCAL_DIR": str(self.state_dir),
                "QBO_KAFKA_PORT": str(self.kafka_port),
                "QBO_KAFKA_CONTROLLER_PORT": str(self.controller_port),
                "QBO_MONGO_PORT": str(self.mongo_port),
                "QBO_POSTGRES_PORT": str(self.postgres_port),
            }
        )

    async def infra(self, action: str, within_s: float = 900.0) -> None:
        """Run `infra.sh <action>` for this instance; its output goes to the instance's log."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = self.state_dir / "infra-actions.log"
        with log.open("ab") as handle:
            process = await asyncio.create_subprocess_exec(
                str(INFRA_SH),
                action,
                cwd=ROOT,
                env=self._env(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=handle,
                stderr=handle,
            )
        try:
            code = await asyncio.wait_for(process.wait(), within_s)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise InfraFailed(f"infra.sh {action} took longer than {within_s} s") from None
        if code != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            raise InfraFailed(f"infra.sh {action} failed ({code}):\n{tail}")

    def pid_of(self, name: str) -> int | None:
        """The pid infra.sh recorded for `kafka`, `ferretdb` or `postgres` (its postmaster): a
        process this run started."""
        pidfile = self.state_dir / "run" / f"{name}.pid"
        try:
            return int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    async def crash_and_restart(self, name: str, down_for_s: float) -> None:
        """SIGKILL `kafka`, `ferretdb` or `postgres` (no clean shutdown), wait, and start it
        again; infra.sh clears what a killed postmaster leaves behind."""
        pid = self.pid_of(name)
        if pid is None:
            raise InfraFailed(f"no pid recorded for {name}")
        os.kill(pid, signal.SIGKILL)
        await _gone(pid)
        await asyncio.sleep(down_for_s)
        await self.infra("up")


async def _gone(pid: int, within_s: float = 30.0) -> None:
    """Until `pid` is gone for good. infra.sh's children are reaped by init, not by us, and
    until then `infra.sh up` (kill -0) would still take the dead broker for a running one."""
    for _ in range(int(within_s / 0.05)):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        await asyncio.sleep(0.05)
    raise InfraFailed(f"process {pid} was not reaped within {within_s} s of SIGKILL")
