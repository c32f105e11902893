"""Domain code: plain Python, no Dagster imports, testable on its own."""
