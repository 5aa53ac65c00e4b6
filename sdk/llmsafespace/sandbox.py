"""Sandbox: create one, wait for it on a watch, run code and commands with streamed output, keep
Python state in sessions, move files, suspend, resume, delete (docs/gateway.md, README)."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

from .connection import GROUP, VERSION, Connection
from .errors import NotFound, NotReady, RuntimeUnreachable, SandboxError, Suspended, Timeout

ANNOTATION_USE_WARM_POD = f"{GROUP}/use-warm-pod"
ANNOTATION_LAST_ACTIVITY = f"{GROUP}/last-activity"
ENDED_PHASES = ("Failed", "Terminated", "Terminating")
Event = dict[str, Any]
Output = Optional[Callable[[str], None]]
Command = Union[str, Sequence[str]]


def _condition(sandbox: Mapping[str, Any], kind: str) -> dict[str, Any]:
    for c in (sandbox.get("status") or {}).get("conditions") or ():
        if isinstance(c, dict) and c.get("type") == kind:
            return c
    return {}


def _suspended(sandbox: Mapping[str, Any]) -> bool:
    status = sandbox.get("status") or {}
    return ((sandbox.get("spec") or {}).get("operatingMode") == "Suspended" or status.get("phase") in ("Suspending", "Suspended")
            or _condition(sandbox, "Suspended").get("status") == "True")


def _serving(sandbox: Mapping[str, Any]) -> bool:
    """What the gateway serves: Running, Ready, a pod, not suspended (gateway/sandboxes.py)."""
    status = sandbox.get("status") or {}
    return (status.get("phase") == "Running" and _condition(sandbox, "Ready").get("status") == "True"
            and bool(status.get("podName")) and not _suspended(sandbox))


def _state(sandbox: Mapping[str, Any]) -> dict[str, Any]:
    """The sandbox's own account of itself, as errors carry it."""
    meta, status = sandbox.get("metadata") or {}, sandbox.get("status") or {}
    kind = "Suspended" if _suspended(sandbox) else "Ready"
    c = _condition(sandbox, kind) or _condition(sandbox, "Validated")
    return {"namespace": meta.get("namespace"), "name": meta.get("name"), "phase": status.get("phase"),
            "condition": c.get("type"), "reason": c.get("reason"), "message": c.get("message")}


def _describe(state: Mapping[str, Any]) -> str:
    why = f"{state.get('reason')}: {state.get('message')}" if state.get("reason") else "no condition yet"
    return f"phase {state.get('phase') or 'unknown'}, {state.get('condition') or 'Ready'} {why}"


@dataclass
class ExecResult:
    """An execution's outcome (the runtime's exit line) and its whole output."""
    exit_code: Optional[int]
    stdout: str
    stderr: str
    signal: Optional[int] = None
    timed_out: bool = False
    truncated: bool = False
    duration_ms: float = 0.0
    id: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def check(self) -> "ExecResult":
        """Self when it exited 0, else SandboxError with the exit code and the end of stderr."""
        if not self.ok:
            what = "timed out" if self.timed_out else f"exited {self.exit_code}" + (f" (signal {self.signal})" if self.signal else "")
            raise SandboxError(f"the command {what}: {self.stderr[-500:]}", code="exec_failed")
        return self


@dataclass
class RunResult:
    """A session run's outcome: status ok|error|interrupted|timeout|crashed, the value of the last
    expression (repr, as a REPL shows it), the error (ename, evalue, traceback) and the output."""
    status: str
    stdout: str
    stderr: str
    result: Optional[str] = None
    error: Optional[dict[str, Any]] = None
    duration_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class FileEntry:
    name: str
    path: str
    type: str  # file | dir | symlink
    size: int
    mtime: float


def _lines(response: Any, last: str) -> Iterator[Event]:
    """NDJSON events as they arrive; the stream must end with a `last` event."""
    ended = False
    try:
        for raw in response.iter_lines(chunk_size=None):
            if not raw:
                continue
            event = json.loads(raw)
            if event.get("type") == "error":
                error = event.get("error") or {}
                raise RuntimeUnreachable(str(error.get("message") or "the stream broke off"), code=str(error.get("code") or "stream_error"))
            yield event
            if event.get("type") == last:
                ended = True
    finally:
        response.close()
    if not ended:
        raise RuntimeUnreachable(f"the stream ended without its {last!r} line", code="stream_truncated")


