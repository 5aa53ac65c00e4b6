"""Benchmarks of the hook server: in-process hook latency against a JSON floor, WarmPool scaling,
HTTP throughput through gunicorn against an echo route, worker memory. Run: `bench/run`
(or `python -m bench`); see docs/benchmark.md."""
from __future__ import annotations

import json
from typing import Any


def write_results(path: str, results: Any) -> None:
    """The figures of one run as JSON (--json), sorted so that two runs diff line by line."""
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=2, sort_keys=True)
        handle.write("\n")
