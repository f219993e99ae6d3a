"""performance assets (being built)."""
