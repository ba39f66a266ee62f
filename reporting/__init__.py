"""Reporting: the DuckDB job history (see docs/history.md)."""
