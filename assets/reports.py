"""reports assets (being built)."""
