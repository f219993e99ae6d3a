"""quality_suites assets (being built)."""
