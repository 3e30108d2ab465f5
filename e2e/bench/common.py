"""What every benchmark shares: the report (rows of figure / baseline / ratio), timing, percentiles.

A row is one figure of ours next to a baseline measured in the same run on the same machine, so
the ratio holds even when the absolute numbers move with the load of a shared box. Rows carry an
optional target (for example "ratio <= 1.1"); a missed target is reported, never raised.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent.parent
PYTHON = sys.executable


@dataclass
class Row:
    group: str
    name: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: str = ""  # "<= 1.1" (ratio), "== 0" (value), or "" (informational)
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.value is None or self.baseline is None:
            return None
        if self.baseline == 0:
            return None if self.value else 1.0
        return self.value / self.baseline

    @property
    def met(self) -> bool | None:
        if not self.target:
            return None
        op, _, number = self.target.partition(" ")
        subject = self.value if self.target.startswith("==") or self.baseline is None else self.ratio
        if subject is None:
            return None
        bound = float(number)
        return {"<=": subject <= bound, ">=": subject >= bound, "==": subject == bound}[op]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": _round(self.ratio), "met": self.met}


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


@dataclass
class Report:
    meta: dict[str, Any] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def add(self, group: str, name: str, value: float | None, unit: str, **kw: Any) -> Row:
        row = Row(group, name, value, unit, **kw)
        self.rows.append(row)
        print(f"  {format_row(row)}", file=sys.stderr, flush=True)
        return row

    def failed(self, what: str, exc: BaseException) -> None:
        """Record a part that broke (the report goes on: one broken part must not hide the others)."""
        self.errors.append(f"{what}: {type(exc).__name__}: {exc}"[:2000])
        log(f"{what} failed: {exc}")

    def to_dict(self) -> dict[str, Any]:
        return {"meta": self.meta, "rows": [r.to_dict() for r in self.rows], "details": self.details,
                "errors": self.errors}

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=1, default=str) + "\n")

    def table(self) -> str:
        return render_table(self.rows)


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit in ("count", "requests", "writes", "reads") and float(value).is_integer():
        text = f"{int(value)}"
    elif abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 100:
        text = f"{value:.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    elif abs(value) >= 0.1 or value == 0:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".strip() if unit not in ("count",) else text


def format_row(row: Row) -> str:
    ratio = f"{row.ratio:.2f}x" if row.ratio is not None else ""
    met = {True: "ok", False: "MISS", None: ""}[row.met]
    base = f" vs {_num(row.baseline, row.unit)} ({row.baseline_name})" if row.baseline is not None else ""
    return f"[{row.group}] {row.name}: {_num(row.value, row.unit)}{base} {ratio} {row.target} {met}".rstrip()


def render_table(rows: Sequence[Row]) -> str:
    header = ("group", "benchmark", "ours", "baseline", "ratio", "target", "")
    lines = [header]
    for r in rows:
        base = f"{_num(r.baseline, r.unit)} {r.baseline_name}".strip() if r.baseline is not None else ""
        lines.append((r.group, r.name, _num(r.value, r.unit), base,
                      f"{r.ratio:.2f}x" if r.ratio is not None else "", r.target,
                      {True: "ok", False: "MISS", None: ""}[r.met]))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        out.append(" | ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
        if n == 0:
            out.append("-+-".join("-" * w for w in widths))
    return "\n".join(out)


def markdown_table(rows: Sequence[Row]) -> str:
    out = ["| group | benchmark | ours | baseline | ratio | target | |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        base = f"{_num(r.baseline, r.unit)} ({r.baseline_name})" if r.baseline is not None else ""
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else ""
        met = {True: "ok", False: "**miss**", None: ""}[r.met]
        cells = [r.group, r.name, _num(r.value, r.unit), base, ratio, r.target, met]
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(out)


def rows_from_json(data: dict[str, Any]) -> list[Row]:
    """The rows of a results file written by Report.write."""
    names = {f.name for f in fields(Row)}
    return [Row(**{k: v for k, v in row.items() if k in names}) for row in data.get("rows", [])]


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
            "loadavg_at_start": [round(x, 2) for x in load],
            "mem_total_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


@dataclass
class Timed:
    seconds: float
    stdout: str
    stderr: str
    returncode: int
    lines: list[tuple[float, str]] = field(default_factory=list)  # (monotonic time, stderr line)

    def json(self) -> dict[str, Any]:
        """The engine's final JSON line on stdout."""
        for line in reversed(self.stdout.strip().splitlines()):
            if line.startswith("{"):
                return json.loads(line)
        return {}


def run_timed(argv: Sequence[str] | str, *, env: dict[str, str] | None = None, shell: bool = False,
              stdin_path: Path | None = None, stdout_path: Path | None = None, check: bool = True,
              cwd: Path | None = None, timeout: float = 7200) -> Timed:
    """Run a command, time it wall-clock, and keep each stderr line with the moment it arrived."""
    lines: list[tuple[float, str]] = []
    stdin = stdin_path.open("rb") if stdin_path else subprocess.DEVNULL
    stdout_file = stdout_path.open("wb") if stdout_path else None
    started = time.monotonic()
    proc = subprocess.Popen(argv, shell=shell, env=env, cwd=cwd or REPO, stdin=stdin,
                            stdout=stdout_file or subprocess.PIPE, stderr=subprocess.PIPE)
    out_chunks: list[bytes] = []

    def read_out() -> None:
        assert proc.stdout is not None
        out_chunks.append(proc.stdout.read())

    reader = None
    if stdout_file is None:
        reader = threading.Thread(target=read_out, daemon=True)
        reader.start()
    assert proc.stderr is not None
    for raw in proc.stderr:
        lines.append((time.monotonic(), raw.decode(errors="replace").rstrip("\n")))
    rc = proc.wait(timeout=timeout)
    seconds = time.monotonic() - started
    if reader:
        reader.join()
    for handle in (stdin, stdout_file):
        if hasattr(handle, "close"):
            handle.close()  # type: ignore[union-attr]
    result = Timed(seconds, b"".join(out_chunks).decode(errors="replace"),
                   "\n".join(line for _, line in lines), rc, lines)
    if check and rc != 0:
        cmd = argv if isinstance(argv, str) else " ".join(map(str, argv))
        raise RuntimeError(f"{cmd[:200]} exited {rc}: {result.stderr[-2000:]}")
    return result


def peak_rss_kib(pid: int) -> int | None:
    """VmHWM (peak resident set) of a live process, in KiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
