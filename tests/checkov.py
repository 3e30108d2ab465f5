"""checkov, pinned, in its own venv under the cache (its dependency set conflicts with ours).

    python -m tests.checkov --install      install if missing (e2e/setup.sh runs this)
    python -m tests.checkov --print-path   where the checkov executable is (or would be)

The venv is keyed by version, so a version bump installs next to the old one and a warm cache
costs one stat().
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

VERSION = "3.3.30"
CACHE_ROOT = Path(os.environ.get("COAI_E2E_CACHE", Path.home() / ".cache" / "coai-operator"))


def venv_dir() -> Path:
    return CACHE_ROOT / "checkov" / VERSION / "venv"


def executable() -> Path:
    return venv_dir() / "bin" / "checkov"


def installed() -> bool:
    return (venv_dir() / ".installed").exists() and executable().exists()


def install(python: str = sys.executable) -> float:
    """Install checkov==VERSION if missing; seconds spent (0 when already there)."""
    if installed():
        return 0.0
    start = time.monotonic()
    venv = venv_dir()
    if not (venv / "bin" / "python").exists():
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                    f"checkov=={VERSION}"], check=True)
    (venv / ".installed").touch()
    return time.monotonic() - start


def scan(directory: Path, skips: list[str] | None = None, timeout: float = 900) -> dict[str, Any]:
    """Run checkov's kubernetes framework on every YAML file under `directory`; its JSON report
    (results.failed_checks and summary; --quiet leaves passed checks out)."""
    args = [str(executable()), "--directory", str(directory), "--framework", "kubernetes", "--output", "json",
            "--quiet", "--compact", "--skip-download"]
    if skips:
        args += ["--skip-check", ",".join(skips)]
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    out = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
    if out.returncode not in (0, 1):  # 1: some check failed
        raise RuntimeError(f"checkov exited {out.returncode}: {out.stderr[-2000:]}")
    report = json.loads(out.stdout) if out.stdout.strip() else {}
    if isinstance(report, list):  # one entry per framework
        report = report[0] if report else {}
    if "results" not in report:  # checkov's "nothing scanned" shape is the bare summary
        return {"results": {"failed_checks": []}, "summary": report}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--install", action="store_true")
    parser.add_argument("--print-path", action="store_true")
    args = parser.parse_args()
    if args.install:
        seconds = install()
        if seconds:
            print(f"checkov {VERSION} installed in {seconds:.0f}s", file=sys.stderr)
    if args.print_path:
        print(executable())


if __name__ == "__main__":
    main()
