"""Benchmarks: commands that print their figures as one JSON line (see docs/performance.md)."""
