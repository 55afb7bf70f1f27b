"""Metrics, benchmark tables and figures."""
