"""A real gunicorn serving the hooks on 127.0.0.1, configured as deployed (hooks/server/gunicorn_conf.py),
for bounded loopback tests: start it on a free port, wait for its workers, stop it by process
group."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator, Mapping, Optional

import pytest

from hooks import constants as C
from tests.procs import die_with_parent
from tests.sandbox_cases import minimal

ROOT = Path(__file__).parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(port: int, token: Optional[str] = None, timeout: float = 10) -> int:
    """One hook call on a fresh connection (so the workers share the calls)."""
    headers = {"Content-Type": "application/json", "Connection": "close"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(f"http://127.0.0.1:{port}/sandbox/sync", data=json.dumps(minimal()).encode(),
                                 method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def gunicorn(tmp_path: Path, port: int, env: Mapping[str, str] = {}, workers: int = 2) -> subprocess.Popen[str]:
    """Output to tmp_path/gunicorn.log; its own process group (stop_all ends the whole group)."""
    full = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"), "WORKERS": str(workers),
            "LOG_LEVEL": "WARNING", **env}
    for name in (C.HOOK_TOKEN_ENV, C.HOOK_TOKEN_FILE_ENV):
        if name not in env:
            full.pop(name, None)
    with (tmp_path / "gunicorn.log").open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", str(ROOT / "hooks" / "server" / "gunicorn_conf.py"),
             "--bind", f"127.0.0.1:{port}", "hooks.server.app:app"],
            cwd=ROOT, env=full, stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True, preexec_fn=die_with_parent)


def wait_loaded(proc: subprocess.Popen[str], log: Path, workers: int = 2, within: float = 30) -> None:
    """Until every worker has loaded the hooks (hooks/server/gunicorn_conf.py logs it)."""
    deadline = time.monotonic() + within
    while log.read_text().count("loaded the hooks") < workers:
        assert proc.poll() is None, log.read_text()[-2000:]
        assert time.monotonic() < deadline, f"gunicorn's {workers} workers did not load within {within} s"
        time.sleep(0.1)


def stop(proc: subprocess.Popen[str]) -> None:
    """The server's whole process group: TERM, then KILL after 15 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture()
def stop_all() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        stop(proc)
