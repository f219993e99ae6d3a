"""audit assets (being built)."""
