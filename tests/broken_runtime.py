"""A deliberately broken reference runtime for the conformance check's negative tests
(tests/test_runtime_conformance.py), test-only, never in runtime/:

    python -m tests.broken_runtime RULE

runs runtime/ (`python -m runtime`) with exactly one rule of docs/runtime-contract.md broken, named
as conformance/checks.py names it; everything else is the reference runtime unchanged. Each break
patches the smallest thing that a real runtime could get wrong the same way."""
from __future__ import annotations

import atexit
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from typing import Any, Callable

from runtime import auth, execs, files, server, sessions

BREAKS: dict[str, Callable[[], None]] = {}
NEEDS_ROOT = {"non-root uid", "read-only root"}  # started as uid 0 (conformance --uid 0)
UID = 1000  # the uid the root-started breaks drop to


def breaks(rule: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
    def register(fn: Callable[[], None]) -> Callable[[], None]:
        BREAKS[rule] = fn
        return fn
    return register


def _replace(source: str, old: str, new: str) -> str:
    if old not in source:  # the reference runtime changed: the break would silently do nothing
        raise SystemExit(f"broken_runtime: {old!r} is no longer in the runtime's source; update the break")
    return source.replace(old, new, 1)


@breaks("probes")
def never_ready() -> None:
    """/ready never says ready (a runtime that reports readiness before, or never after, start)."""
    original = server.Handler._probe

    def probe(self: server.Handler, route: str) -> None:
        if route == "/ready":
            return self._reply(503, {"status": "starting"})
        return original(self, route)
    server.Handler._probe = probe  # type: ignore[method-assign]


@breaks("signatures")
def accepts_any_call() -> None:
    """Every call is taken as authenticated, signed or not."""
    empty = {"b": hashlib.sha256(b"").hexdigest()}
    auth.Verifier.verify = lambda self, *a, **k: dict(empty)  # type: ignore[method-assign]
    auth.body_matches = lambda *a: None  # type: ignore[assignment]


@breaks("non-root uid")
def runs_as_root() -> None:
    """Started as root, and its refusal to run as root fooled."""
    os.geteuid = lambda: UID  # type: ignore[assignment]


@breaks("read-only root")
def writable_root_directory() -> None:
    """The image leaves /opt writable (as a Dockerfile's `chmod 1777 /opt` would): in a private
    mount namespace of its own, /opt is a tmpfs anyone may write; then it drops to uid 1000."""
    if os.environ.get("LLMSS_BROKEN_IN_NAMESPACE") != "1":
        os.environ["LLMSS_BROKEN_IN_NAMESPACE"] = "1"
        # unshare(1) without --fork execs us in the same process: the launcher's PID stays ours.
        os.execvp("unshare", ["unshare", "--mount", "--propagation", "private",
                              sys.executable, "-m", "tests.broken_runtime", "read-only root"])
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=1777,size=1m", "llmss-broken-root", "/opt"], check=True)
    for path in os.environ.get("LLMSS_RUNTIME_WRITABLE", "").split(":"):
        if path:
            os.chown(path, UID, UID)
    os.setgroups([])
    os.setgid(UID)
    os.setuid(UID)


@breaks("writable paths")
def home_on_the_root() -> None:
    """Executions get HOME=/ (an image whose HOME stays on the read-only root)."""
    original = server.child_env

    def child_env(settings: Any) -> dict[str, str]:
        env = original(settings)
        env["HOME"] = "/"
        return env
    server.child_env = child_env  # type: ignore[assignment]


@breaks("exec streaming")
def buffers_output() -> None:
    """Output held back and sent with the exit, not as produced."""
    original = execs.Executor.run

    def run(self: execs.Executor, execution: Any, timeout: float, emit: Callable[[dict[str, Any]], None]) -> None:
        held: list[dict[str, Any]] = []

        def buffered(event: dict[str, Any]) -> None:
            if event.get("type") in ("stdout", "stderr"):
                held.append(event)
                return
            if event.get("type") == "exit":
                for e in held:
                    emit(e)
            emit(event)
        original(self, execution, timeout, buffered)
    execs.Executor.run = run  # type: ignore[method-assign]


@breaks("timeout kills the group")
def kills_only_the_leader() -> None:
    """A timeout kills the command's process, not its group: its children live on. (They are
    killed at exit, and 30 s later at the latest, so the test leaves nothing behind.)"""
    left: set[int] = set()

    def kill_leader(pid: int, sig: int = signal.SIGKILL) -> None:
        left.add(pid)
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def clean_up() -> None:
        for pgid in list(left):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    execs.kill_group = kill_leader  # type: ignore[assignment]
    atexit.register(clean_up)
    timer = threading.Timer(30, clean_up)
    timer.daemon = True
    timer.start()


@breaks("sessions keep state")
def forgets_between_cells() -> None:
    """Each cell of a session runs in a fresh namespace."""
    sessions.CHILD_SOURCE = _replace(
        sessions.CHILD_SOURCE, "        count += 1\n",
        '        count += 1\n        namespace = {"__name__": "__main__", "__builtins__": builtins}\n')


@breaks("files and path escapes")
def root_is_writable_for_files() -> None:
    """The files API treats / as one of the writable paths (a prefix check gone wrong)."""
    original = files.Confinement.roots
    files.Confinement.roots = lambda self: original(self) + ["/"]  # type: ignore[method-assign]


@breaks("errors are JSON")
def plain_text_bad_requests() -> None:
    """Bad requests (400: malformed JSON, bad fields) answered as a plain-text traceback."""
    original = server.Handler._error

    def error(self: server.Handler, status: int, code: str, message: str) -> None:
        if status != 400 or self._streaming:
            return original(self, status, code, message)
        self._send(status, f"Traceback (most recent call last):\n  {code}: {message}\n".encode(), "text/plain")
    server.Handler._error = error  # type: ignore[method-assign]


@breaks("SIGTERM exit within grace")
def ignores_sigterm() -> None:
    """SIGTERM ignored: the pod is killed at the end of its grace period."""
    original = signal.signal
    signal.signal = lambda sig, handler: original(sig, signal.SIG_IGN)  # type: ignore[assignment]


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in BREAKS:
        print(f"usage: python -m tests.broken_runtime RULE; RULE one of {json.dumps(sorted(BREAKS))}", file=sys.stderr)
        return 2
    if argv[0] in NEEDS_ROOT and os.geteuid() != 0:
        print(f"broken_runtime: {argv[0]!r} is started as root (conformance --uid 0)", file=sys.stderr)
        return 2
    BREAKS[argv[0]]()
    from runtime.__main__ import main as serve
    return serve()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
