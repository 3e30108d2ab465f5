"""Where the memory is: run a module under tracemalloc, snapshot it every few seconds, and write
the largest snapshot's top allocation sites as JSON on exit (by line, and by the first frame of
the traceback outside the standard library and asyncio).

    python -m e2e.bench.memprofile OUT.json -m coai_operator.cli run -n NS

tracemalloc slows the profiled code down and counts Python allocations only (not the
interpreter, not C libraries' own): a map of the heap, not a measured run.
"""

from __future__ import annotations

import json
import sys
import threading
import tracemalloc
from pathlib import Path

from e2e.bench.profiled import run_profiled

FRAMES = 8
EVERY_SECONDS = 30.0


def _site(trace: tracemalloc.Traceback) -> str:
    """The innermost frame of code that is not the standard library: whose allocation it is."""
    for frame in trace:  # most recent first
        if "site-packages" in frame.filename or "coai_operator" in frame.filename or "/e2e/" in frame.filename:
            return f"{Path(frame.filename).name}:{frame.lineno}"
    return f"{Path(trace[0].filename).name}:{trace[0].lineno}"


def summarize(snapshot: tracemalloc.Snapshot, limit: int = 30) -> dict[str, object]:
    stats = snapshot.statistics("traceback")
    total = sum(s.size for s in stats)
    by_site: dict[str, int] = {}
    by_package: dict[str, int] = {}
    for s in stats:
        site = _site(s.traceback)
        by_site[site] = by_site.get(site, 0) + s.size
        package = site.split(":")[0]
        by_package[package] = by_package.get(package, 0) + s.size

    def top(counts: dict[str, int]) -> list[str]:
        return [f"{size / 2**20:7.1f} MiB {name}" for name, size in
                sorted(counts.items(), key=lambda kv: -kv[1])[:limit]]

    return {"traced_mib": round(total / 2**20, 1), "by_site": top(by_site), "by_file": top(by_package)}


class Peak:
    """Keeps the largest snapshot, and writes its summary at once: summarizing a large heap takes
    long enough that a process stopped at the end of a bench may be killed before it could."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.best: tracemalloc.Snapshot | None = None
        self.best_size = 0
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.wait(EVERY_SECONDS):
            self.look()

    def look(self) -> None:
        current, _ = tracemalloc.get_traced_memory()
        if current > self.best_size:
            self.best, self.best_size = tracemalloc.take_snapshot(), current
            self.out.write_text(json.dumps(summarize(self.best), indent=1))

    def stop(self) -> None:
        self._stop.set()


def main() -> int:
    peaks: list[Peak] = []

    def start(out: Path) -> None:
        tracemalloc.start(FRAMES)
        peaks.append(Peak(out))
        threading.Thread(target=peaks[0].run, daemon=True, name="bench-memprofile").start()

    def report(out: Path) -> dict[str, object]:
        peaks[0].stop()
        if not out.exists():  # a run shorter than one interval
            peaks[0].look()
        data: dict[str, object] = json.loads(out.read_text()) if out.exists() else {}
        data["peak_traced_mib"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
        return data

    return run_profiled("e2e.bench.memprofile", start, report)


if __name__ == "__main__":
    sys.exit(main())
