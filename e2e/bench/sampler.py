"""A small in-process sampling profiler (py-spy is not available here): run a module under it and
get, for every thread, where its wall time goes.

    python -m e2e.bench.sampler OUT.json -m coai_operator.cli run -n NS

Every `interval` seconds a daemon thread takes `sys._current_frames()` and counts, per sample:
the innermost frame ("self") and every distinct function on the stack ("inclusive"). Samples are
kept separately for stacks that pass through coai-operator's reconcile (`reconcile_named`), so the
report says where a reconcile spends its time (waiting on the API server, JSON, deepcopy, ...).
The counts are written as JSON on exit (SIGTERM makes kopf stop gracefully, then this writes).
cProfile would only see the main thread; kopf runs sync handlers in executor threads.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections import Counter
from pathlib import Path
from types import FrameType

from e2e.bench.profiled import run_profiled

FOCUS = "reconcile_named"


def _name(frame: FrameType) -> str:
    code = frame.f_code
    return f"{code.co_name} ({Path(code.co_filename).name}:{code.co_firstlineno})"


class Sampler:
    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.samples = 0
        self.focus_samples = 0
        self.self_all: Counter[str] = Counter()
        self.self_focus: Counter[str] = Counter()
        self.inclusive_focus: Counter[str] = Counter()
        self._stop = threading.Event()
        self._me = 0

    def run(self) -> None:
        self._me = threading.get_ident()
        while not self._stop.wait(self.interval):
            for ident, frame in sys._current_frames().items():
                if ident == self._me:
                    continue
                self.samples += 1
                top = _name(frame)
                self.self_all[top] += 1
                stack, f = [], frame
                while f is not None:
                    stack.append(f.f_code.co_name)
                    f = f.f_back
                if FOCUS in stack:
                    self.focus_samples += 1
                    self.self_focus[top] += 1
                    seen: set[str] = set()
                    f = frame
                    while f is not None:
                        name = _name(f)
                        if name not in seen:
                            seen.add(name)
                            self.inclusive_focus[name] += 1
                        f = f.f_back

    def stop(self) -> None:
        self._stop.set()

    def to_dict(self, limit: int = 25) -> dict[str, object]:
        def pct(counter: Counter[str], total: int) -> list[str]:
            return [f"{100 * n / max(total, 1):.1f}% {name}" for name, n in counter.most_common(limit)]

        return {"interval_s": self.interval, "samples": self.samples, "reconcile_samples": self.focus_samples,
                "reconcile_self": pct(self.self_focus, self.focus_samples),
                "reconcile_inclusive": pct(self.inclusive_focus, self.focus_samples),
                "all_threads_self": pct(self.self_all, self.samples)}


def main() -> int:
    sampler = Sampler()

    def start(out: Path) -> None:
        threading.Thread(target=sampler.run, daemon=True, name="bench-sampler").start()
        signal.signal(signal.SIGUSR1, lambda *_: out.write_text(json.dumps(sampler.to_dict(), indent=1)))

    def report(_: Path) -> dict[str, object]:
        sampler.stop()
        return sampler.to_dict()

    return run_profiled("e2e.bench.sampler", start, report)


if __name__ == "__main__":
    sys.exit(main())
