"""Prometheus metrics (hooks/server/metrics.py): what each metric counts, in-process, and that counts add
up across workers under real gunicorn (2 sync workers on 127.0.0.1, multiprocess mode)."""
from __future__ import annotations

import copy
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from hooks.server import app as app_module
from hooks import constants as C
from hooks.server import metrics as hook_metrics
from hooks.config import Config
from hooks.server.routes import ROUTES, Route
from tests.factory import NOW, fake_uid
from tests.procs import die_with_parent
from tests.sandbox_cases import first_sync, invalid_new, minimal, observed_running, warm_bound, warm_timeout

ROOT = Path(__file__).resolve().parent.parent


def scrape_text(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when none)."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


class InProcess:
    def __init__(self, env: Optional[dict[str, str]] = None) -> None:
        self.app = app_module.create_app(Config(), clock=lambda: NOW, env=env or {}, log_stream=open(os.devnull, "w"))
        self.client = self.app.test_client()

    def post(self, path: str, body: Any) -> Any:
        data = body if isinstance(body, bytes) else json.dumps(body)
        return self.client.post(path, data=data, content_type="application/json")

    def sync(self, request: dict[str, Any], path: str = "/sandbox/sync") -> dict[str, Any]:
        response = self.post(path, request)
        assert response.status_code == 200, response.data
        return response.get_json()

    def scrape(self, path: str = "/metrics") -> dict[Any, float]:
        response = self.client.get(path)
        assert response.status_code == 200
        return scrape_text(response.get_data(as_text=True))


@pytest.fixture()
def server() -> InProcess:
    return InProcess()


