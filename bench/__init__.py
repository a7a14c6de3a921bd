"""Lockgate benchmarks: ``bench/run.py`` (end to end, against NATS) and ``policy_bench.py``."""
