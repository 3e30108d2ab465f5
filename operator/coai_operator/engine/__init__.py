"""The migration engine: what the operator's Jobs run, and a CLI for people."""
