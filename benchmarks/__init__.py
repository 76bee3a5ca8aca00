"""Throughput and time-to-solve benchmarks; results and the commands that made them are in RESULTS.md."""