def with_status(request: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    """The next call Metacontroller makes once the previous answer's status was written."""
    nxt = copy.deepcopy(request)
    nxt["parent"]["status"] = status
    return nxt


# ---------------------------------------------------------------------------------------------
# In-process: what each metric means


def test_requests_latency_and_errors_are_labelled_by_controller_and_hook(server: InProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    server.sync(minimal())
    server.sync(minimal())
    server.post("/sandbox/sync", b"{nope")
    server.post("/sandbox/sync", {"children": {}})
    server.sync({"parent": minimal()["parent"]}, "/sandbox/customize")
    m = server.scrape()
    assert value(m, "llmsafespace_hook_requests_total", controller="sandbox", hook="sync", outcome="ok") == 2
    assert value(m, "llmsafespace_hook_requests_total", controller="sandbox", hook="sync", outcome="bad_request") == 2
    assert value(m, "llmsafespace_hook_requests_total", controller="sandbox", hook="customize", outcome="ok") == 1
    assert value(m, "llmsafespace_hook_duration_seconds_count", controller="sandbox", hook="sync") == 4
    assert value(m, "llmsafespace_reconciliation_errors_total", controller="sandbox", hook="sync", error_type="InvalidJSON") == 1
    assert value(m, "llmsafespace_reconciliation_errors_total", controller="sandbox", hook="sync", error_type="BadRequest") == 1
    assert not [k for k in m if "path" in dict(k[1])], "no metric is labelled by raw path"

    def boom(request: Any, now: Any, config: Any) -> Any:
        raise ZeroDivisionError("bug")

    monkeypatch.setitem(ROUTES, "/sandbox/sync", Route("sandbox", "sync", boom))
    failing = InProcess()
    assert failing.post("/sandbox/sync", minimal()).status_code == 500
    m = failing.scrape()
    assert value(m, "llmsafespace_hook_requests_total", controller="sandbox", hook="sync", outcome="error") == 1
    assert value(m, "llmsafespace_reconciliation_errors_total", hook="sync", error_type="ZeroDivisionError") == 1


def test_every_route_has_zeroed_series_from_the_start(server: InProcess) -> None:
    m = server.scrape()
    for route in ROUTES.values():
        for outcome in ("ok", "bad_request", "error"):
            assert ("llmsafespace_hook_requests_total",
                    tuple(sorted({"controller": route.controller, "hook": route.hook, "outcome": outcome}.items()))) in m


def test_phase_transitions_count_changes_not_calls(server: InProcess) -> None:
    first = server.sync(minimal())
    again = server.sync(with_status(minimal(), first["status"]))  # steady state: nothing new
    assert again["status"]["phase"] == first["status"]["phase"] == "Creating"
    running = observed_running()  # its parent says Creating; the pod runs
    server.sync(running)
    finalized = server.sync({**first_sync(), "finalizing": True}, "/sandbox/finalize")
    assert finalized["finalized"] is True
    m = server.scrape()
    t = "llmsafespace_sandbox_phase_transitions_total"
    assert value(m, t, from_phase="None", to_phase="Creating") == 1
    assert value(m, t, from_phase="Creating", to_phase="Running") == 1
    assert value(m, t, from_phase="None", to_phase="Terminated") == 1
    assert value(m, t) == 3
    assert value(m, "llmsafespace_sandboxes_deleted_total") == 1


def test_warm_hits_and_misses(server: InProcess) -> None:
    bound = server.sync(warm_bound())
    server.sync(with_status(warm_bound(), bound["status"]))  # still warm: not counted again
    cold = server.sync(warm_timeout())
    assert bound["status"]["warmPodUsed"] is True and cold["status"]["warmPodUsed"] is False
    server.sync(minimal())  # no warm pod asked for: neither hit nor miss
    m = server.scrape()
    starts = "llmsafespace_warmpool_sandbox_starts_total"
    assert value(m, starts, result="warm", reason="WarmPodBound") == 1
    assert value(m, starts, result="cold", reason="WarmPodWaitTimeout") == 1
    assert value(m, starts) == 2
    assert not [k for k in m if {"namespace", "pool"} & set(dict(k[1]))], "no per-object label"


def test_validation_failures_count_new_failures(server: InProcess) -> None:
    first = server.sync(invalid_new())
    server.sync(with_status(invalid_new(), first["status"]))  # same failure again: not new
    m = server.scrape()
    assert value(m, "llmsafespace_validation_failures_total", controller="sandbox", condition="Validated", reason="InvalidSpec") == 1
    assert value(m, "llmsafespace_validation_failures_total") == 1


def warm_pool_request(available: int, assigned: int, pending: int, last_scale: Optional[str] = None,
                      previous: Optional[dict[str, Any]] = None, observed_pods: int = 0) -> dict[str, Any]:
    """A WarmPool request for the echo route, whose answer is the request itself: the top-level
    `status` and `children` stand for what a WarmPool hook would answer."""
    status: dict[str, Any] = {"availablePods": available, "assignedPods": assigned, "pendingPods": pending}
    if last_scale:
        status["lastScaleTime"] = last_scale
    parent = {"apiVersion": C.API_VERSION, "kind": C.KIND_WARMPOOL,
              "metadata": {"name": "python-pool", "namespace": "demo", "uid": fake_uid("wp"), "generation": 1},
              "spec": {"runtime": "python:3.11"}, "status": previous or {}}
    pods = {f"demo/p{i}": {"metadata": {"name": f"p{i}"}} for i in range(observed_pods)}
    desired = [{"apiVersion": C.API_VERSION, "kind": C.KIND_WARMPOD, "metadata": {"name": f"p{i}"}}
               for i in range(available + assigned + pending)]
    return {"parent": parent, "children": {C.GVK_WARMPOD: pods}, "status": status, "desired": desired}


def test_warm_pool_scale_operations(monkeypatch: pytest.MonkeyPatch) -> None:
    def answer(request: Any, now: Any, config: Any) -> Any:  # stands in for the WarmPool hook
        return {"status": request["status"], "children": request["desired"]}

    monkeypatch.setitem(ROUTES, "/warmpool/sync", Route("warmpool", "sync", answer))
    server = InProcess()
    server.sync(warm_pool_request(3, 1, 0, "2026-11-22T12:00:00Z", observed_pods=2), "/warmpool/sync")
    server.sync(warm_pool_request(2, 2, 0, "2026-11-22T12:00:00Z", previous={"lastScaleTime": "2026-11-22T12:00:00Z"},
                                  observed_pods=4), "/warmpool/sync")
    server.sync(warm_pool_request(1, 1, 0, "2026-11-22T12:10:00Z", previous={"lastScaleTime": "2026-11-22T12:00:00Z"},
                                  observed_pods=4), "/warmpool/sync")
    m = server.scrape()
    ops = "llmsafespace_warmpool_scale_operations_total"
    assert value(m, ops, direction="up") == 1
    assert value(m, ops, direction="down") == 1
    assert value(m, ops) == 2
    assert not [k for k in m if "warmpool_pods" in k[0] or "utilization" in k[0]], "per-pool gauges are gone (kube-state-metrics)"


def _pool_answer(request: Any, now: Any, config: Any) -> Any:  # stands in for the WarmPool hook
    return {"status": request["status"], "children": request["desired"]}


def _sandbox_answer(request: Any, now: Any, config: Any) -> Any:  # a sandbox's first warm-pod decision
    return {"status": request["status"], "children": []}


def _churn(server: InProcess, start: int, count: int) -> None:
    """`count` distinct pools in distinct namespaces, each synced and scaled once, and a sandbox
    served warm or cold from each, with a reason never seen before (a hostile status)."""
    for i in range(start, start + count):
        request = warm_pool_request(i % 5, 1, 0, "2026-11-22T12:00:00Z", observed_pods=1)
        request["parent"]["metadata"].update(name=f"pool-{i}", namespace=f"tenant-{i}")
        server.sync(request, "/warmpool/sync")
        sandbox = copy.deepcopy(minimal())
        sandbox["parent"]["metadata"].update(namespace=f"tenant-{i}")
        sandbox["status"] = {"warmPodUsed": i % 2 == 0, "warmPool": f"pool-{i}", "phase": "Creating",
                             "conditions": [{"type": "WarmPod", "status": "True", "reason": f"Reason{i}"}]}
        server.sync(sandbox)


def test_metrics_stay_bounded_after_thousands_of_distinct_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13 item 8: after 3,000 pools /metrics grew from 27 KB to 1.4 MB (series are never
    removed). No label may take one value per object."""
    monkeypatch.setitem(ROUTES, "/warmpool/sync", Route("warmpool", "sync", _pool_answer))
    monkeypatch.setitem(ROUTES, "/sandbox/sync", Route("sandbox", "sync", _sandbox_answer))
    server = InProcess()
    _churn(server, 0, 20)
    small = len(server.client.get("/metrics").data)
    _churn(server, 20, 3_000)
    response = server.client.get("/metrics")
    m = scrape_text(response.get_data(as_text=True))
    assert len(response.data) <= small + 4096, f"{small} -> {len(response.data)} bytes"
    assert len(response.data) < 64 * 1024
    starts = "llmsafespace_warmpool_sandbox_starts_total"
    assert value(m, starts) == 3_020 and value(m, starts, result="warm") == 1_510  # nothing lost, only merged
    assert value(m, "llmsafespace_warmpool_scale_operations_total") == 3_020
    reasons = {dict(k[1])["reason"] for k in m if k[0] == starts}
    assert len(reasons) <= hook_metrics.MAX_LABEL_VALUES + 1 and hook_metrics.OTHER in reasons


def test_metrics_on_the_hook_port_need_the_hook_token_when_one_is_configured() -> None:
    """Who may scrape (docs/observability.md): with a token, /metrics on the hook port needs it
    like every hook call; the master's METRICS_PORT is left to the chart's NetworkPolicy."""
    guarded = InProcess({"LLMSS_HOOK_TOKEN": "s3cret"})
    assert guarded.client.get("/metrics").status_code == 401
    assert guarded.client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert guarded.client.get("/metrics", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert guarded.client.get("/metrics").get_json() == {"error": "missing or wrong bearer token", "status": 401}
    assert guarded.client.get("/healthz").status_code == 200 and guarded.client.get("/readyz").status_code == 200
    assert InProcess().client.get("/metrics").status_code == 200  # no token configured: none asked for


def test_metrics_path_is_configurable_and_can_be_switched_off() -> None:
    moved = InProcess({"METRICS_PATH": "/internal/metrics"})
    moved.sync(minimal())
    assert moved.client.get("/metrics").status_code == 404
    assert value(moved.scrape("/internal/metrics"), "llmsafespace_hook_requests_total", outcome="ok") == 1
    assert InProcess({"METRICS_PATH": ""}).client.get("/metrics").status_code == 404


def test_the_echo_route_exists_only_for_the_benchmark() -> None:
    assert InProcess().post("/bench/echo", {"parent": {"metadata": {}}}).status_code == 404
    echo = InProcess({"LLMSS_BENCH_ECHO": "1"})
    assert echo.sync({"a": [1, 2]}, "/bench/echo") == {"a": [1, 2]}


# ---------------------------------------------------------------------------------------------
# Under gunicorn: two worker processes, one shared picture


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(method: str, url: str, body: Optional[bytes] = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Gunicorn:
    def __init__(self, tmp: Path) -> None:
        self.port, self.metrics_port = free_port(), free_port()
        self.dir = tmp / "prometheus"
        self.dir.mkdir()
        (self.dir / "counter_999999.db").write_bytes(b"")  # a previous server's leftovers: wiped at start
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(self.dir), "METRICS_PORT": str(self.metrics_port),
               "METRICS_HOST": "127.0.0.1", "WORKERS": "2", "LLMSS_BENCH_ECHO": "1", "LOG_LEVEL": "WARNING"}
        self.log = open(tmp / "gunicorn.log", "w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", str(ROOT / "hooks" / "server" / "gunicorn_conf.py"),
             "--bind", f"127.0.0.1:{self.port}", "hooks.server.app:app"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        deadline = time.monotonic() + 20
        while len(self.worker_pids()) < 2 or not self.answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError("gunicorn did not start:\n" + (tmp / "gunicorn.log").read_text())
            time.sleep(0.1)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answers(self) -> bool:
        try:
            return http("GET", self.url("/healthz"))[0] == 200
        except OSError:
            return False

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def scrape(self, via_master: bool = False) -> dict[Any, float]:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics" if via_master else self.url("/metrics")
        code, body = http("GET", url)
        assert code == 200
        return scrape_text(body.decode())

    def per_worker(self, name: str, **labels: str) -> dict[str, float]:
        """The value each worker process wrote for one counter, read from its own file."""
        out = {}
        for path in glob.glob(str(self.dir / "counter_*.db")):
            pid = Path(path).stem.split("_")[1]
            for key, val, _, _ in MmapedDict.read_all_values_from_file(path):
                metric, sample, sample_labels, _ = json.loads(key)[:4]
                if sample == name and labels.items() <= sample_labels.items():
                    out[pid] = out.get(pid, 0.0) + val
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture()
def gunicorn(tmp_path: Path) -> Iterator[Gunicorn]:
    server = Gunicorn(tmp_path)
    try:
        yield server
    finally:
        server.stop()


def test_counts_add_up_across_workers(gunicorn: Gunicorn) -> None:
    assert not (gunicorn.dir / "counter_999999.db").exists()
    body = json.dumps(minimal()).encode()
    sent = 0
    ok = "llmsafespace_hook_requests_total"
    # Concurrent clients spread the calls over both sync workers; go on until both served some.
    with ThreadPoolExecutor(8) as pool:
        while sent < 800:
            codes = list(pool.map(lambda _: http("POST", gunicorn.url("/sandbox/sync"), body)[0], range(40)))
            assert codes == [200] * 40
            sent += 40
            served = gunicorn.per_worker(ok, controller="sandbox", hook="sync", outcome="ok")
            if len([v for v in served.values() if v > 0]) >= 2:
                break
    assert http("POST", gunicorn.url("/sandbox/sync"), b"{")[0] == 400
    served = gunicorn.per_worker(ok, controller="sandbox", hook="sync", outcome="ok")
    assert len([v for v in served.values() if v > 0]) == 2, served
    assert sum(served.values()) == sent

    for via_master in (False, True):
        m = gunicorn.scrape(via_master)
        assert value(m, ok, controller="sandbox", hook="sync", outcome="ok") == sent
        assert value(m, ok, controller="sandbox", hook="sync", outcome="bad_request") == 1
        assert value(m, "llmsafespace_hook_duration_seconds_count", controller="sandbox", hook="sync") == sent + 1
        assert value(m, "llmsafespace_reconciliation_errors_total", error_type="InvalidJSON") == 1
        # every call saw a new sandbox (no previous status): one transition each
        assert value(m, "llmsafespace_sandbox_phase_transitions_total", from_phase="None", to_phase="Creating") == sent

    # A worker that dies keeps its counts (child_exit marks it dead; counters are not live gauges).
    victim = gunicorn.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while victim in gunicorn.worker_pids() or len(gunicorn.worker_pids()) < 2:
        assert time.monotonic() < deadline, "gunicorn did not replace the worker"
        time.sleep(0.1)
    assert value(gunicorn.scrape(), ok, controller="sandbox", hook="sync", outcome="ok") == sent
