"""Benchmarks of the question service, measured side by side as ratios (see bench/README.md)."""
