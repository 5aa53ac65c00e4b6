"""The SDK's logic, written once and free of I/O, for the sync client (connection.py, sandbox.py) and
the async one (aio.py), which differ only in how they carry it out:

- what a gateway call looks like (`Call` -> `Request`: URL, headers, body, timeouts) and how its
  answers, NDJSON streams (`Events`) and errors (`answer_error`, `kube_error`) are read;
- what the Sandbox object looks like (`sandbox_manifest`, the suspend and resume patches), when a
  sandbox serves, what it says about itself (`serving`, `state`), and the results of calls
  (`ExecResult`, `RunResult`, `FileEntry`, built by `Collector` from the events);
- every operation as a *plan*: a generator that yields the steps it needs (`Kube`: an API-server
  call, `Watch`: the sandbox's next change, `Call`: a gateway call, `Pause`) and is sent their
  outcomes. A client runs a plan by doing each step its own way: `Connection.run` in the calling
  thread, `AsyncConnection.run` awaiting aiohttp and threads. Waiting, deleting on a failed
  create, reading the sandbox's reasons into errors: all of it is here, once."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import (Any, Callable, Generator, Generic, Iterator, Mapping, Optional, Sequence, TypedDict, TypeVar, Union)
from urllib.parse import quote, urlencode

from .errors import (Forbidden, NotFound, NotReady, RuntimeUnreachable, SandboxError, Suspended, Timeout, Unauthenticated,
                     from_answer)

GROUP, VERSION, PLURAL = "llmsafespace.dev", "v1", "sandboxes"
ANNOTATION_USE_WARM_POD = f"{GROUP}/use-warm-pod"
ANNOTATION_LAST_ACTIVITY = f"{GROUP}/last-activity"
ENDED_PHASES = ("Failed", "Terminated", "Terminating")
CONNECT_TIMEOUT = 10.0  # seconds to reach the gateway
RUNTIME_DEFAULT_TIMEOUT = 60.0  # what the runtime gives a call that names no timeout
READ_MARGIN = 30.0  # on top of a call's own wait and timeout, between two bytes of its answer

T = TypeVar("T")
C = TypeVar("C")
Event = dict[str, Any]
Output = Optional[Callable[[str], Any]]
Command = Union[str, Sequence[str]]


# -- the steps a plan asks for ---------------------------------------------------------------------

@dataclass(frozen=True)
class Kube:
    """An API-server call: the sync Connection's method `method` (create_sandbox, get_sandbox,
    patch_sandbox, delete_sandbox) with `args`; its answer is the Sandbox object (None for delete)."""
    method: str
    args: tuple[Any, ...]


@dataclass(frozen=True)
class Watch:
    """The sandbox's next change: the first ADDED, MODIFIED or DELETED event of a watch from
    `version` that the API server ends after `seconds`; None when the watch ended or broke first."""
    namespace: str
    name: str
    version: str
    seconds: int


@dataclass(frozen=True)
class Call:
    """A gateway call on one sandbox (docs/gateway.md). `read`: what the answer is taken as
    (json, bytes, none; `stream` is read event by event, through the client's stream())."""
    namespace: str
    name: str
    method: str
    rest: str
    params: Optional[Mapping[str, str]] = None
    body: Any = None
    data: Optional[bytes] = None
    wait: float = 0
    timeout: Optional[float] = None
    read: str = "json"


@dataclass(frozen=True)
class Pause:
    seconds: float


Step = Union[Kube, Watch, Call, Pause]
Plan = Generator[Step, Any, T]


class Runner(Generic[T]):
    """Steps a plan: `step` is what it asks for; `with runner as step: runner.reply = <its outcome>`
    gives the plan the outcome, or the exception the step raised (a plan may clean up and go on,
    e.g. delete a sandbox whose wait failed); `result` is the plan's value once `running` is False."""

    def __init__(self, plan: Plan[T]) -> None:
        self.plan, self.running, self.reply = plan, True, None
        self.result: Any = None
        self._advance(plan.send, None)

    def _advance(self, resume: Callable[[Any], Step], value: Any) -> None:
        try:
            self.step = resume(value)
        except StopIteration as done:
            self.running, self.result = False, done.value

    def __enter__(self) -> Step:
        self.reply = None
        return self.step

    def __exit__(self, kind: Any, exc: Optional[BaseException], tb: Any) -> bool:
        if exc is None:
            self._advance(self.plan.send, self.reply)
        else:
            self._advance(self.plan.throw, exc)  # what the plan raises instead goes to the caller
        return True


# -- the gateway: requests, answers, streams, errors -------------------------------------------------

@dataclass(frozen=True)
class Request:
    method: str
    url: str
    headers: dict[str, str]
    data: Optional[bytes]
    connect_timeout: float
    read_timeout: float


def sandbox_url(gateway_url: str, namespace: str, name: str, rest: str) -> str:
    return f"{gateway_url}/v1/namespaces/{quote(namespace, safe='')}/sandboxes/{quote(name, safe='')}/{rest}"


def gateway_request(gateway_url: str, bearer: str, call: Call) -> Request:
    """The HTTP request of a gateway call, the caller's bearer token with it (the gateway accepts nothing else)."""
    headers = {"Authorization": bearer, "Accept": "application/json, application/x-ndjson"}
    if call.wait:
        headers["X-LLMSS-Wait"] = str(int(call.wait))
    if call.timeout is not None:
        headers["X-LLMSS-Timeout"] = str(int(call.timeout))
    data = call.data
    if call.body is not None:
        data = json.dumps(call.body).encode()
        headers["Content-Type"] = "application/json"
    elif data is not None:
        headers["Content-Type"] = "application/octet-stream"
    url = sandbox_url(gateway_url, call.namespace, call.name, call.rest) + (f"?{urlencode(call.params)}" if call.params else "")
    # between two bytes, as long as the call may be silent: its wait, its own timeout and a margin
    read = (RUNTIME_DEFAULT_TIMEOUT if call.timeout is None else call.timeout) + call.wait + READ_MARGIN
    return Request(call.method, url, headers, data, CONNECT_TIMEOUT, read)


def read_answer(read: str, content: bytes) -> Any:
    """A whole (successful) answer as the call wants it."""
    if read == "json":
        return json.loads(content) if content.strip() else {}
    return content if read == "bytes" else None


def answer_error(status: int, content: bytes) -> SandboxError:
    """The error of an answer >= 400: the gateway's (or runtime's) JSON error, with the sandbox's reason."""
    try:
        body = json.loads(content) if content else None
    except ValueError:
        body = None
    return from_answer(status, body)


def unreachable(gateway_url: str, exc: BaseException) -> SandboxError:
    return SandboxError(f"the gateway {gateway_url} did not answer ({type(exc).__name__})", code="gateway_unreachable")


def stream_broken(exc: BaseException) -> RuntimeUnreachable:
    return RuntimeUnreachable(f"the stream from the gateway broke off ({type(exc).__name__})", code="stream_broken")


def kube_error(status: Optional[int], body: Any, reason: Any, namespace: str, name: str) -> SandboxError:
    """The error of an API-server answer (a Status object in `body`), naming the sandbox."""
    try:
        message = str(json.loads(body or "{}").get("message") or reason)
    except (ValueError, AttributeError, TypeError):
        message = str(reason)
    where = f"sandbox {namespace}/{name}" if name else f"sandboxes in {namespace}"
    if status == 404:
        return NotFound(f"{where}: not found ({message})", code="sandbox_not_found", status=404,
                        sandbox={"namespace": namespace, "name": name})
    if status in (401, 403):
        cls, code = (Unauthenticated, "unauthenticated") if status == 401 else (Forbidden, "forbidden")
        return cls(f"{where}: {message}", code=code, status=status)
    return SandboxError(f"{where}: the API server answered {status}: {message}", code="api_error", status=status)


class Lines:
    """NDJSON: the JSON values of a byte stream's lines, however the stream is cut into chunks."""

    def __init__(self) -> None:
        self._pending: list[bytes] = []

    def feed(self, chunk: bytes) -> list[Any]:
        if b"\n" not in chunk:
            self._pending.append(chunk)
            return []
        first, *lines, rest = chunk.split(b"\n")
        lines.insert(0, b"".join(self._pending) + first)
        self._pending = [rest] if rest else []
        return [json.loads(line) for line in lines if line.strip()]

    def end(self) -> list[Any]:
        return self.feed(b"\n")


class Events:
    """A gateway stream's events (RUNTIME-API v1: start, stdout, stderr, ..., then `last`) as they
    arrive: an `error` event raises RuntimeUnreachable, and so does a stream that ends without `last`."""

    def __init__(self, last: str) -> None:
        self.last, self.ended, self._lines = last, False, Lines()

    def feed(self, chunk: bytes) -> list[Event]:
        try:
            values = self._lines.feed(chunk)
        except ValueError:
            raise RuntimeUnreachable("the stream sent a line that is not JSON", code="stream_error") from None
        return [self._event(value) for value in values]

    def finish(self) -> Iterator[Event]:
        try:
            values = self._lines.end()
        except ValueError:  # the stream broke off inside a line
            values = []
        yield from (self._event(value) for value in values)
        if not self.ended:
            raise RuntimeUnreachable(f"the stream ended without its {self.last!r} line", code="stream_truncated")

    def _event(self, event: Any) -> Event:
        if not isinstance(event, dict):
            raise RuntimeUnreachable(f"the stream sent {type(event).__name__}, not an event", code="stream_error")
        if event.get("type") == "error":
            error = event.get("error") or {}
            raise RuntimeUnreachable(str(error.get("message") or "the stream broke off"), code=str(error.get("code") or "stream_error"))
        if event.get("type") == self.last:
            self.ended = True
        return event


# -- results ---------------------------------------------------------------------------------------

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


class Collector:
    """Gathers a stream's output; `add` hands each chunk to on_stdout/on_stderr and returns what the
    callback returned (the async client awaits it when it is awaitable)."""

    def __init__(self, on_stdout: Output = None, on_stderr: Output = None) -> None:
        self.out: list[str] = []
        self.err: list[str] = []
        self.callbacks = {"stdout": (self.out, on_stdout), "stderr": (self.err, on_stderr)}
        self.result: Optional[str] = None
        self.end: Event = {}
        self.id = ""

    def add(self, event: Event) -> Any:
        kind = event.get("type")
        if kind in self.callbacks:
            chunks, callback = self.callbacks[kind]
            chunks.append(event.get("data", ""))
            return callback(event.get("data", "")) if callback else None
        if kind == "result":
            self.result = event.get("data")
        elif kind == "start":
            self.id = str(event.get("id", ""))
        elif kind in ("exit", "done"):
            self.end = event
        return None

    def exec_result(self) -> ExecResult:
        end = self.end
        return ExecResult(end.get("exit_code"), "".join(self.out), "".join(self.err), end.get("signal"), bool(end.get("timed_out")),
                          bool(end.get("truncated")), float(end.get("duration_ms") or 0), str(end.get("id") or self.id))

    def run_result(self) -> RunResult:
        done = self.end
        return RunResult(str(done.get("status")), "".join(self.out), "".join(self.err), self.result, done.get("error"),
                         float(done.get("duration_ms") or 0))


def file_entries(answer: Mapping[str, Any]) -> list[FileEntry]:
    return [FileEntry(e["name"], e["path"], e["type"], int(e.get("size") or 0), float(e.get("mtime") or 0))
            for e in answer.get("entries", [])]


# -- the Sandbox object and its state ----------------------------------------------------------------

class SandboxOptions(TypedDict, total=False):
    """What Sandbox.create() and AsyncSandbox.create() put into the Sandbox (docs/gateway.md).
    Warm by default: the use-warm-pod annotation lets a compatible WarmPool serve it (a sandbox no
    pool can serve starts cold at once); `warm_pool` names the pool (spec.warmPoolRef); `warm=False`
    always starts cold. `spec` is merged over the rest."""
    name: Optional[str]
    generate_name: str
    warm: bool
    warm_pool: Optional[str]
    security_level: Optional[str]
    profile: Optional[str]
    timeout: Optional[int]
    lifetime_seconds: Optional[int]
    idle_timeout_seconds: Optional[int]
    resources: Optional[Mapping[str, Any]]
    spec: Optional[Mapping[str, Any]]
    labels: Optional[Mapping[str, str]]
    annotations: Optional[Mapping[str, str]]


class ExecOptions(TypedDict, total=False):
    """Of an execution (exec, run): seconds it may run (the runtime's default: 60), environment,
    working directory (under /workspace or /tmp), standard input. None: not given."""
    timeout: Optional[float]
    env: Optional[Mapping[str, str]]
    cwd: Optional[str]
    stdin: Optional[str]


def _known(options: Mapping[str, Any], allowed: type, what: str) -> None:
    unknown = sorted(set(options) - set(allowed.__annotations__))
    if unknown:
        raise TypeError(f"{what}() got unexpected keyword argument(s): {', '.join(unknown)}")


def sandbox_manifest(runtime: str, options: SandboxOptions) -> dict[str, Any]:
    _known(options, SandboxOptions, "create")
    spec: dict[str, Any] = {"runtime": runtime}
    resources = options.get("resources")
    for key, value in (("securityLevel", options.get("security_level")), ("timeout", options.get("timeout")),
                       ("lifetimeSeconds", options.get("lifetime_seconds")), ("idleTimeoutSeconds", options.get("idle_timeout_seconds")),
                       ("resources", dict(resources) if resources else None)):
        if value is not None:
            spec[key] = value
    if options.get("profile"):
        spec["profileRef"] = {"name": options.get("profile")}
    if options.get("warm_pool"):
        spec["warmPoolRef"] = {"name": options.get("warm_pool")}
    spec.update(options.get("spec") or {})
    meta: dict[str, Any] = {"labels": dict(options.get("labels") or {}), "annotations": dict(options.get("annotations") or {})}
    if options.get("warm", True) and not options.get("warm_pool"):
        meta["annotations"][ANNOTATION_USE_WARM_POD] = "true"
    name = options.get("name")
    meta.update({"name": name} if name else {"generateName": options.get("generate_name") or "sandbox-"})
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Sandbox", "metadata": meta, "spec": spec}


SUSPEND_PATCH = {"spec": {"operatingMode": "Suspended"}}


def resume_patch(now: Optional[datetime] = None) -> dict[str, Any]:
    """operatingMode Running and fresh activity (which also ends an idle suspension)."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"metadata": {"annotations": {ANNOTATION_LAST_ACTIVITY: stamp}}, "spec": {"operatingMode": "Running"}}


def condition(sandbox: Mapping[str, Any], kind: str) -> dict[str, Any]:
    for c in (sandbox.get("status") or {}).get("conditions") or ():
        if isinstance(c, dict) and c.get("type") == kind:
            return c
    return {}


def suspended(sandbox: Mapping[str, Any]) -> bool:
    status = sandbox.get("status") or {}
    return ((sandbox.get("spec") or {}).get("operatingMode") == "Suspended" or status.get("phase") in ("Suspending", "Suspended")
            or condition(sandbox, "Suspended").get("status") == "True")


def serving(sandbox: Mapping[str, Any]) -> bool:
    """What the gateway serves: Running, Ready, a pod, not suspended (gateway/sandboxes.py)."""
    status = sandbox.get("status") or {}
    return (status.get("phase") == "Running" and condition(sandbox, "Ready").get("status") == "True"
            and bool(status.get("podName")) and not suspended(sandbox))


def state(sandbox: Mapping[str, Any]) -> dict[str, Any]:
    """The sandbox's own account of itself, as errors carry it."""
    meta, status = sandbox.get("metadata") or {}, sandbox.get("status") or {}
    c = condition(sandbox, "Suspended" if suspended(sandbox) else "Ready") or condition(sandbox, "Validated")
    return {"namespace": meta.get("namespace"), "name": meta.get("name"), "phase": status.get("phase"),
            "condition": c.get("type"), "reason": c.get("reason"), "message": c.get("message")}


def describe(sandbox_state: Mapping[str, Any]) -> str:
    why = f"{sandbox_state.get('reason')}: {sandbox_state.get('message')}" if sandbox_state.get("reason") else "no condition yet"
    return f"phase {sandbox_state.get('phase') or 'unknown'}, {sandbox_state.get('condition') or 'Ready'} {why}"


@dataclass
class SandboxBase(Generic[C]):
    """A Sandbox object on the cluster, as both clients hold it: its name, namespace, connection
    (Connection or AsyncConnection), last seen object and how long each call waits for it
    (`wait`, seconds: a starting sandbox, or a suspended one the gateway resumes on demand when
    you may patch it; docs/gateway.md)."""
    name: str
    namespace: str
    connection: C
    obj: dict[str, Any] = field(default_factory=dict, repr=False)
    wait: float = 60.0

    @property
    def phase(self) -> Optional[str]:
        return (self.obj.get("status") or {}).get("phase")

    @property
    def state(self) -> dict[str, Any]:
        """phase, condition, reason, message: what the controllers last said."""
        return state(self.obj)

    def _where(self) -> str:
        return f"sandbox {self.namespace}/{self.name}"

    def _call(self, method: str, rest: str, **kw: Any) -> Call:
        return Call(self.namespace, self.name, method, rest, wait=self.wait, **kw)


# -- the plans -------------------------------------------------------------------------------------

S = TypeVar("S", bound=SandboxBase[Any])

def _kube(sb: SandboxBase[Any], method: str, *args: Any) -> Kube:
    return Kube(method, (sb.namespace, sb.name, *args))


def create_plan(make: Callable[[dict[str, Any]], S], namespace: str, runtime: str, options: SandboxOptions,
                wait: bool, wait_timeout: float) -> Plan[S]:
    """Create the Sandbox and (when `wait`) wait until it serves; if waiting fails, it is deleted."""
    sandbox = make((yield Kube("create_sandbox", (namespace, sandbox_manifest(runtime, options)))))
    try:
        yield Pause(0)  # where the async client delivers a cancellation that came during the create: the sandbox is known
        if wait:
            yield from wait_plan(sandbox, wait_timeout)
    except BaseException:
        yield from delete_plan(sandbox)
        raise
    return sandbox


def refresh_plan(sb: SandboxBase[Any]) -> Plan[dict[str, Any]]:
    sb.obj = yield _kube(sb, "get_sandbox")
    return sb.obj


def wait_plan(sb: S, timeout: float, resuming: bool = False) -> Plan[S]:
    """Until the sandbox serves, on a watch (no polling). NotReady when it failed or ended,
    Suspended when it is suspended (unless `resuming`: then until it is back), Timeout (with its
    last reason) when time runs out."""
    deadline = time.monotonic() + timeout
    if not sb.obj:
        yield from refresh_plan(sb)
    while not serving(sb.obj):
        now = state(sb.obj)
        if (sb.obj.get("metadata") or {}).get("deletionTimestamp") or now["phase"] in ENDED_PHASES:
            raise NotReady(f"{sb._where()} will not run: {describe(now)}", code="sandbox_ended", sandbox=now)
        if suspended(sb.obj) and not (resuming and (sb.obj.get("spec") or {}).get("operatingMode") != "Suspended"):
            raise Suspended(f"{sb._where()} is suspended: resume() it", code="sandbox_suspended", sandbox=now)
        yield from _next_change(sb, deadline, f"did not become ready within {timeout:g} s")
    return sb


def _next_change(sb: SandboxBase[Any], deadline: float, late: str) -> Plan[None]:
    """sb.obj after the sandbox's next change (or as it is when the watch ends or breaks)."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise Timeout(f"{sb._where()} {late}: {describe(sb.state)}", code="timeout", sandbox=sb.state)
    began = time.monotonic()
    event = yield Watch(sb.namespace, sb.name, str((sb.obj.get("metadata") or {}).get("resourceVersion") or ""), int(left) + 1)
    if event and event.get("type") == "DELETED":
        raise NotFound(f"{sb._where()} was deleted while being waited for", code="sandbox_not_found", sandbox=sb.state)
    if event and isinstance(event.get("object"), dict):
        sb.obj = event["object"]
        return
    if time.monotonic() - began < 0.5:  # a watch that ends at once must not become a busy loop
        yield Pause(min(1.0, max(0.0, left - 0.1)))
    yield from refresh_plan(sb)


def suspend_plan(sb: SandboxBase[Any], wait: bool, timeout: float) -> Plan[None]:
    """operatingMode Suspended: the pod goes, the volume stays (docs/suspend.md)."""
    sb.obj = yield _kube(sb, "patch_sandbox", SUSPEND_PATCH)
    deadline = time.monotonic() + timeout
    while wait and sb.phase != "Suspended":
        yield from _next_change(sb, deadline, f"was not Suspended within {timeout:g} s")


def resume_plan(sb: SandboxBase[Any], wait: bool, timeout: float) -> Plan[None]:
    sb.obj = yield _kube(sb, "patch_sandbox", resume_patch())
    if wait:
        yield from wait_plan(sb, timeout, resuming=True)


def delete_plan(sb: SandboxBase[Any]) -> Plan[None]:
    """Delete the Sandbox (its pod, policies and Delete volumes go with it); gone already is fine."""
    try:
        yield _kube(sb, "delete_sandbox")
    except NotFound:
        pass


def call_plan(call: Call, parse: Callable[[Any], T] = lambda answer: answer) -> Plan[T]:
    """One gateway call and what is made of its answer."""
    return parse((yield call))


def write_plan(sb: SandboxBase[Any], path: str, data: Union[bytes, str]) -> Plan[int]:
    body = data.encode() if isinstance(data, str) else data
    return call_plan(sb._call("PUT", "files", params={"path": path}, data=body), lambda answer: int(answer.get("size", len(body))))


def read_plan(sb: SandboxBase[Any], path: str) -> Plan[bytes]:
    return call_plan(sb._call("GET", "files", params={"path": path}, read="bytes"))


def list_plan(sb: SandboxBase[Any], path: str) -> Plan[list[FileEntry]]:
    return call_plan(sb._call("GET", "files/list", params={"path": path}), file_entries)


def remove_plan(sb: SandboxBase[Any], path: str, recursive: bool) -> Plan[None]:
    return call_plan(sb._call("DELETE", "files", params={"path": path, **({"recursive": "true"} if recursive else {})}, read="none"))


def kill_plan(sb: SandboxBase[Any], exec_id: str) -> Plan[None]:
    return call_plan(sb._call("POST", f"exec/{exec_id}/kill", read="none"))


def session_plan(sb: SandboxBase[Any], language: str) -> Plan[str]:
    """A new session; its id."""
    return call_plan(sb._call("POST", "sessions", body={"language": language}), lambda answer: str(answer["id"]))


def sessions_plan(sb: SandboxBase[Any]) -> Plan[list[dict[str, Any]]]:
    return call_plan(sb._call("GET", "sessions"), lambda answer: list(answer.get("sessions", [])))


def session_verb_plan(sb: SandboxBase[Any], session_id: str, verb: str) -> Plan[None]:
    """interrupt or restart a session."""
    return call_plan(sb._call("POST", f"sessions/{session_id}/{verb}", read="none"))


def session_close_plan(sb: SandboxBase[Any], session_id: str) -> Plan[None]:
    """Delete a session; gone already is fine."""
    try:
        yield sb._call("DELETE", f"sessions/{session_id}", read="none")
    except NotFound:
        pass


def exec_call(sb: SandboxBase[Any], body: dict[str, Any], options: ExecOptions) -> Call:
    """The streamed POST exec of a command ({"cmd"}) or code ({"code", "language"})."""
    _known(options, ExecOptions, "exec")
    env = options.get("env")
    for key, value in (("timeout", options.get("timeout")), ("env", dict(env) if env else None), ("cwd", options.get("cwd")),
                       ("stdin", options.get("stdin"))):
        if value is not None:
            body[key] = value
    return sb._call("POST", "exec", body=body, timeout=options.get("timeout"), read="stream")


def command_body(cmd: Command) -> dict[str, Any]:
    """A list runs as is; a string runs under /bin/sh -c."""
    return {"cmd": cmd if isinstance(cmd, str) else list(cmd)}


def session_run_call(sb: SandboxBase[Any], session_id: str, code: str, timeout: Optional[float]) -> Call:
    body: dict[str, Any] = {"code": code, **({"timeout": timeout} if timeout is not None else {})}
    return sb._call("POST", f"sessions/{session_id}/run", body=body, timeout=timeout, read="stream")
