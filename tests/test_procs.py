"""Processes the suite starts do not outlive it: a run stopped by SIGTERM (a CI runner's timeout)
tears its fixtures down, and one killed outright takes its servers with it."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _alive(pid: int) -> bool:
    """Running, or stopped: not gone and not a zombie (a killed orphan waits for init to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _gone(pid: int, within: float = 10) -> bool:
    deadline = time.monotonic() + within
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _wait_for(path: Path, within: float = 30) -> str:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.05)
    raise AssertionError(f"{path} was not written within {within} s")


def test_a_process_started_with_die_with_parent_dies_with_a_killed_parent(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import subprocess, sys, time
        from tests.procs import die_with_parent
        child = subprocess.Popen(["sleep", "300"], preexec_fn=die_with_parent, start_new_session=True)
        open({str(pid_file)!r}, "w").write(str(child.pid))
        time.sleep(300)
        """)], cwd=ROOT)
    child = int(_wait_for(pid_file))
    try:
        parent.kill()  # SIGKILL: no handler, no finally
        parent.wait(10)
        assert _gone(child), "the child outlived its killed parent"
    finally:
        _kill(child)


def test_sigterm_stops_a_test_run_with_its_fixtures_torn_down(tmp_path: Path) -> None:
    pid_file, torn = tmp_path / "pid", tmp_path / "torn-down"
    test_file = tmp_path / "test_sleeper.py"
    test_file.write_text(textwrap.dedent(f"""
        import subprocess, time
        import pytest

        @pytest.fixture(scope="session")
        def sleeper():
            proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
            open({str(pid_file)!r}, "w").write(str(proc.pid))
            yield
            proc.kill()
            proc.wait()
            open({str(torn)!r}, "w").write("yes")

        def test_waits(sleeper):
            time.sleep(300)
        """))
    run = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest",
                            "--rootdir", str(tmp_path), str(test_file)], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sleeper = int(_wait_for(pid_file))
    try:
        run.send_signal(signal.SIGTERM)
        out, _ = run.communicate(timeout=30)
        assert torn.exists(), out
        assert _gone(sleeper, 0)
    finally:
        if run.poll() is None:
            run.kill()
        _kill(sleeper)
