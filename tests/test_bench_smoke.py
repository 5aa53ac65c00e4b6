"""bench/ smoke test: `python -m bench --quick` runs every section and prints every target line."""
from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_quick(tmp_path):
    out_json = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--json", str(out_json)], cwd=ROOT,
                          capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0, proc.stderr
    table = proc.stdout
    for section in ("## 1+2. In-process latency", "## 3. HTTP", "## 4. Memory", "## Targets"):
        assert section in table, section
    for case in ("Sandbox running (all children observed)", "Sandbox new (no children)", "WarmPool N=10", "WarmPool N=100"):
        assert case in table, case
    assert "growth/10x" in table and "peak RSS" in table
    # The honest floor: the server's own JSON library (orjson), next to the stdlib one.
    head = next(line for line in table.splitlines() if line.startswith("| case"))
    assert "orjson floor" in head and "hook/orjson" in head and "json floor" in head and "hook/json" in head, head
    assert "/sandbox/sync" in table and "/bench/echo" in table or "failed:" in table
    targets = [line for line in table.splitlines() if line.startswith("- ")]
    for needle in ("Sandbox sync in-process p99 < 1 ms", "WarmPool sync at 5,000 < 100 ms",
                   "hook / orjson floor <= 2 for the running Sandbox", "hook / orjson floor <= 3 for every case",
                   "HTTP Sandbox sync >= 70% of echo", "worst-case Sandbox sync < 1000 ms"):
        matching = [line for line in targets if needle in line]
        assert len(matching) == 1, needle
        assert matching[0].split()[1] in ("MET", "NOT", "SKIPPED"), matching[0]
    results = json.loads(out_json.read_text())
    assert {"sandbox", "warmpool", "worst_case", "http", "peak_rss_mib", "targets"} <= set(results)
    assert len(results["targets"]) == 6
    assert "Sandbox worst case (schema maxima)" in table and results["worst_case"]["request_bytes"] > 1_000_000
    for row in results["sandbox"] + results["warmpool"] + [results["worst_case"]]:
        assert row["orjson_floor_median_ms"] > 0 and row["floor_median_ms"] > 0, row["case"]
        assert abs(row["orjson_floor_ratio"] - row["median_ms"] / row["orjson_floor_median_ms"]) < 1e-9, row["case"]


def test_literal_response_and_call_count_of_bench_literal() -> None:
    """bench/literal.py (docs/benchmark.md, "Third look"): its literal builds a fresh copy of the
    hook's exact answer, and it counts the hook's Python calls."""
    from bench import literal
    from tests.factory import NOW

    label, hook, make = literal.CASES[0]
    request = make()
    response = hook(request, NOW)
    build = literal.literal_of(response)
    first, second = build(), build()
    assert first == response and first is not second and first["children"] is not second["children"]
    assert 100 < literal.calls_per_sync(hook, request, n=5) < 5000
