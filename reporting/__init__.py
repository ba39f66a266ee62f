"""Reporting: the DuckDB job history (see the README, "History")."""
