"""e2e/bench/profiled.run_profiled: the profilers' shared command line writes its report when the
profiled module ends, and when it exits with an error."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from e2e.bench.profiled import run_profiled


@pytest.mark.parametrize("body", ["RAN.append(1)", "RAN.append(1)\nraise SystemExit(3)"])
def test_the_report_is_written_after_the_module_ran(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     body: str) -> None:
    (tmp_path / "profiled_target.py").write_text(f"import sys\nRAN = sys.modules['{__name__}'].RAN\n{body}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "out.json"
    monkeypatch.setattr(sys, "argv", ["prog", str(out), "-m", "profiled_target", "--flag"])
    started: list[Path] = []
    assert run_profiled("e2e.bench.x", started.append, lambda _: {"found": True}) == 0
    assert started == [out] and RAN == [1]
    report = json.loads(out.read_text())
    assert report["found"] is True and report["seconds"] >= 0
    RAN.clear()


def test_a_wrong_command_line_says_how_to_call_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["prog", "out.json", "module"])
    with pytest.raises(SystemExit, match=re.escape("usage: python -m e2e.bench.x OUT.json -m MODULE")):
        run_profiled("e2e.bench.x", lambda _: None, lambda _: {})


RAN: list[int] = []
