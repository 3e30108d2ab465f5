"""Engine errors: each carries a one-line message a person can act on."""

from __future__ import annotations


class EngineError(Exception):
    """A step refused or failed; the message is shown as is (one line, no secrets)."""

    reason = "EngineError"


class PlanError(EngineError):
    """Downgrade, unknown version or unsupported path."""

    reason = "UnsupportedPath"


class BackupError(EngineError):
    reason = "BackupFailed"


class RestoreError(EngineError):
    reason = "RestoreFailed"


class MigrationError(EngineError):
    reason = "MigrationFailed"


class ValidationError(EngineError):
    reason = "ValidationFailed"
