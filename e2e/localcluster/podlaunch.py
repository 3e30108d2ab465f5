"""Runs inside a private mount namespace (`unshare --mount --propagation private`): bind-mounts a
pod's volumes at their mountPaths, then execs the container's command.

argv[1] is a JSON file: {"mounts": [{"source", "target", "readOnly"}], "argv": [...], "env": {...},
"workingDir": str, "stageDir": str}. Only this process and its children see the mounts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def bind(source: str, target: str, read_only: bool) -> None:
    src, dst = Path(source), Path(target)
    if src.is_dir():
        dst.mkdir(parents=True, exist_ok=True)
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.touch(exist_ok=True)
    subprocess.run(["mount", "--bind", str(src), str(dst)], check=True)
    if read_only:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(dst)], check=True)


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    # Every source is first bound under a staging directory: once a target such as /tmp is mounted,
    # sources that live below it (the agent's state dir) would no longer be reachable by path.
    stage = Path(spec["stageDir"])
    stage.mkdir(parents=True, exist_ok=True)
    staged = []
    for index, mount in enumerate(spec["mounts"]):
        point = stage / str(index)
        bind(mount["source"], str(point), False)
        staged.append({**mount, "source": str(point)})
    # Shorter targets first so a mount inside another mount lands on top of it.
    for mount in sorted(staged, key=lambda m: len(m["target"])):
        bind(mount["source"], mount["target"], mount.get("readOnly", False))
    os.chdir(spec.get("workingDir") or "/")
    argv = spec["argv"]
    try:
        os.execvpe(argv[0], argv, spec["env"])
    except FileNotFoundError:
        sys.stderr.write(f"exec: {argv[0]!r}: executable file not found in $PATH\n")
        sys.exit(127)


if __name__ == "__main__":
    main()
