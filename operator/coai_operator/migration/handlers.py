"""CoaiMigration handlers (registered by importing this module)."""
