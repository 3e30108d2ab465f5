"""Backups and restores as resources: CoaiBackupLocation, CoaiBackup, CoaiBackupSchedule, CoaiRestore."""
