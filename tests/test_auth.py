"""Bearer-token authentication (hooks/server/auth.py): a configured source that yields no token stops the
server; a rotated token file is honoured by every worker within a bounded time, and the previous
token is accepted for a documented overlap. Pure functions with an injected clock first, then the
app, then a real 2-worker gunicorn on 127.0.0.1 (bounded)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Optional

import pytest

from hooks.server import app as app_module
from hooks.server import auth
from hooks import constants as C
from hooks.config import Config
from tests import loopback
from tests.factory import NOW
from tests.loopback import call, free_port, stop_all, wait_loaded  # noqa: F401 - stop_all is a fixture
from tests.sandbox_cases import minimal

OVERLAP, RECHECK = C.HOOK_TOKEN_OVERLAP_SECONDS, C.HOOK_TOKEN_RECHECK_SECONDS


# ---------------------------------------------------------------------------------------------
# A configured source that yields no token is a start-up error naming the variable

@pytest.mark.parametrize("content", ["", "\n", "   \t\n  "], ids=["empty", "newline", "whitespace"])
def test_token_file_without_a_token_stops_the_app(tmp_path: Path, content: str) -> None:
    path = tmp_path / "token"
    path.write_text(content)
    with pytest.raises(auth.TokenConfigError, match=C.HOOK_TOKEN_FILE_ENV):
        app_module.create_app(Config(), clock=lambda: NOW, env={C.HOOK_TOKEN_FILE_ENV: str(path)})


@pytest.mark.parametrize("env, variable", [
    ({C.HOOK_TOKEN_ENV: ""}, C.HOOK_TOKEN_ENV),
    ({C.HOOK_TOKEN_ENV: "  \n"}, C.HOOK_TOKEN_ENV),
    ({C.HOOK_TOKEN_FILE_ENV: " "}, C.HOOK_TOKEN_FILE_ENV),
    ({C.HOOK_TOKEN_FILE_ENV: "/nonexistent/token"}, C.HOOK_TOKEN_FILE_ENV),
])
def test_other_token_sources_without_a_token_stop_the_app(env: dict[str, str], variable: str) -> None:
    with pytest.raises(auth.TokenConfigError, match=variable):
        auth.from_env(env)


def test_no_token_source_means_no_authentication() -> None:
    assert auth.from_env({}) is None


# ---------------------------------------------------------------------------------------------
# Pure decisions, injected clock

A, B, CC = b"token-a", b"token-b", b"token-c"


@pytest.mark.parametrize("header, ok", [
    ("Bearer token-a", True),
    ("bearer token-a", True),  # RFC 7235: the scheme is case-insensitive
    ("BEARER token-a", True),
    ("Bearer  token-a", True),  # 1*SP
    ("Bearer token-b", False),  # the previous token, its overlap over
    ("Bearer token-a ", False),
    ("Bearer token-A", False),  # the token itself is case-sensitive
    ("Basic token-a", False),
    ("token-a", False),
    ("Bearertoken-a", False),
    ("Bearer ", False),
    ("", False),
])
def test_header_forms(header: str, ok: bool) -> None:
    assert auth.accepts(auth.TokenState(current=A, previous=B, previous_until=10.0), header, now=10.0) is ok


@pytest.mark.parametrize("offset, previous_ok", [(0.0, True), (OVERLAP - 0.001, True), (OVERLAP, False), (OVERLAP + 3600, False)])
def test_previous_token_is_accepted_for_the_overlap_only(offset: float, previous_ok: bool) -> None:
    changed_at = 1000.0
    state = auth.observed(auth.TokenState(current=A, checked_at=990.0), B, changed_at)
    assert state == auth.TokenState(current=B, previous=A, previous_until=changed_at + OVERLAP, checked_at=changed_at)
    now = changed_at + offset
    assert auth.accepts(state, "Bearer token-b", now)
    assert auth.accepts(state, "Bearer token-a", now) is previous_ok
    assert not auth.accepts(state, "Bearer token-c", now)


@pytest.mark.parametrize("read, expected", [
    (None, auth.TokenState(current=A, checked_at=5.0)),  # unreadable or emptied: keep the token, stay closed
    (A, auth.TokenState(current=A, checked_at=5.0)),  # unchanged: no overlap starts
    (B, auth.TokenState(current=B, previous=A, previous_until=5.0 + OVERLAP, checked_at=5.0)),
])
def test_observed(read: Optional[bytes], expected: auth.TokenState) -> None:
    assert auth.observed(auth.TokenState(current=A), read, 5.0) == expected


def test_two_rotations_keep_only_the_last_previous_token() -> None:
    state = auth.observed(auth.observed(auth.TokenState(current=A), B, 1.0), CC, 2.0)
    assert (state.current, state.previous) == (CC, B)
    assert not auth.accepts(state, "Bearer token-a", 2.0)


@pytest.mark.parametrize("elapsed, due", [(0.0, False), (RECHECK - 0.01, False), (RECHECK, True), (3600.0, True)])
def test_recheck_is_bounded(elapsed: float, due: bool) -> None:
    assert auth.due(auth.TokenState(current=A, checked_at=100.0), 100.0 + elapsed) is due


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_app_follows_a_rotated_token_file(tmp_path: Path) -> None:
    path, clock = tmp_path / "token", Clock()
    path.write_text("token-a\n")
    client = app_module.create_app(Config(), clock=lambda: NOW, env={C.HOOK_TOKEN_FILE_ENV: str(path)},
                                   token_clock=clock).test_client()

    def code(token: str) -> int:
        return client.post("/sandbox/sync", json=minimal(), headers={"Authorization": f"bearer {token}"}).status_code

    assert (code("token-a"), code("token-b")) == (200, 401)
    path.write_text("token-b\n")
    clock.now += RECHECK - 1  # not re-read yet: bounded staleness, not per-call I/O
    assert (code("token-a"), code("token-b")) == (200, 401)
    clock.now += 1
    assert (code("token-b"), code("token-a"), code("token-c")) == (200, 200, 401)
    path.write_text("  \n")  # a Secret emptied by mistake never opens the server
    clock.now += RECHECK
    assert (code("token-b"), code("token-a")) == (200, 200)
    assert client.post("/sandbox/sync", json=minimal()).status_code == 401
    clock.now += OVERLAP
    assert (code("token-b"), code("token-a")) == (200, 401)


# ---------------------------------------------------------------------------------------------
# A real gunicorn on 127.0.0.1


def gunicorn(tmp_path: Path, token_file: Path, port: int) -> subprocess.Popen[str]:
    return loopback.gunicorn(tmp_path, port, {C.HOOK_TOKEN_FILE_ENV: str(token_file)})


def test_gunicorn_refuses_to_start_with_an_empty_token_file(tmp_path: Path, stop_all: list) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(" \n")
    proc = gunicorn(tmp_path, token_file, free_port())
    stop_all.append(proc)
    proc.wait(timeout=20)
    out = (tmp_path / "gunicorn.log").read_text()
    assert proc.returncode != 0
    assert f"{C.HOOK_TOKEN_FILE_ENV} is set but holds no token" in out, out[-2000:]


def _serving_token_a(tmp_path: Path, stop_all: list) -> tuple[subprocess.Popen[str], int, Path]:
    """gunicorn with two workers, both loaded with token-a: the server, its port and its log."""
    port = free_port()
    (tmp_path / "token").write_text("token-a\n")
    proc = gunicorn(tmp_path, tmp_path / "token", port)
    stop_all.append(proc)
    wait_loaded(proc, tmp_path / "gunicorn.log")
    return proc, port, tmp_path / "gunicorn.log"


def _rotate_to_token_b(tmp_path: Path) -> None:
    """The way the kubelet does it: write a new file, rename it over the old one."""
    (tmp_path / "token.new").write_text("token-b\n")
    os.replace(tmp_path / "token.new", tmp_path / "token")


def test_gunicorn_workers_follow_a_rotated_token_file(tmp_path: Path, stop_all: list) -> None:
    _, port, log = _serving_token_a(tmp_path, stop_all)
    assert call(port, "token-a") == 200
    assert [call(port, "token-b") for _ in range(6)] == [401] * 6
    _rotate_to_token_b(tmp_path)
    rotated = time.monotonic()
    # Every worker honours it within the recheck interval: each logs the change, and 20
    # consecutive fresh connections are accepted.
    streak = 0
    while streak < 20 or log.read_text().count('"hook_token_rotated"') < 2:
        if call(port, "token-b") == 200:
            streak += 1
        else:
            streak = 0
            time.sleep(0.05)  # not yet re-read: do not hammer the two workers meanwhile
        assert time.monotonic() - rotated < RECHECK + 5, f"token-b not accepted by all workers within {RECHECK + 5} s"
    overlap = [call(port, "token-a") for _ in range(10)]
    refused = [call(port, None) for _ in range(4)] + [call(port, "token-c") for _ in range(4)]
    if overlap != [200] * 10 or refused != [401] * 8:
        raise AssertionError(f"overlap {overlap}, refused {refused}:\n{log.read_text()[-3000:]}")


def test_workers_started_after_a_rotation_accept_the_previous_token(tmp_path: Path, stop_all: list) -> None:
    """A worker that starts after the file changed (still loading then, or restarted by the master
    during the overlap) continues the master's state: it accepts the previous token as well
    (issue 24: such a worker knew only the new one, and with two workers about half of the calls
    with the previous token were refused)."""
    proc, port, log = _serving_token_a(tmp_path, stop_all)
    first = [int(pid) for pid in re.findall(r"Booting worker with pid: (\d+)", log.read_text())]
    assert len(first) == 2 and [call(port, "token-a") for _ in range(4)] == [200] * 4
    _rotate_to_token_b(tmp_path)
    for pid in first:  # both workers end before either re-reads the file; the master starts two more
        os.kill(pid, signal.SIGKILL)
    wait_loaded(proc, log, workers=4)
    new, old = [call(port, "token-b") for _ in range(10)], [call(port, "token-a") for _ in range(10)]
    wrong = [call(port, "token-c") for _ in range(4)]
    if new != [200] * 10 or old != [200] * 10 or wrong != [401] * 4:
        raise AssertionError(f"new {new}, previous {old}, wrong {wrong}:\n{log.read_text()[-3000:]}")
    # Each new worker says so (operators wait for one line per worker); the master does not.
    assert log.read_text().count('"hook_token_rotated"') == 2, log.read_text()[-3000:]


def test_a_worker_restarted_after_the_overlap_refuses_the_previous_token(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The master reads the file only before a fork, maybe long after it changed: the overlap
    counts from the file's modification time, so a late restart never extends it."""
    # Importing the gunicorn config points prometheus at a multiprocess directory for the server
    # it configures; undo that here, or every later in-process metrics test reads zeros.
    for name in ("PROMETHEUS_MULTIPROC_DIR", "_LLMSS_PRIVATE_METRICS_DIR"):
        # setenv first so the teardown restores the name; delenv alone records nothing for an absent one
        monkeypatch.setenv(name, os.environ.get(name, ""))
        if not os.environ.get(name):
            monkeypatch.delenv(name)
    from hooks.server import gunicorn_conf

    token_file = tmp_path / "token"
    token_file.write_text("token-a\n")
    master = auth.from_env({C.HOOK_TOKEN_FILE_ENV: str(token_file)})
    token_file.write_text("token-b\n")
    changed = time.time() - OVERLAP - 1
    os.utime(token_file, (changed, changed))
    old, auth.inherited = auth.inherited, master
    try:
        gunicorn_conf.pre_fork(None, None)
        worker = auth.from_env({C.HOOK_TOKEN_FILE_ENV: str(token_file)})
    finally:
        auth.inherited = old
    assert worker.accepts("Bearer token-b") and not worker.accepts("Bearer token-a")
    os.utime(token_file, None)  # changed just now: the previous token is still good
    master = auth.from_env({C.HOOK_TOKEN_FILE_ENV: str(token_file)})
    master.state = auth.TokenState(current=b"token-a", checked_at=master.state.checked_at)
    auth.inherited = master
    try:
        gunicorn_conf.pre_fork(None, None)
        worker = auth.from_env({C.HOOK_TOKEN_FILE_ENV: str(token_file)})
    finally:
        auth.inherited = old
    assert worker.accepts("Bearer token-b") and worker.accepts("Bearer token-a")
