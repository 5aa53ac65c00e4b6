"""A worker's memory for the largest requests the server admits stays within its share of the
chart's memory limit (issue 24: a 29 MiB body of `{}`s, under the byte limit, took one worker to
941 MiB against the chart's 512 MiB). Measured on loopback: the worker's peak RSS (VmHWM)."""
from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from hooks import constants as C
from hooks.config import DEFAULT_MAX_REQUEST_BYTES, ServerSettings
from hooks.server import jsonio
from tests.loopback import ROOT, free_port, gunicorn, stop_all, wait_loaded  # noqa: F401 - stop_all is a fixture
from tests.sandbox_cases import minimal

MIB = 1024 * 1024


def _share_mib() -> float:
    """The chart's memory limit divided among the default number of workers (the master and the
    small requests in flight take the rest)."""
    limit = yaml.safe_load((ROOT / "chart" / "values.yaml").read_text())["resources"]["limits"]["memory"]
    assert limit.endswith("Mi"), limit
    return int(limit[:-2]) / ServerSettings().workers


def _peak_mib(pid: int) -> float:
    return int(re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text()).group(1)) / 1024


def _post(port: int, body: bytes) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/sandbox/sync", data=body, method="POST",
                                 headers={"Content-Type": "application/json", "Connection": "close"})
    try:
        with urllib.request.urlopen(req, timeout=120) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _with(extra: Any) -> bytes:
    body = minimal()
    body["extra"] = extra  # a field the hooks ignore: parsed, then answered as usual
    return json.dumps(body, separators=(",", ":")).encode()


def test_the_largest_admitted_requests_fit_a_workers_share_of_the_memory_limit(tmp_path: Path, stop_all: list) -> None:
    port = free_port()
    proc = gunicorn(tmp_path, port, workers=1)
    stop_all.append(proc)
    log = tmp_path / "gunicorn.log"
    wait_loaded(proc, log, workers=1)
    worker = int(re.findall(r"Booting worker with pid: (\d+)", log.read_text())[0])
    # Per value, short strings cost the most among admitted bodies; objects cost more but
    # the bound refuses that body first.
    most = C.MAX_REQUEST_VALUES - jsonio.values_bound(_with([])) - 1
    admitted = _with(["x" * 16] * most)
    refused = _with([{}] * ((DEFAULT_MAX_REQUEST_BYTES - len(_with([])) - 64) // 3))
    assert jsonio.values_bound(admitted) <= C.MAX_REQUEST_VALUES < jsonio.values_bound(refused)
    assert len(admitted) < len(refused) < DEFAULT_MAX_REQUEST_BYTES
    assert _post(port, admitted) == 200
    assert _post(port, refused) == 413
    peak = _peak_mib(worker)
    print(f"worker peak RSS {peak:.0f} MiB")  # shown with -s
    assert peak < _share_mib(), f"worker peak RSS {peak:.0f} MiB, share of the chart's limit {_share_mib():.0f} MiB"


def test_large_requests_are_answered_one_at_a_time_per_worker(monkeypatch: Any) -> None:
    """A worker's threads would multiply the peak above: requests of more than
    LARGE_REQUEST_VALUES values wait for each other; small ones do not wait for them."""
    import threading
    import time

    from hooks.server import app as app_module
    from hooks.server.routes import ROUTES, Route

    inside, most, lock = [0], [0], threading.Lock()

    def slow(request: Any, now: Any, config: Any) -> dict[str, Any]:
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.2)
        with lock:
            inside[0] -= 1
        return {"status": {}, "children": []}

    monkeypatch.setitem(ROUTES, "/sandbox/sync", Route("sandbox", "sync", slow))
    client = app_module.create_app(env={}).test_client()

    def post(body: bytes) -> int:
        return client.post("/sandbox/sync", data=body, content_type="application/json").status_code

    def concurrently(body: bytes) -> list[int]:
        codes: list[int] = []
        threads = [threading.Thread(target=lambda: codes.append(post(body))) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        return codes

    large = _with([0] * C.LARGE_REQUEST_VALUES)
    assert concurrently(large) == [200] * 4 and most[0] == 1
    most[0] = 0
    assert concurrently(_with([0] * 10)) == [200] * 4 and most[0] > 1
