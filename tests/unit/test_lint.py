"""The code base stays ruff clean (the configuration is in pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_ruff_reports_nothing() -> None:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or "ruff"
    done = subprocess.run([ruff, "check", "--no-cache", "operator", "tests", "e2e"], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-5000:]
