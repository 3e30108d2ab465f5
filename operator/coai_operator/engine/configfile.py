"""The app's /config/config.yaml in a backup: copied byte for byte, treated as a secret.

config.yaml is the real app's second database (channels with their upstream keys, pricing,
plans, site settings; after an admin save also mysql.password and the JWT secret). The backup
keeps an exact copy readable by its owner only; a restore puts it back atomically (tmp + rename
in /config, as the app itself writes it), group-writable so the app, which shares the volume's
group (fsGroup) but not the Job's user, can keep rewriting it. A /config without config.yaml
(an app that never started, the guide's stand-in) is recorded as such: no artifact, and the
restore leaves /config alone. Only names, sizes and checksums are ever logged.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from coai_operator.domain.errors import BackupError, RestoreError
from coai_operator.engine.fsutil import atomic_output, sha256_file
from coai_operator.engine.manifest import CONFIG, Artifact, Manifest

log = logging.getLogger(__name__)

FILE_NAME = "config.yaml"
BACKUP_MODE = 0o600  # the copy in the backup: owner only
RESTORED_MODE = 0o660  # in /config: the app (same group via fsGroup) must rewrite it


def backup_config(config_dir: Path | None, directory: Path) -> Artifact | None:
    """Copy config_dir/config.yaml into the backup directory; None when there is none."""
    if config_dir is None:
        raise BackupError("--include config needs --config PATH (the app's /config)")
    source = config_dir / FILE_NAME
    if not config_dir.is_dir():
        raise BackupError(f"config path {config_dir} is not a directory")
    if not source.is_file():
        log.info("%s has no %s: nothing to back up from it", config_dir, FILE_NAME)
        return None
    data = source.read_bytes()
    target = directory / FILE_NAME
    with atomic_output(target) as out:
        out.write(data)
    os.chmod(target, BACKUP_MODE)
    art = Artifact(FILE_NAME, CONFIG, "none", len(data), sha256_file(target))
    log.info("config: %s copied (%d bytes, sha256 %s)", FILE_NAME, art.bytes, art.sha256[:12])
    return art


def restore_config(directory: Path, manifest: Manifest, config_dir: Path | None) -> dict[str, Any]:
    art = manifest.artifact(CONFIG)
    if art is None:
        return {"restored": False, "reason": f"the backup's /config held no {FILE_NAME}"}
    if config_dir is None:
        raise RestoreError("the backup includes config: pass --config PATH (or --include without config)")
    config_dir.mkdir(parents=True, exist_ok=True)
    data = (directory / art.name).read_bytes()
    target = config_dir / FILE_NAME
    with atomic_output(target) as out:
        out.write(data)
    os.chmod(target, RESTORED_MODE)
    if sha256_file(target) != art.sha256:
        raise RestoreError(f"restored {target} does not match the backup's sha256")
    log.info("config: %s restored (%d bytes, sha256 %s)", FILE_NAME, art.bytes, art.sha256[:12])
    return {"restored": True, "bytes": art.bytes, "sha256": art.sha256}
