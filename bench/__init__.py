"""Benchmarks and result collection (not tests)."""
