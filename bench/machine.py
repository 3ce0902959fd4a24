"""The whole machine's CPU, read from /proc/stat: how busy all cores were over a stretch of
work. Every process of the stack (sync, api, emulator, Kafka, the database) shares the cores,
so busy core-seconds over the cores is the least wall time the same work can take here."""

from __future__ import annotations

import os


def busy_core_seconds() -> float:
    """Core-seconds spent busy since boot, all cores together (0.0 where /proc/stat is not)."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# What each process of the stack is: by its program, then by its command line.
_PROGRAMS = (("ferretdb", "ferretdb"), ("postgres", "postgres"), ("java", "kafka"))
_MODULES = (
    ("services.sync", "sync"),
    ("services.api", "api"),
    ("qbo_emulator", "emulator"),
    ("bench", "bench"),
)


def _kind(argv: list[str]) -> str:
    program = os.path.basename(argv[0]) if argv else ""
    for mark, name in _PROGRAMS:
        if program.startswith(mark):
            return name
    line = " ".join(argv)
    return next((name for mark, name in _MODULES if mark in line), "other")


def cpu_by_process() -> dict[str, float]:
    """CPU seconds used so far by the live processes of the stack, by kind (sync, api, emulator,
    kafka, ferretdb, postgres, bench, other); empty where /proc is not."""
    tick = os.sysconf("SC_CLK_TCK")
    used: dict[str, float] = {}
    for pid in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline", "rb") as cmd:
                argv = cmd.read().decode(errors="replace").split("\0")
        except OSError:
            continue  # gone meanwhile
        kind = _kind(argv)
        used[kind] = used.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return used


def cpu_since(before: dict[str, float]) -> dict[str, float]:
    """CPU seconds by process kind since `before` (a `cpu_by_process()`)."""
    now = cpu_by_process()
    return {
        kind: now[kind] - before.get(kind, 0.0) for kind in now if now[kind] > before.get(kind, 0.0)
    }
