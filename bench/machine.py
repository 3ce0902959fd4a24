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
