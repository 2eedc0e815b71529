"""Latency benchmarks (issue 7): per-stage timings, an open-loop end-to-end load test
against a real server process, a thread sweep, and a PyPI peer measured in the same run.

Run everything with `benchmarks/latency/run.sh` (or `.venv/bin/python -m benchmarks.latency`).
Benchmarks, not tests: nothing here asserts a timing.
"""
