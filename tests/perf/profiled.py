"""A platform process (`app.cli`) under a profiler, for diagnosing a benchmark figure:

    python -m tests.perf.profiled --out DIR [--tracemalloc] [--cprofile] -- serve --port …

With `--tracemalloc`, SIGUSR1 writes a snapshot of the Python heap to DIR/heap-<n>.snapshot
(compare two with `tracemalloc.Snapshot.load(…).compare_to(…)`); with `--cprofile`, SIGUSR2
writes the profile since the previous SIGUSR2 (or the start) to DIR/cpu-<n>.prof and starts a
new one (`python -m pstats`). The process otherwise runs as `python -m app.cli …` does.
Not used by the suite's figures: a traced process is slower and larger than the one measured.
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import signal
import sys
import tracemalloc
from pathlib import Path
from types import FrameType

from app.cli import main as cli


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.profiled")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--cprofile", action="store_true")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    options = parser.parse_args(argv)
    options.out.mkdir(parents=True, exist_ok=True)
    command = options.command[1:] if options.command[:1] == ["--"] else options.command
    serial = itertools.count(1)
    if options.tracemalloc:
        tracemalloc.start(1)

        def snapshot(signum: int, frame: FrameType | None) -> None:
            tracemalloc.take_snapshot().dump(str(options.out / f"heap-{next(serial)}.snapshot"))

        signal.signal(signal.SIGUSR1, snapshot)
    profiler = cProfile.Profile()
    if options.cprofile:

        def profile(signum: int, frame: FrameType | None) -> None:
            profiler.disable()
            profiler.dump_stats(str(options.out / f"cpu-{next(serial)}.prof"))
            profiler.clear()
            profiler.enable()

        signal.signal(signal.SIGUSR2, profile)
        profiler.enable()
    return cli(command)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
