"""`python -m bench.profiled --out DIR --name NAME MODULE [ARGS...]`: run `python -m MODULE ARGS`
with a profiler that sleeps until asked.

SIGUSR1 starts cProfile in the main thread (where the service's event loop runs), timed by the
process's CPU clock so that waiting (the event loop's poll) does not crowd out the work; SIGUSR2
stops it and writes `NAME-profile.txt` (the top functions by own time and by cumulative time) and
`NAME.prof` (for pstats or snakeviz) into DIR. Until SIGUSR1 it costs nothing, so a benchmark can
measure CPU time unprofiled and profile a separate, later pass of the same process.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import runpy
import signal
import sys
import time
from pathlib import Path
from types import FrameType

TOP = 40


def write_profile(profiler: cProfile.Profile, out: Path, name: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    profiler.dump_stats(out / f"{name}.prof")
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text).strip_dirs()
    text.write(f"{name}: top {TOP} functions by own time\n")
    stats.sort_stats("tottime").print_stats(TOP)
    text.write(f"{name}: top {TOP} functions by cumulative time\n")
    stats.sort_stats("cumulative").print_stats(TOP)
    path = out / f"{name}-profile.txt"
    path.write_text(text.getvalue())
    return path


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profiled")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("module")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    a = parser.parse_args()
    profiler = cProfile.Profile(time.process_time)
    running = False

    def start(_signum: int, _frame: FrameType | None) -> None:
        nonlocal running
        if not running:
            running = True
            profiler.enable()

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal running
        if running:
            profiler.disable()
            running = False
            write_profile(profiler, a.out, a.name)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    sys.argv = [a.module, *a.args]
    runpy.run_module(a.module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
