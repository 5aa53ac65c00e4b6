"""The HTTP edge: routing, authentication, body limits, slow-client deadlines, JSON errors.

ThreadingHTTPServer, one thread per connection (at most LLMSS_RUNTIME_MAX_CONNECTIONS), HTTP/1.1
with keep-alive; streamed answers use chunked encoding. Every error is JSON
{"error":{"code","message"}}; an unexpected exception is logged to stderr and answered 500
without its trace."""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import sys
import threading
import time
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional
from urllib.parse import parse_qs, urlsplit

from . import auth, files
from .execs import Executor, TooMany
from .metrics import Metrics
from .sessions import SessionError, Sessions
from .settings import Settings

MAX_TIMEOUT = 3600.0
DEFAULT_TIMEOUT = 60.0
MAX_ARGV = 4096
MAX_ENV = 1024
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ID = re.compile(r"[0-9a-f]{16}")
EXEC_FIELDS = {"cmd", "code", "language", "timeout", "env", "cwd", "stdin"}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


def bad(message: str, code: str = "bad_request") -> ApiError:
    return ApiError(400, code, message)


class Runtime:
    """Everything the handlers share."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.verifier = auth.Verifier(auth.load_keys(settings.public_keys), settings.pod_uid)
        self.confinement = files.Confinement(settings.writable)
        self.executor = Executor(settings.max_concurrent, settings.max_output_bytes, self.metrics)
        self.sessions = Sessions(settings.max_sessions, settings.max_output_bytes, settings.kill_grace, self.metrics)
        self.draining = False
        self.env = child_env(settings)

    def default_cwd(self) -> str:
        home = self.env.get("HOME", "")
        return home if home and self.confinement.contains(home) and os.path.isdir(home) else (self.confinement.roots() or ["/"])[0]


def child_env(settings: Settings) -> dict[str, str]:
    """The environment of executions and sessions: the pod's, with HOME, TMPDIR and the usual
    caches inside the writable paths when the image left them on the read-only root."""
    env = dict(os.environ)
    usable = [p for p in settings.writable if os.path.isdir(p) and os.access(p, os.W_OK)]
    conf = files.Confinement(settings.writable)
    if usable:
        home = env.get("HOME", "")
        if not (home and conf.contains(home) and os.access(home, os.W_OK)):
            env["HOME"] = next((p for p in usable if p != "/tmp"), usable[0])
        tmp = env.get("TMPDIR", "")
        if not (tmp and conf.contains(tmp)):
            env["TMPDIR"] = "/tmp" if "/tmp" in usable else usable[0]
        env.setdefault("XDG_CACHE_HOME", os.path.join(env["HOME"], ".cache"))
        env.setdefault("PIP_CACHE_DIR", os.path.join(env["XDG_CACHE_HOME"], "pip"))
        env.setdefault("MPLCONFIGDIR", os.path.join(env["XDG_CACHE_HOME"], "matplotlib"))
    env.setdefault("PYTHONDONTWRITEBYTECODE", "1")  # no __pycache__ next to read-only sources
    return env


class Watchdog:
    """Closes connections whose request head has not arrived by its deadline (slowloris)."""

    def __init__(self) -> None:
        self._deadlines: dict[int, tuple[float, socket.socket]] = {}
        self._lock = threading.Lock()
        threading.Thread(target=self._run, daemon=True, name="watchdog").start()

    def arm(self, sock: socket.socket, seconds: float) -> None:
        with self._lock:
            self._deadlines[id(sock)] = (time.monotonic() + seconds, sock)

    def disarm(self, sock: socket.socket) -> None:
        with self._lock:
            self._deadlines.pop(id(sock), None)

    def _run(self) -> None:
        while True:
            time.sleep(0.1)
            now = time.monotonic()
            with self._lock:
                late = [k for k, (t, _) in self._deadlines.items() if t <= now]
                socks = [self._deadlines.pop(k)[1] for k in late]
            for sock in socks:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.watchdog = Watchdog()
        self.connections = 0
        self._conn_lock = threading.Lock()
        super().__init__((runtime.settings.host, runtime.settings.port), Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conn_lock:
            full = self.connections >= self.runtime.settings.max_connections
            if not full:
                self.connections += 1
        if full:
            self.runtime.metrics.count(self.runtime.metrics.failures, "connection_limit")
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._conn_lock:
                self.connections -= 1

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, socket.timeout)):
            return  # a client that went away or was too slow: nothing to report
        log("error", "unhandled connection error", error=repr(exc))


def log(level: str, message: str, **fields: Any) -> None:
    sys.stderr.write(json.dumps({"level": level, "msg": message, **fields}, default=str) + "\n")


class ClientGone(Exception):
    pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "llmss-runtime/1"
    sys_version = ""
    server: Server

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.runtime.settings.idle_timeout)
        # Each stream event and a reply's head and body are separate small writes: with Nagle on,
        # the second waits for the client's delayed ACK (40 ms on Linux) on every call.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # --- the request cycle --------------------------------------------------------------------
    def handle_one_request(self) -> None:
        self.server.watchdog.arm(self.connection, self.server.runtime.settings.header_timeout)
        try:
            super().handle_one_request()
        except (ConnectionError, TimeoutError, socket.timeout):
            self.close_connection = True
        finally:
            self.server.watchdog.disarm(self.connection)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        rt = self.server.runtime
        self.server.watchdog.disarm(self.connection)  # the head arrived; the body has the idle timeout
        self._streaming = False
        try:
            url = urlsplit(self.path)
            self.query = parse_qs(url.query, keep_blank_values=True)
            route = url.path
            if self.command in ("GET", "HEAD") and route in ("/health", "/ready", "/metrics"):
                self._drain_body_or_refuse()
                return self._probe(route)
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                self.close_connection = True
                raise ApiError(411, "length_required", "request bodies need Content-Length (no chunked uploads)")
            self.length = self._content_length()
            try:
                self.token = rt.verifier.verify(self.headers.get("Authorization"), self.command, self.path)
            except auth.AuthError as exc:
                rt.metrics.count(rt.metrics.auth_refused, exc.check)
                self.close_connection = self.length > 0  # do not read an unauthenticated body
                raise ApiError(401, "unauthenticated", f"{exc} (check: {exc.check})") from None
            self._route(self.command, route)
        except ApiError as exc:
            self._error(exc.status, exc.code, str(exc))
        except files.FileError as exc:
            self._error(exc.status, exc.code, str(exc))
        except SessionError as exc:
            self._error(exc.status, exc.code, str(exc))
        except ClientGone:
            self.close_connection = True
        except (ConnectionError, TimeoutError, socket.timeout):
            self.close_connection = True
        except Exception as exc:
            log("error", "unhandled exception", path=self.path, trace=traceback.format_exc())
            self._error(500, "internal", f"internal error ({type(exc).__name__}); the runtime's log has the details")

    def _content_length(self) -> int:
        raw = self.headers.get("Content-Length")
        if raw is None:
            return 0
        if not raw.strip().isdigit():
            self.close_connection = True
            raise bad("Content-Length must be a non-negative integer")
        return int(raw)

    def _drain_body_or_refuse(self) -> None:
        if self.headers.get("Content-Length", "0").strip() not in ("", "0"):
            self.close_connection = True

    def _read(self, limit: int) -> bytes:
        if self.length > limit:
            self.close_connection = True
            raise ApiError(413, "body_too_large", f"the body is {self.length} bytes, over the limit of {limit}")
        data = self.rfile.read(self.length) if self.length else b""
        if len(data) != self.length:
            self.close_connection = True
            raise ClientGone()
        auth.body_matches(self.token, hashlib.sha256(data).hexdigest()) if self.token else None
        return data

    def _body(self) -> bytes:
        try:
            return self._read(self.server.runtime.settings.max_request_bytes)
        except auth.AuthError as exc:
            self.server.runtime.metrics.count(self.server.runtime.metrics.auth_refused, exc.check)
            raise ApiError(401, "unauthenticated", f"{exc} (check: {exc.check})") from None

    def _json(self) -> dict[str, Any]:
        data = self._body()
        if not data:
            return {}
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise bad(f"the body is not valid JSON: {exc}", "malformed_json") from None
        if not isinstance(obj, dict):
            raise bad("the body must be a JSON object", "malformed_json")
        return obj

    # --- answers ------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.server.runtime.metrics.count(self.server.runtime.metrics.requests, str(status))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _reply(self, status: int, obj: Any) -> None:
        self._send(status, (json.dumps(obj) + "\n").encode())

    def _error(self, status: int, code: str, message: str) -> None:
        if self._streaming:  # the head is out: end the stream with the error as its last line
            try:
                self._chunk(json.dumps({"type": "error", "error": {"code": code, "message": message}}).encode() + b"\n")
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass
            self.close_connection = True
            return
        try:
            self._reply(status, {"error": {"code": code, "message": message}})
        except OSError:
            self.close_connection = True

    def send_error(self, code: int, message: Optional[str] = None, explain: Optional[str] = None) -> None:
        # http.server's own refusals (bad request line, headers too long, unknown method): JSON too.
        self.close_connection = True
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        self._streaming = False
        self._error(code, phrase.lower().replace(" ", "_").replace("-", "_"), message or phrase)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # metrics count responses; per-request lines would be the sandbox's noise

    def _start_stream(self) -> Callable[[dict[str, Any]], None]:
        self.server.runtime.metrics.count(self.server.runtime.metrics.requests, "200")
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Accel-Buffering", "no")
        self.end_headers()
        self._streaming = True

        def emit(obj: dict[str, Any]) -> None:
            try:
                self._chunk(json.dumps(obj, ensure_ascii=False).encode() + b"\n")
            except OSError:
                raise ClientGone() from None
        return emit

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _end_stream(self) -> None:
        try:
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            raise ClientGone() from None
        self._streaming = False

    # --- routes -------------------------------------------------------------------------------
    def _probe(self, route: str) -> None:
        rt = self.server.runtime
        if route == "/health":
            return self._reply(200, {"status": "ok"})
        if route == "/metrics":
            return self._send(200, rt.metrics.render().encode(), "text/plain; version=0.0.4; charset=utf-8")
        if rt.draining:
            return self._reply(503, {"status": "draining", "reason": "the runtime is shutting down (SIGTERM)"})
        if rt.executor.busy:
            return self._reply(503, {"status": "busy", "reason": f"{rt.settings.max_concurrent} executions are running"})
        if not rt.confinement.roots():
            return self._reply(503, {"status": "not_ready", "reason": "none of the writable paths exists"})
        return self._reply(200, {"status": "ready"})

    def _route(self, method: str, route: str) -> None:
        parts = [p for p in route.split("/") if p]
        if parts[:1] != ["v1"]:
            raise ApiError(404, "not_found", f"no route {route}")
        parts = parts[1:]
        if parts == ["exec"] and method == "POST":
            return self._exec()
        if len(parts) == 3 and parts[0] == "exec" and parts[2] == "kill" and method == "POST":
            self._body()
            if not self.server.runtime.executor.kill(parts[1]):
                raise ApiError(404, "not_running", f"no running execution {parts[1]!r}")
            return self._reply(200, {"id": parts[1], "killed": True})
        if parts == ["sessions"]:
            if method == "POST":
                return self._session_create()
            if method == "GET":
                self._body()
                return self._reply(200, {"sessions": self.server.runtime.sessions.list()})
        if len(parts) >= 2 and parts[0] == "sessions":
            return self._session(method, parts[1], parts[2:])
        if parts == ["files"]:
            if method == "PUT":
                return self._file_put()
            if method in ("GET", "HEAD"):
                return self._file_get()
            if method == "DELETE":
                self._body()
                files.delete(self.server.runtime.confinement, self._param("path"), self._param("recursive") == "true")
                return self._send(204, b"")
        if parts == ["files", "list"] and method == "GET":
            self._body()
            return self._reply(200, files.listing(self.server.runtime.confinement, self._param("path")))
        raise ApiError(404 if parts[:1] in (["exec"], ["sessions"], ["files"]) else 404, "not_found",
                       f"no route {method} {route}")

    def _param(self, name: str) -> Optional[str]:
        values = self.query.get(name)
        if values and len(values) > 1:
            raise bad(f"the query parameter {name!r} is given more than once")
        return values[0] if values else None

    # --- exec ---------------------------------------------------------------------------------
    def _exec(self) -> None:
        rt = self.server.runtime
        req = self._json()
        unknown = set(req) - EXEC_FIELDS
        if unknown:
            raise bad(f"unknown fields {sorted(unknown)}; allowed: {sorted(EXEC_FIELDS)}")
        argv = _argv(req)
        timeout = _timeout(req.get("timeout"))
        env = dict(rt.env)
        env.update(_env(req.get("env")))
        cwd = _cwd(rt, req.get("cwd"))
        stdin = req.get("stdin")
        if stdin is not None and not isinstance(stdin, str):
            raise bad("stdin must be a string")
        try:
            execution = rt.executor.start(argv, env, cwd, stdin.encode() if stdin else None)
        except TooMany as exc:
            raise ApiError(503 if rt.executor.draining else 429, "draining" if rt.executor.draining else "too_many_executions",
                           str(exc)) from None
        except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
            rt.metrics.count(rt.metrics.failures, "spawn")
            raise ApiError(400, "cannot_start", f"cannot start {argv[0]!r}: {exc.strerror}") from None
        emit = self._start_stream()
        rt.executor.run(execution, timeout, emit)
        self._end_stream()

    # --- sessions -----------------------------------------------------------------------------
    def _session_create(self) -> None:
        rt = self.server.runtime
        req = self._json()
        if req.get("language", "python") != "python":
            raise bad("language must be 'python' (the only session language)")
        unknown = set(req) - {"language", "env", "cwd"}
        if unknown:
            raise bad(f"unknown fields {sorted(unknown)}")
        env = dict(rt.env)
        env.update(_env(req.get("env")))
        session = rt.sessions.create(env, _cwd(rt, req.get("cwd")))
        self._reply(201, session.describe())

    def _session(self, method: str, sid: str, rest: list[str]) -> None:
        rt = self.server.runtime
        if not _ID.fullmatch(sid):
            raise ApiError(404, "session_not_found", f"no session {sid[:40]!r}")
        if not rest and method == "DELETE":
            self._body()
            rt.sessions.close(sid)
            return self._send(204, b"")
        if not rest and method == "GET":
            self._body()
            return self._reply(200, rt.sessions.get(sid).describe())
        if rest == ["run"] and method == "POST":
            req = self._json()
            code = req.get("code")
            if not isinstance(code, str):
                raise bad("code must be a string")
            timeout = _timeout(req.get("timeout"))
            session = rt.sessions.get(sid)
            if not session.lock.acquire(timeout=0):
                raise ApiError(409, "session_busy", "the session is running a cell: wait, or interrupt it")
            try:
                if session.state == "crashed":
                    raise ApiError(409, "session_crashed", f"the session's process {session.exit_detail}; restart it")
                if session.state == "closed":
                    raise ApiError(404, "session_not_found", f"no session {sid!r}")
                emit = self._start_stream()
                rt.sessions.run(session, code, timeout, emit)
                self._end_stream()
            finally:
                session.lock.release()
            return
        if rest == ["interrupt"] and method == "POST":
            self._body()
            return self._reply(200, {"id": sid, "interrupted": rt.sessions.interrupt(sid)})
        if rest == ["restart"] and method == "POST":
            self._body()
            return self._reply(200, rt.sessions.restart(sid).describe())
        raise ApiError(404, "not_found", f"no route {method} /v1/sessions/{sid}/{'/'.join(rest)}")

    # --- files --------------------------------------------------------------------------------
    def _file_put(self) -> None:
        rt = self.server.runtime
        if self.headers.get("Content-Length") is None:
            self.close_connection = True
            raise ApiError(411, "length_required", "PUT /v1/files needs Content-Length")
        if self.length > rt.settings.max_file_bytes:
            self.close_connection = True
            raise ApiError(413, "file_too_large", f"the file is {self.length} bytes, over the limit of {rt.settings.max_file_bytes}"
                                                  " (LLMSS_RUNTIME_MAX_FILE_BYTES)")
        read_so_far = [0]

        def reader(n: int) -> bytes:
            data = self.rfile.read(n)
            read_so_far[0] += len(data)
            if len(data) < n:
                self.close_connection = True
                raise ClientGone()
            return data

        def check(digest: str) -> None:
            auth.body_matches(self.token, digest)
        try:
            result = files.write(rt.confinement, self._param("path"), reader, self.length, check)
        except auth.AuthError as exc:
            rt.metrics.count(rt.metrics.auth_refused, exc.check)
            raise ApiError(401, "unauthenticated", f"{exc} (check: {exc.check})") from None
        except files.FileError:
            if read_so_far[0] < self.length:
                self.close_connection = True  # the unread body would be taken for the next request
            raise
        self._reply(201, result)

    def _file_get(self) -> None:
        rt = self.server.runtime
        self._body()
        handle, size = files.open_read(rt.confinement, self._param("path"), rt.settings.max_file_bytes)
        with handle:
            rt.metrics.count(rt.metrics.requests, "200")
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            if self.command == "HEAD":
                return
            left = size
            while left > 0:
                chunk = handle.read(min(left, 1 << 20))
                if not chunk:
                    self.close_connection = True  # the file shrank under us: the length was a lie
                    return
                self.wfile.write(chunk)
                left -= len(chunk)


def _argv(req: dict[str, Any]) -> list[str]:
    cmd, code = req.get("cmd"), req.get("code")
    if (cmd is None) == (code is None):
        raise bad("give exactly one of cmd (a list of strings, or a string for /bin/sh -c) and code")
    if code is not None:
        if not isinstance(code, str):
            raise bad("code must be a string")
        language = req.get("language", "python")
        if language == "python":
            return [sys.executable, "-c", code]
        if language in ("sh", "bash"):
            return ["/bin/sh" if language == "sh" else "bash", "-c", code]
        raise bad("language must be python, sh or bash")
    if isinstance(cmd, str):
        if not cmd.strip():
            raise bad("cmd must not be empty")
        argv = ["/bin/sh", "-c", cmd]
    elif isinstance(cmd, list) and cmd and all(isinstance(a, str) for a in cmd) and len(cmd) <= MAX_ARGV:
        argv = list(cmd)
    else:
        raise bad(f"cmd must be a non-empty list of at most {MAX_ARGV} strings, or a string")
    if any("\0" in a for a in argv):
        raise bad("cmd must not contain NUL bytes")
    return argv


def _timeout(value: Any) -> float:
    if value is None:
        return DEFAULT_TIMEOUT
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_TIMEOUT:
        raise bad(f"timeout must be a number of seconds above 0 and at most {MAX_TIMEOUT:g}")
    return float(value)


def _env(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_ENV:
        raise bad(f"env must be an object of at most {MAX_ENV} string values")
    for key, val in value.items():
        if not _ENV_NAME.fullmatch(key) or not isinstance(val, str) or "\0" in val:
            raise bad(f"env: {key[:64]!r} must be a variable name with a string value without NUL")
    return value


def _cwd(rt: Runtime, value: Any) -> str:
    if value is None:
        return rt.default_cwd()
    if not isinstance(value, str):
        raise bad("cwd must be a string")
    target = rt.confinement.target(value)
    if not os.path.isdir(target.path):
        raise bad(f"cwd {value} is not a directory")
    return target.path