def _collect(events: Iterator[Event], on_stdout: Output, on_stderr: Output) -> tuple[list[str], list[str], Event, Optional[str]]:
    out: list[str] = []
    err: list[str] = []
    result: Optional[str] = None
    last: Event = {}
    exec_id = ""
    for event in events:
        kind = event.get("type")
        if kind == "stdout":
            out.append(event.get("data", ""))
            if on_stdout:
                on_stdout(event.get("data", ""))
        elif kind == "stderr":
            err.append(event.get("data", ""))
            if on_stderr:
                on_stderr(event.get("data", ""))
        elif kind == "result":
            result = event.get("data")
        elif kind == "start":
            exec_id = str(event.get("id", ""))
        elif kind in ("exit", "done"):
            last = event
    return out, err, {"id": exec_id, **last}, result


class Files:
    """A sandbox's files, confined by its runtime to the writable paths (/workspace, /tmp)."""

    def __init__(self, sandbox: "Sandbox") -> None:
        self._sandbox = sandbox

    def write(self, path: str, data: Union[bytes, str]) -> int:
        """Create or replace `path` (parents created); returns its size."""
        body = data.encode() if isinstance(data, str) else data
        return int(self._sandbox._call("PUT", "files", params={"path": path}, data=body).json().get("size", len(body)))

    def read(self, path: str) -> bytes:
        return self._sandbox._call("GET", "files", params={"path": path}).content

    def read_text(self, path: str, encoding: str = "utf-8") -> str:
        return self.read(path).decode(encoding)

    def list(self, path: str = "/workspace") -> list[FileEntry]:
        entries = self._sandbox._call("GET", "files/list", params={"path": path}).json().get("entries", [])
        return [FileEntry(e["name"], e["path"], e["type"], int(e.get("size") or 0), float(e.get("mtime") or 0)) for e in entries]

    def delete(self, path: str, recursive: bool = False) -> None:
        params = {"path": path, **({"recursive": "true"} if recursive else {})}
        self._sandbox._call("DELETE", "files", params=params).close()


