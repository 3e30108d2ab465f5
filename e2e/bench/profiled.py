"""The command line the bench's profilers share:

    python -m e2e.bench.<profiler> OUT.json -m MODULE [ARGS...]

runs MODULE as `__main__` with ARGS and writes the profiler's report, plus the run's seconds, to
OUT.json when MODULE ends, fails or is stopped (SIGTERM makes kopf stop gracefully)."""

from __future__ import annotations

import json
import runpy
import sys
import time
from collections.abc import Callable
from pathlib import Path


def run_profiled(prog: str, start: Callable[[Path], None], report: Callable[[Path], dict[str, object]]) -> int:
    if len(sys.argv) < 4 or sys.argv[2] != "-m":
        raise SystemExit(f"usage: python -m {prog} OUT.json -m MODULE [ARGS...]")
    out, module = Path(sys.argv[1]), sys.argv[3]
    sys.argv = [module, *sys.argv[4:]]
    start(out)
    started = time.monotonic()
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit:
        pass
    finally:
        data = report(out)
        data["seconds"] = round(time.monotonic() - started, 1)
        out.write_text(json.dumps(data, indent=1))
    return 0
