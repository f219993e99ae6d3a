"""monitoring assets (being built)."""
