"""CPU profile of every thread (the wall-time sampler in sampler.py cannot tell CPU from waiting):
run a module with cProfile enabled in the main thread and in every thread started after it (kopf's
executor threads run the sync handlers), and write the merged top functions as JSON on exit, and
the merged stats beside it (OUT.pstats).

    python -m e2e.bench.cpuprofile OUT.json -m coai_operator.cli run -n NS

Timed by each thread's CPU clock, so waiting (the GIL, locks, sockets) does not count. cProfile slows
the profiled code down (by about 1.5-2x here): the shares are what counts, not the
totals. Not a measured run.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
import threading
import time
from pathlib import Path
from typing import Any

from e2e.bench.profiled import run_profiled

_profiles: list[cProfile.Profile] = []
_lock = threading.Lock()


def _enable_in_this_thread(*_: Any) -> None:
    profile = cProfile.Profile(time.thread_time)  # CPU, not wall: waits on locks and sockets do not count
    with _lock:
        _profiles.append(profile)
    profile.enable()  # replaces this hook for the rest of the thread's life


def _top(stats: pstats.Stats, key: str, limit: int) -> list[str]:
    buffer = io.StringIO()
    stats.stream = buffer  # type: ignore[attr-defined]
    stats.sort_stats(key).print_stats(limit)
    lines = buffer.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), 0)
    return [line.strip() for line in lines[start:] if line.strip()]


def report(out: Path, limit: int = 40) -> dict[str, object]:
    with _lock:
        profiles = list(_profiles)
    for profile in profiles:
        profile.create_stats()
    stats = pstats.Stats(profiles[0])
    for profile in profiles[1:]:
        stats.add(profile)
    stats.strip_dirs()
    stats.dump_stats(out.with_suffix(".pstats"))  # for `python -m pstats`: callers, callees
    return {"threads": len(profiles), "total_tt": round(stats.total_tt, 2),  # type: ignore[attr-defined]
            "by_self_time": _top(stats, "tottime", limit), "by_cumulative_time": _top(stats, "cumulative", limit)}


def main() -> int:
    def start(_: Path) -> None:
        threading.setprofile(_enable_in_this_thread)
        _enable_in_this_thread()

    return run_profiled("e2e.bench.cpuprofile", start, report)


if __name__ == "__main__":
    sys.exit(main())
