"""Stateful Python sessions: one child process per session (runtime/session_child.py), in its own
process group, kept between runs so variables survive as in a notebook."""
from __future__ import annotations

import json
import os
import queue
import secrets
import select
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

from .execs import OutputCap, kill_group
from .metrics import Metrics

CHILD_SOURCE = (Path(__file__).parent / "session_child.py").read_text(encoding="utf-8")
READ = 65536


class SessionError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


class Session:
    def __init__(self, sid: str, env: dict[str, str], cwd: str) -> None:
        self.id = sid
        self.env, self.cwd = env, cwd
        self.created = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.lock = threading.Lock()  # one run at a time
        self.state = "idle"
        self.exit_detail = ""
        self.events: Optional[queue.Queue[Optional[dict[str, Any]]]] = None  # the current run's
        self._spawn()

    def _spawn(self) -> None:
        cmd_r, cmd_w = os.pipe()
        evt_r, evt_w = os.pipe()
        # The child is told its two pipe ends' numbers in argv (session_child.py).
        self.proc = subprocess.Popen([sys.executable, "-u", "-c", CHILD_SOURCE, str(cmd_r), str(evt_w)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=self.env, cwd=self.cwd, start_new_session=True, pass_fds=(cmd_r, evt_w))
        os.close(cmd_r)
        os.close(evt_w)
        self.commands = os.fdopen(cmd_w, "w", encoding="utf-8", buffering=1)
        self.evt_fd = evt_r
        self.state = "idle"
        self.exit_detail = ""
        self.reader = threading.Thread(target=self._read, args=(self.proc, evt_r), daemon=True)
        self.reader.start()

    def _put(self, event: dict[str, Any]) -> None:
        target = self.events
        if target is not None:
            target.put(event)

    def _read(self, proc: subprocess.Popen[bytes], evt_fd: int) -> None:
        """Forward the child's output and events to the current run (output between runs, from
        threads the user started, is dropped), until the child is gone."""
        assert proc.stdout is not None and proc.stderr is not None
        out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
        names = {out_fd: "stdout", err_fd: "stderr"}
        import codecs
        decoders = {fd: codecs.getincrementaldecoder("utf-8")("replace") for fd in names}
        pending = b""
        fds = {out_fd, err_fd, evt_fd}

        def output(fd: int, data: bytes) -> None:
            text = decoders[fd].decode(data)
            if text:
                self._put({"type": names[fd], "data": text, "bytes": len(data)})

        def drain() -> None:
            # Everything the child wrote before its "done" is in the pipes now.
            for fd in (out_fd, err_fd):
                while fd in fds and select.select([fd], [], [], 0)[0]:
                    data = os.read(fd, READ)
                    if not data:
                        fds.discard(fd)
                        break
                    output(fd, data)

        while evt_fd in fds:
            ready, _, _ = select.select(list(fds), [], [])
            for fd in ready:
                # A "done" earlier in this loop drained the output pipes: reading one again now
                # would block the reader until the session next prints (and hang the next run).
                if fd != evt_fd and (fd not in fds or not select.select([fd], [], [], 0)[0]):
                    continue
                data = os.read(fd, READ)
                if fd == evt_fd:
                    if not data:
                        fds.discard(fd)
                        break
                    pending += data
                    while b"\n" in pending:
                        line, pending = pending.split(b"\n", 1)
                        try:
                            event = json.loads(line)
                        except ValueError:
                            continue
                        if event.get("type") == "done":
                            drain()
                        self._put(event)
                elif not data:
                    fds.discard(fd)
                else:
                    output(fd, data)
        drain()
        code = proc.wait()
        os.close(evt_fd)
        if self.state != "closed":
            self.state = "crashed"
            self.exit_detail = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
        self._put({"type": "crashed", "detail": self.exit_detail})

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "language": "python", "state": self.state, "created": self.created}

    def kill(self) -> None:
        kill_group(self.proc.pid)

    def close(self) -> None:
        self.state = "closed"
        self.kill()
        try:
            self.commands.close()
        except OSError:
            pass
        self.proc.wait()
        self.reader.join(5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe:
                pipe.close()


class Sessions:
    def __init__(self, limit: int, max_output: int, kill_grace: float, metrics: Metrics) -> None:
        self.limit, self.max_output, self.kill_grace = limit, max_output, kill_grace
        self.metrics = metrics
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self.draining = False

    def known_pids(self) -> set[int]:
        with self._lock:
            return {s.proc.pid for s in self._sessions.values()}

    def create(self, env: dict[str, str], cwd: str) -> Session:
        with self._lock:
            if self.draining:
                raise SessionError(503, "draining", "the runtime is shutting down")
            if len(self._sessions) >= self.limit:
                raise SessionError(429, "too_many_sessions", f"{self.limit} sessions are open (LLMSS_RUNTIME_MAX_SESSIONS); close one")
            session = Session(secrets.token_hex(8), env, cwd)
            self._sessions[session.id] = session
            self.metrics.sessions = len(self._sessions)
        return session

    def get(self, sid: str) -> Session:
        with self._lock:
            session = self._sessions.get(sid)
        if session is None:
            raise SessionError(404, "session_not_found", f"no session {sid!r}")
        return session

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [s.describe() for s in self._sessions.values()]

    def close(self, sid: str) -> None:
        with self._lock:
            session = self._sessions.pop(sid, None)
            self.metrics.sessions = len(self._sessions)
        if session is None:
            raise SessionError(404, "session_not_found", f"no session {sid!r}")
        session.close()

    def close_all(self) -> None:
        with self._lock:
            self.draining = True
            sessions = list(self._sessions.values())
            self._sessions.clear()
            self.metrics.sessions = 0
        for session in sessions:
            session.close()

    def restart(self, sid: str) -> Session:
        session = self.get(sid)
        if not session.lock.acquire(timeout=0):
            # A running cell ends with the restart: kill first, then wait for the run to end.
            session.state = "closed"
            session.kill()
            if not session.lock.acquire(timeout=30):
                raise SessionError(409, "session_busy", "the running cell did not end")
        try:
            session.close()  # state "closed": the old child's death is a restart, not a crash
            session._spawn()
        finally:
            session.lock.release()
        return session

    def interrupt(self, sid: str) -> bool:
        session = self.get(sid)
        if session.state != "busy":
            return False
        try:
            os.kill(session.proc.pid, signal.SIGINT)
        except ProcessLookupError:
            return False
        return True

    def run(self, session: Session, code: str, timeout: float, emit: Callable[[dict[str, Any]], None]) -> None:
        """Stream one cell; the last line is always "done". Call with session.lock held."""
        started = time.monotonic()
        cap = OutputCap(self.max_output)
        events: queue.Queue[Optional[dict[str, Any]]] = queue.Queue()
        session.events = events
        session.state = "busy"
        self.metrics.add_running(1)
        status, error = "crashed", None
        interrupted_at: Optional[float] = None
        timed_out = False
        try:
            try:
                session.commands.write(json.dumps({"code": code}) + "\n")
                session.commands.flush()
            except OSError:
                pass  # the child is gone: its "crashed" event follows
            deadline = started + timeout
            while True:
                now = time.monotonic()
                if now >= deadline and interrupted_at is None:
                    timed_out, interrupted_at = True, now
                    try:
                        os.kill(session.proc.pid, signal.SIGINT)
                    except ProcessLookupError:
                        pass
                if interrupted_at is not None and now >= interrupted_at + self.kill_grace:
                    session.kill()  # ignored the interrupt: state is lost
                    interrupted_at = float("inf")
                try:
                    event = events.get(timeout=0.05)
                except queue.Empty:
                    continue
                kind = event.get("type") if event else None
                if kind in ("stdout", "stderr"):
                    assert event is not None
                    data = event["data"]
                    if not cap.truncated:
                        kept = cap.take(data.encode("utf-8", "replace"))
                        if kept:
                            emit({"type": kind, "data": kept.decode("utf-8", "replace")})
                elif kind == "result":
                    assert event is not None
                    emit({"type": "result", "data": event.get("data", "")})
                elif kind == "done":
                    assert event is not None
                    status, error = event.get("status", "error"), event.get("error")
                    if timed_out:
                        status = "timeout"
                    break
                elif kind == "crashed":
                    assert event is not None
                    detail = event.get("detail", "")
                    status = "timeout" if timed_out else "crashed"
                    why = (f"the cell ignored the interrupt for {self.kill_grace}s after its {timeout}s timeout and was killed"
                           if timed_out else f"the session's process {detail}")
                    error = {"ename": "SessionCrashed", "evalue": f"{why}; its state is lost: restart the session",
                             "traceback": ""}
                    break
            if cap.truncated:
                self.metrics.count(self.metrics.failures, "output_truncated")
            emit({"type": "done", "status": status, "error": error, "truncated": cap.truncated,
                  "duration_ms": round((time.monotonic() - started) * 1000, 3)})
        except Exception:
            try:  # the client went away mid-cell: interrupt it rather than let it run unseen
                os.kill(session.proc.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
            status = "client_gone"
            raise
        finally:
            session.events = None
            if session.state == "busy":
                session.state = "idle"
            self.metrics.add_running(-1)
            self.metrics.execution("session", status, time.monotonic() - started)
