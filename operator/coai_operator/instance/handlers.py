"""CoaiInstance handlers (registered by importing this module)."""
