"""Benchmarks of the hook server: in-process hook latency against a JSON floor, WarmPool scaling,
HTTP throughput through gunicorn against an echo route, worker memory. Run: `bench/run`
(or `python -m bench`); see docs/benchmark.md."""