class Session:
    """Stateful Python in the sandbox (one process, kept between runs, like a notebook's kernel).
    A context manager: closed (deleted) on exit."""

    def __init__(self, sandbox: "Sandbox", session_id: str) -> None:
        self.sandbox, self.id = sandbox, session_id

    def run_stream(self, code: str, *, timeout: Optional[float] = None) -> Iterator[Event]:
        body: dict[str, Any] = {"code": code, **({"timeout": timeout} if timeout is not None else {})}
        response = self.sandbox._call("POST", f"sessions/{self.id}/run", body=body, stream=True, timeout=timeout)
        return _lines(response, "done")

    def run(self, code: str, *, timeout: Optional[float] = None, on_stdout: Output = None, on_stderr: Output = None) -> RunResult:
        out, err, done, result = _collect(self.run_stream(code, timeout=timeout), on_stdout, on_stderr)
        return RunResult(str(done.get("status")), "".join(out), "".join(err), result, done.get("error"), float(done.get("duration_ms") or 0))

    def interrupt(self) -> None:
        self.sandbox._call("POST", f"sessions/{self.id}/interrupt").close()

    def restart(self) -> None:
        self.sandbox._call("POST", f"sessions/{self.id}/restart").close()

    def close(self) -> None:
        try:
            self.sandbox._call("DELETE", f"sessions/{self.id}").close()
        except NotFound:
            pass

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@dataclass
class Sandbox:
    """A Sandbox object on the cluster and the calls into it. Make one with Sandbox.create() (or
    Sandbox.get() for an existing one); as a context manager it is deleted on exit, whatever happened."""

    name: str
    namespace: str
    connection: Connection
    obj: dict[str, Any] = field(default_factory=dict, repr=False)
    # Seconds a call waits for the sandbox to be Running (resumed on demand when it is suspended
    # and you may patch it; docs/gateway.md).
    wait: float = 60.0

    def __post_init__(self) -> None:
        self.files = Files(self)

    # -- lifecycle -------------------------------------------------------------------------------

    @classmethod
    def create(cls, runtime: str, *, namespace: Optional[str] = None, name: Optional[str] = None,
               generate_name: str = "sandbox-", warm: bool = True, warm_pool: Optional[str] = None,
               security_level: Optional[str] = None, profile: Optional[str] = None, timeout: Optional[int] = None,
               lifetime_seconds: Optional[int] = None, idle_timeout_seconds: Optional[int] = None,
               resources: Optional[Mapping[str, Any]] = None, spec: Optional[Mapping[str, Any]] = None,
               labels: Optional[Mapping[str, str]] = None, annotations: Optional[Mapping[str, str]] = None,
               wait: bool = True, wait_timeout: float = 300.0, connection: Optional[Connection] = None,
               gateway_url: Optional[str] = None) -> "Sandbox":
        """Create a Sandbox and (by default) wait until it serves. Warm by default: the
        llmsafespace.dev/use-warm-pod annotation lets a compatible WarmPool serve it, and a sandbox
        no pool can serve starts cold at once; `warm_pool=` names the pool (spec.warmPoolRef);
        `warm=False` always starts cold. If waiting fails the sandbox is deleted and the error says why."""
        conn = connection or Connection(gateway_url)
        ns = namespace or conn.namespace
        body_spec: dict[str, Any] = {"runtime": runtime}
        for key, value in (("securityLevel", security_level), ("timeout", timeout), ("lifetimeSeconds", lifetime_seconds),
                           ("idleTimeoutSeconds", idle_timeout_seconds), ("resources", dict(resources) if resources else None)):
            if value is not None:
                body_spec[key] = value
        if profile:
            body_spec["profileRef"] = {"name": profile}
        if warm_pool:
            body_spec["warmPoolRef"] = {"name": warm_pool}
        body_spec.update(spec or {})
        meta: dict[str, Any] = {"labels": dict(labels or {}), "annotations": dict(annotations or {})}
        if warm and not warm_pool:
            meta["annotations"][ANNOTATION_USE_WARM_POD] = "true"
        meta.update({"name": name} if name else {"generateName": generate_name})
        created = conn.create_sandbox(ns, {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Sandbox", "metadata": meta, "spec": body_spec})
        sandbox = cls(created["metadata"]["name"], ns, conn, created)
        if wait:
            try:
                sandbox.wait_ready(wait_timeout)
            except BaseException:
                sandbox.delete()
                raise
        return sandbox

    @classmethod
    def get(cls, name: str, *, namespace: Optional[str] = None, connection: Optional[Connection] = None,
            gateway_url: Optional[str] = None) -> "Sandbox":
        conn = connection or Connection(gateway_url)
        ns = namespace or conn.namespace
        return cls(name, ns, conn, conn.get_sandbox(ns, name))

    def refresh(self) -> dict[str, Any]:
        self.obj = self.connection.get_sandbox(self.namespace, self.name)
        return self.obj

    @property
    def phase(self) -> Optional[str]:
        return (self.obj.get("status") or {}).get("phase")

    @property
    def state(self) -> dict[str, Any]:
        """phase, condition, reason, message: what the controllers last said."""
        return _state(self.obj)

    def wait_ready(self, timeout: float = 300.0, *, resuming: bool = False) -> "Sandbox":
        """Block on a watch (no polling) until the sandbox serves. NotReady when it failed or
        ended, Suspended when it is suspended (unless `resuming`: then until it is back), Timeout
        (with its last reason) when time runs out."""
        deadline = time.monotonic() + timeout
        obj = self.obj or self.refresh()
        while True:
            if _serving(obj):
                self.obj = obj
                return self
            state = _state(obj)
            if (obj.get("metadata") or {}).get("deletionTimestamp") or state["phase"] in ENDED_PHASES:
                raise NotReady(f"sandbox {self.namespace}/{self.name} will not run: {_describe(state)}", code="sandbox_ended", sandbox=state)
            if _suspended(obj) and not (resuming and (obj.get("spec") or {}).get("operatingMode") != "Suspended"):
                raise Suspended(f"sandbox {self.namespace}/{self.name} is suspended: resume() it", code="sandbox_suspended", sandbox=state)
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout(f"sandbox {self.namespace}/{self.name} did not become ready within {timeout:g} s: {_describe(state)}",
                              code="timeout", sandbox=state)
            obj = self._next(obj, left)

    def _next(self, obj: dict[str, Any], left: float) -> dict[str, Any]:
        """The sandbox after its next change (or as it is when the watch ends or fails)."""
        version = (obj.get("metadata") or {}).get("resourceVersion") or ""
        began = time.monotonic()
        try:
            for event in self.connection.watch_sandbox(self.namespace, self.name, version, int(left) + 1):
                if event.get("type") == "DELETED":
                    raise NotFound(f"sandbox {self.namespace}/{self.name} was deleted while being waited for",
                                   code="sandbox_not_found", sandbox=_state(obj))
                if event.get("type") in ("ADDED", "MODIFIED") and isinstance(event.get("object"), dict):
                    return event["object"]
        except SandboxError:
            raise
        except Exception:  # noqa: BLE001 - a broken or expired (410) watch: read again, watch again
            pass
        if time.monotonic() - began < 0.5:  # a watch that ends at once must not become a busy loop
            time.sleep(min(1.0, max(0.0, left - 0.1)))
        return self.refresh()

    def suspend(self, wait: bool = True, timeout: float = 120.0) -> None:
        """operatingMode Suspended: the pod goes, the volume stays (docs/suspend.md)."""
        self.obj = self.connection.patch_sandbox(self.namespace, self.name, {"spec": {"operatingMode": "Suspended"}})
        deadline = time.monotonic() + timeout
        while wait and self.phase != "Suspended":
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout(f"sandbox {self.namespace}/{self.name} was not Suspended within {timeout:g} s: {_describe(self.state)}",
                              code="timeout", sandbox=self.state)
            self.obj = self._next(self.obj, left)

    def resume(self, wait: bool = True, timeout: float = 300.0) -> None:
        """operatingMode Running and fresh activity (which also ends an idle suspension)."""
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.obj = self.connection.patch_sandbox(self.namespace, self.name, {
            "metadata": {"annotations": {ANNOTATION_LAST_ACTIVITY: now}}, "spec": {"operatingMode": "Running"}})
        if wait:
            self.wait_ready(timeout, resuming=True)

    def delete(self) -> None:
        """Delete the Sandbox (its pod, policies and Delete volumes go with it); gone already is fine."""
        try:
            self.connection.delete_sandbox(self.namespace, self.name)
        except NotFound:
            pass

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.delete()

    # -- code ------------------------------------------------------------------------------------

    def _call(self, method: str, rest: str, **kw: Any) -> Any:
        return self.connection.call(method, self.namespace, self.name, rest, wait=self.wait, **kw)

    def exec_stream(self, cmd: Command, *, timeout: Optional[float] = None, env: Optional[Mapping[str, str]] = None,
                    cwd: Optional[str] = None, stdin: Optional[str] = None) -> Iterator[Event]:
        """The runtime's events as they come: start, stdout/stderr chunks, exit (RUNTIME-API v1).
        `cmd` a list runs as is; a string runs under /bin/sh -c."""
        return self._stream({"cmd": cmd if isinstance(cmd, str) else list(cmd)}, timeout, env, cwd, stdin)

    def exec(self, cmd: Command, *, timeout: Optional[float] = None, env: Optional[Mapping[str, str]] = None,
             cwd: Optional[str] = None, stdin: Optional[str] = None, on_stdout: Output = None, on_stderr: Output = None) -> ExecResult:
        """Run a command to its end; on_stdout/on_stderr see output as it is produced."""
        return self._result(self.exec_stream(cmd, timeout=timeout, env=env, cwd=cwd, stdin=stdin), on_stdout, on_stderr)

    def run_stream(self, code: str, *, language: str = "python", timeout: Optional[float] = None,
                   env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None, stdin: Optional[str] = None) -> Iterator[Event]:
        return self._stream({"code": code, "language": language}, timeout, env, cwd, stdin)

    def run(self, code: str, *, language: str = "python", timeout: Optional[float] = None, env: Optional[Mapping[str, str]] = None,
            cwd: Optional[str] = None, stdin: Optional[str] = None, on_stdout: Output = None, on_stderr: Output = None) -> ExecResult:
        """Run code in a fresh interpreter (no state kept: use session() for that)."""
        return self._result(self.run_stream(code, language=language, timeout=timeout, env=env, cwd=cwd, stdin=stdin),
                            on_stdout, on_stderr)

    def kill(self, exec_id: str) -> None:
        """Kill a running execution's process group (its id is ExecResult.id / the start event's).
        NotFound when it is not running (any more)."""
        self._call("POST", f"exec/{exec_id}/kill").close()

    def session(self, language: str = "python") -> Session:
        answer = self._call("POST", "sessions", body={"language": language}).json()
        return Session(self, str(answer["id"]))

    def sessions(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "sessions").json().get("sessions", []))

    def _stream(self, body: dict[str, Any], timeout: Optional[float], env: Optional[Mapping[str, str]], cwd: Optional[str],
                stdin: Optional[str]) -> Iterator[Event]:
        for key, value in (("timeout", timeout), ("env", dict(env) if env else None), ("cwd", cwd), ("stdin", stdin)):
            if value is not None:
                body[key] = value
        return _lines(self._call("POST", "exec", body=body, stream=True, timeout=timeout), "exit")

    @staticmethod
    def _result(events: Iterator[Event], on_stdout: Output, on_stderr: Output) -> ExecResult:
        out, err, end, _ = _collect(events, on_stdout, on_stderr)
        return ExecResult(end.get("exit_code"), "".join(out), "".join(err), end.get("signal"), bool(end.get("timed_out")),
                          bool(end.get("truncated")), float(end.get("duration_ms") or 0), str(end.get("id", "")))
