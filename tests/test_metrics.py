"""Prometheus metrics: counted per call in-process, and summed across gunicorn workers (multiprocess
mode) when scraped from a worker's /metrics or the master's METRICS_PORT."""
from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hooks import app as app_module
from hooks import sandbox_sync
from hooks.config import Config
from tests import sandbox_cases as cases
from tests.factory import NOW

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "requests" / "sandbox-sync.json"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


def post(client: Any, path: str, body: Any) -> Any:
    return client.post(path, data=body if isinstance(body, bytes) else json.dumps(body), content_type="application/json")


@pytest.fixture()
def client() -> Any:
    assert not os.environ.get("PROMETHEUS_MULTIPROC_DIR"), "in-process tests need single-process metrics"
    return app_module.create_app(Config(), clock=lambda: NOW, env={}).test_client()


def test_requests_latency_and_errors_per_hook(client: Any) -> None:
    for _ in range(3):
        assert post(client, "/sandbox/sync", cases.minimal()).status_code == 200
    assert post(client, "/sandbox/sync", b"{broken").status_code == 400
    text = client.get("/metrics").get_data(as_text=True)
    assert value(text, "llmsafespace_hook_requests_total", controller="sandbox", hook="sync", outcome="ok") == 3
    assert value(text, "llmsafespace_hook_requests_total", controller="sandbox", hook="sync", outcome="bad_request") == 1
    assert value(text, "llmsafespace_hook_duration_seconds_count", controller="sandbox", hook="sync") == 4
    assert value(text, "llmsafespace_reconciliation_errors_total", controller="sandbox", hook="sync", error_type="InvalidJSON") == 1
    assert "/sandbox/sync" not in text  # labelled by controller and hook, never by raw path


def test_internal_errors_are_counted_by_type(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(request: Any, now: Any, config: Any) -> Any:
        raise KeyError("bug")

    from hooks.routes import ROUTES, Route

    monkeypatch.setitem(ROUTES, "/sandbox/sync", Route("sandbox", "sync", boom))
    failing = app_module.create_app(Config(), clock=lambda: NOW, env={}).test_client()
    assert post(failing, "/sandbox/sync", cases.minimal()).status_code == 500
    text = failing.get("/metrics").get_data(as_text=True)
    assert value(text, "llmsafespace_reconciliation_errors_total", controller="sandbox", hook="sync", error_type="KeyError") == 1
    assert value(text, "llmsafespace_hook_requests_total", controller="sandbox", hook="sync", outcome="error") == 1


def test_domain_metrics_count_changes_not_calls(client: Any) -> None:
    request = cases.minimal()
    first = sandbox_sync.sync(request, NOW)
    post(client, "/sandbox/sync", request)  # None -> Creating
    steady = copy.deepcopy(request)
    steady["parent"]["status"] = first["status"]
    post(client, "/sandbox/sync", steady)  # Creating -> Creating: no transition
    post(client, "/sandbox/sync", cases.invalid_new())  # None -> Failed, a validation failure
    post(client, "/sandbox/sync", cases.warm_timeout())  # a cold fallback of a warm request
    post(client, "/sandbox/sync", cases.warm_bound())  # a warm start
    post(client, "/sandbox/finalize", cases.finalize_done())
    text = client.get("/metrics").get_data(as_text=True)
    transitions = "llmsafespace_sandbox_phase_transitions_total"
    assert value(text, transitions, from_phase="None", to_phase="Creating") == 2  # minimal, warm-timeout
    assert value(text, transitions, from_phase="None", to_phase="Failed") == 1
    assert value(text, "llmsafespace_validation_failures_total", controller="sandbox", condition="Validated", reason="InvalidSpec") == 1
    starts = "llmsafespace_warmpool_sandbox_starts_total"
    assert value(text, starts, namespace="demo", pool="python-pool", result="cold", reason="WarmPodWaitTimeout") == 1
    assert value(text, starts, namespace="demo", pool="python-pool", result="warm", reason="WarmPodBound") == 1
    assert value(text, "llmsafespace_sandboxes_deleted_total") == 1


def test_warm_pool_gauges_follow_the_latest_answer(client: Any) -> None:
    from tests import warm_cases

    request = warm_cases.autoscale_up()  # a busy pool: some pods assigned, some available
    response = post(client, "/warmpool/sync", request)
    assert response.status_code == 200, response.get_data(as_text=True)
    status = response.get_json()["status"]
    text = client.get("/metrics").get_data(as_text=True)
    pool = request["parent"]["metadata"]
    for state, key in (("available", "availablePods"), ("assigned", "assignedPods"), ("pending", "pendingPods")):
        assert value(text, "llmsafespace_warmpool_pods", namespace=pool["namespace"], pool=pool["name"], state=state) == status.get(key, 0)


# ---------------------------------------------------------------------------------------------
# Several gunicorn workers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer in time")


@pytest.fixture()
def gunicorn(tmp_path: Path) -> Iterator[tuple[int, int, Path]]:
    port, metrics_port = free_port(), free_port()
    multiproc = tmp_path / "prom"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMSS_")}
    env.update(PROMETHEUS_MULTIPROC_DIR=str(multiproc), METRICS_PORT=str(metrics_port), METRICS_HOST="127.0.0.1",
               WORKERS="2", LOG_LEVEL="WARNING")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "--config", "hooks/gunicorn_conf.py",
         "--bind", f"127.0.0.1:{port}", "hooks.app:app"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/healthz", time.monotonic() + 30)
        yield port, metrics_port, multiproc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def test_counts_add_up_across_workers(gunicorn: tuple[int, int, Path]) -> None:
    port, metrics_port, multiproc = gunicorn
    body = EXAMPLE.read_bytes()
    def call(_: int) -> int:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/sandbox/sync", data=body, method="POST",
                                     headers={"Content-Type": "application/json", "Connection": "close"})
        with urllib.request.urlopen(req, timeout=10) as response:
            return int(response.status)

    # Concurrent batches keep both sync workers busy; the second may still be booting at first,
    # so send batches (bounded) until both have answered some calls.
    calls, writers = 0, set()
    deadline = time.monotonic() + 15
    with ThreadPoolExecutor(max_workers=6) as pool:
        while len(writers) < 2 and time.monotonic() < deadline:
            assert set(pool.map(call, range(30))) == {200}
            calls += 30
            writers = {p.name for p in multiproc.glob("counter_*.db")}
    assert len(writers) >= 2, f"expected both workers to have answered, saw value files {writers}"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        from_worker = response.read().decode()
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
        from_master = response.read().decode()
    for text in (from_worker, from_master):  # whichever process answers, it reports every worker
        assert value(text, "llmsafespace_hook_requests_total", controller="sandbox", hook="sync", outcome="ok") == calls
        assert value(text, "llmsafespace_hook_duration_seconds_count", controller="sandbox", hook="sync") == calls
        assert value(text, "llmsafespace_sandbox_phase_transitions_total", from_phase="None", to_phase="Creating") == calls
