"""Benchmark harness for the wassette state store (see bench/README.md)."""
