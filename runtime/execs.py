"""Executions: one process group per command, output streamed as produced.

Each execution runs in a new session (its own process group), so a timeout, a kill call, a client
that goes away or SIGTERM kills everything it started. When the leader exits, what is still
readable is drained for a moment and the rest of the group is killed: an execution leaves nothing
behind (long-lived processes belong in a session)."""
from __future__ import annotations

import codecs
import os
import secrets
import select
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .metrics import Metrics

AFTER_EXIT_DRAIN = 0.5  # seconds the group's pipes are read after the leader exited
POLL = 0.05
READ = 65536


class TooMany(Exception):
    pass


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class Execution:
    id: str
    proc: subprocess.Popen[bytes]
    killed: bool = False
    started: float = field(default_factory=time.monotonic)


class OutputCap:
    """Output bytes left for one execution (stdout and stderr together)."""

    def __init__(self, limit: int) -> None:
        self.left = limit
        self.truncated = False

    def take(self, data: bytes) -> bytes:
        if len(data) <= self.left:
            self.left -= len(data)
            return data
        self.truncated = True
        kept, self.left = data[: self.left], 0
        return kept


def pump(fds: dict[int, str], emit: Callable[[dict[str, Any]], None], cap: OutputCap,
         done: Callable[[], bool], deadline: float, on_timeout: Callable[[], None]) -> bool:
    """Read the fds (fd -> "stdout"/"stderr") until EOF on all, emitting decoded chunks.
    `done()` is polled: once true, the remaining output is drained for AFTER_EXIT_DRAIN.
    Returns whether the deadline passed (on_timeout was called)."""
    decoders = {fd: codecs.getincrementaldecoder("utf-8")("replace") for fd in fds}
    open_fds = set(fds)
    timed_out = False
    drain_until: Optional[float] = None
    while open_fds:
        now = time.monotonic()
        if not timed_out and now >= deadline:
            timed_out = True
            on_timeout()
        if drain_until is None and done():
            drain_until = now + AFTER_EXIT_DRAIN
        if drain_until is not None and now >= drain_until:
            break
        wait = min(POLL, max(0.0, deadline - now)) if not timed_out else POLL
        ready, _, _ = select.select(list(open_fds), [], [], wait)
        for fd in ready:
            try:
                data = os.read(fd, READ)
            except OSError:
                data = b""
            if not data:
                open_fds.discard(fd)
                tail = decoders[fd].decode(b"", final=True)
                if tail:
                    emit({"type": fds[fd], "data": tail})
                continue
            kept = cap.take(data)
            if kept:
                text = decoders[fd].decode(kept)
                if text:
                    emit({"type": fds[fd], "data": text})
    return timed_out


class Executor:
    def __init__(self, max_concurrent: int, max_output: int, metrics: Metrics) -> None:
        self.max_concurrent = max_concurrent
        self.max_output = max_output
        self.metrics = metrics
        self._lock = threading.Lock()
        self._running: dict[str, Execution] = {}
        self.draining = False

    @property
    def busy(self) -> bool:
        return len(self._running) >= self.max_concurrent

    def known_pids(self) -> set[int]:
        with self._lock:
            return {e.proc.pid for e in self._running.values()}

    def start(self, argv: list[str], env: dict[str, str], cwd: str, stdin: Optional[bytes]) -> Execution:
        with self._lock:
            if self.draining:
                raise TooMany("draining")
            if len(self._running) >= self.max_concurrent:
                raise TooMany(f"{self.max_concurrent} executions are running (LLMSS_RUNTIME_MAX_CONCURRENT)")
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd,
                                    start_new_session=True, close_fds=True)
            execution = Execution(secrets.token_hex(8), proc)
            self._running[execution.id] = execution
        self.metrics.add_running(1)
        if stdin:
            threading.Thread(target=self._feed, args=(proc, stdin), daemon=True).start()
        return execution

    @staticmethod
    def _feed(proc: subprocess.Popen[bytes], data: bytes) -> None:
        assert proc.stdin is not None
        try:
            proc.stdin.write(data)
        except OSError:
            pass
        finally:
            try:
                proc.stdin.close()
            except OSError:
                pass

    def run(self, execution: Execution, timeout: float, emit: Callable[[dict[str, Any]], None]) -> None:
        """Stream one started execution to its end; the last line is always "exit" (unless the
        client went away, when emit raises and the group is killed)."""
        proc = execution.proc
        assert proc.stdout is not None and proc.stderr is not None
        cap = OutputCap(self.max_output)
        outcome = "error"
        try:
            emit({"type": "start", "id": execution.id, "pid": proc.pid})
            fds = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr"}
            timed_out = pump(fds, emit, cap, lambda: proc.poll() is not None,
                             execution.started + timeout, lambda: kill_group(proc.pid))
            code = proc.wait()
            kill_group(proc.pid)  # what the leader left behind
            duration = (time.monotonic() - execution.started) * 1000
            sig = -code if code < 0 else None
            outcome = "timeout" if timed_out else "killed" if execution.killed else "ok" if code == 0 else "error"
            if cap.truncated:
                self.metrics.count(self.metrics.failures, "output_truncated")
            emit({"type": "exit", "exit_code": None if sig else code, "signal": sig, "duration_ms": round(duration, 3),
                  "timed_out": timed_out, "truncated": cap.truncated})
        except Exception:
            outcome = "client_gone"
            kill_group(proc.pid)
            raise
        finally:
            kill_group(proc.pid)
            proc.wait()
            for pipe in (proc.stdout, proc.stderr):
                pipe.close()
            with self._lock:
                self._running.pop(execution.id, None)
            self.metrics.add_running(-1)
            if outcome == "timeout":
                self.metrics.count(self.metrics.failures, "timeout")
            self.metrics.execution("exec", outcome, time.monotonic() - execution.started)

    def kill(self, exec_id: str) -> bool:
        with self._lock:
            execution = self._running.get(exec_id)
        if execution is None:
            return False
        execution.killed = True
        kill_group(execution.proc.pid)
        return True

    def kill_all(self) -> None:
        with self._lock:
            self.draining = True
            running = list(self._running.values())
        for execution in running:
            execution.killed = True
            kill_group(execution.proc.pid)
