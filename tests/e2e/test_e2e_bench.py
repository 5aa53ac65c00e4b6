"""A smoke run of the end-to-end benchmark (bench/e2e.py) on the suite's control plane: every
section runs and reports, and the properties that do not depend on the machine's speed hold
(everything reaches Running, warm sandboxes are served warm, a quiet cluster writes nothing)."""
from __future__ import annotations

from typing import Any

import pytest

from bench import e2e
from tests.e2e.kube import Kube
from tests.e2e.replicas import KILLED_REPLICA_ERRORS


@pytest.mark.allow_errors(*KILLED_REPLICA_ERRORS)  # the replica section kills a hook server
def test_benchmark_sections_run_and_report(kube: Kube, clean_cluster: None) -> None:
    # Sections do not wait for their namespace's deletion (~15 s each); the burst's quiet period
    # must not see the earlier ones' deletions, so it starts once they are done.
    results: dict[str, Any] = {
        "sizes": {"n": 3, "burst": 6, "quiet": 3.0},
        "cold": e2e.run_latency(kube, 3, warm=False, timeout=60, wait_cleanup=False),
        "warm": e2e.run_latency(kube, 3, warm=True, timeout=60, wait_cleanup=False),
        "latency_floor": e2e.run_latency_floor(kube, 3, timeout=60, wait_cleanup=False),
        "floor": e2e.run_floor(kube, 6, timeout=60, wait_cleanup=False),
    }
    e2e.wait_deleted(kube)
    results["burst"] = e2e.run_burst(kube, 6, timeout=60, quiet_seconds=3.0, wait_cleanup=False)
    results["replica_kill"] = e2e.run_replica_kill(kube, 6, timeout=90)
    assert results["replica_kill"]["complete"] and results["replica_kill"]["served"]["hooks-replica-1"] > 0
    assert results["cold"]["complete"] and results["warm"]["complete"] and results["burst"]["complete"]
    assert results["warm"]["served_warm"] == 3
    assert 0 < results["cold"]["p50"] < 30 and 0 < results["warm"]["p50"] < 30
    assert results["latency_floor"]["complete"] and 0 < results["latency_floor"]["p50"] < 30
    assert all(len(results[k]["samples_ms"]) == 3 for k in ("cold", "warm", "latency_floor"))
    assert results["floor"]["per_s"] > 0 and results["burst"]["per_s"] > 0
    burst = results["burst"]
    assert burst["calls"].get("sandbox/sync", 0) >= 6, burst["calls"]
    assert burst["api_writes"].get("sandboxes/status", 0) >= 6, burst["api_writes"]
    assert burst["quiet"]["api_writes"] == {}, "Running sandboxes kept being written"
    assert burst["quiet"]["hook_calls"] == {}, "Running sandboxes kept being synced"
    results["targets"] = e2e.targets(results)
    table = e2e.table(results)
    for heading in ("## 1. apply -> Running", "## 2+3. Burst and its floor", "## 4. Quiet period", "## Targets"):
        assert heading in table, heading
    assert len(results["targets"]) == 6
    assert e2e.cdf_picture(results).count("<polyline") == 3
    assert "crashed" not in table
    results["crashes"] = [{"component": "metacontroller", "exit": 2, "known": None}]
    assert "WARNING: metacontroller crashed (exit 2) and was started again during the run (not a known defect)" in e2e.table(results)
