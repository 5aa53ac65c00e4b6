"""A stand-in for the runtime (RUNTIME-API v1) while the repository has none: the tests prefer
`python -m runtime` (tests/gateway_support.py). It verifies every signature as the contract says
(key, aud, method, path, body hash, expiry, replay) and streams executions line by line, which is
what the gateway tests need; its sessions keep state in one namespace per session in this process
(not isolated: a test double, never shipped)."""
from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import subprocess
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

KEYS = [Ed25519PublicKey.from_public_bytes(base64.b64decode(k)) for k in os.environ.get("LLMSS_GATEWAY_PUBLIC_KEYS", "").split(",") if k]
POD_UID = os.environ.get("LLMSS_POD_UID", "")
WRITABLE = os.environ.get("LLMSS_RUNTIME_WRITABLE", "/tmp")
SEEN: set[str] = set()
SESSIONS: dict[str, dict] = {}


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def reply(self, status: int, body: object, ctype: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def error(self, status: int, code: str) -> None:
        self.reply(status, {"error": {"code": code, "message": code}})

    def check(self, body: bytes) -> str:
        header = self.headers.get("Authorization", "")
        if not header.startswith("LLMSS-Signature ") or "." not in header:
            return "bad_format"
        first, sig = header.split(" ", 1)[1].split(".", 1)
        if not any(_ok(k, _unb64(sig), first.encode()) for k in KEYS):
            return "bad_signature"
        p = json.loads(_unb64(first))
        now = time.time()
        if p["aud"] != POD_UID:
            return "wrong_audience"
        if p["m"] != self.command or p["p"] != self.path or p["b"] != hashlib.sha256(body).hexdigest():
            return "request_mismatch"
        if p["exp"] < now or p["iat"] > now + 30 or p["exp"] - p["iat"] > 60:
            return "expired"
        if p["jti"] in SEEN:
            return "replayed"
        SEEN.add(p["jti"])
        return ""

    def handle_any(self) -> None:
        if self.path == "/health":
            return self.reply(200, {"status": "ok"})
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        problem = self.check(body)
        if problem:
            return self.reply(401, {"error": {"code": "unauthenticated", "message": problem}})
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        route = (self.command, url.path)
        if route == ("POST", "/v1/exec"):
            return self.exec(json.loads(body))
        if route == ("PUT", "/v1/files"):
            Path(q["path"]).parent.mkdir(parents=True, exist_ok=True)
            Path(q["path"]).write_bytes(body)
            return self.reply(201, {"path": q["path"], "size": len(body)})
        if route == ("GET", "/v1/files"):
            path = Path(q["path"])
            return self.reply(200, path.read_bytes(), "application/octet-stream") if path.is_file() else self.error(404, "not_found")
        if route == ("GET", "/v1/files/list"):
            entries = [{"name": p.name, "path": str(p), "type": "dir" if p.is_dir() else "file",
                        "size": p.stat().st_size, "mtime": p.stat().st_mtime} for p in sorted(Path(q["path"]).iterdir())]
            return self.reply(200, {"entries": entries})
        if route == ("DELETE", "/v1/files"):
            Path(q["path"]).unlink()
            return self.reply(204, b"")
        if route == ("POST", "/v1/sessions"):
            sid = uuid.uuid4().hex[:12]
            SESSIONS[sid] = {}
            return self.reply(201, {"id": sid, "language": "python", "state": "idle"})
        parts = url.path.split("/")
        if len(parts) == 5 and parts[2] == "sessions" and parts[4] == "run" and parts[3] in SESSIONS:
            return self.session_run(SESSIONS[parts[3]], json.loads(body))
        if self.command == "DELETE" and len(parts) == 4 and parts[2] == "sessions":
            SESSIONS.pop(parts[3], None)
            return self.reply(204, b"")
        return self.error(404, "not_found")

    do_GET = do_POST = do_PUT = do_DELETE = handle_any

    def stream(self, events) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in events:
            line = (json.dumps(event) + "\n").encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def exec(self, req: dict) -> None:
        cmd = req.get("cmd") or ["python3", "-c", req["code"]]
        start = time.monotonic()

        def events():
            proc = subprocess.Popen(cmd, shell=isinstance(cmd, str), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    cwd=WRITABLE, env={**os.environ, **req.get("env", {}), "PYTHONUNBUFFERED": "1"})
            yield {"type": "start", "id": uuid.uuid4().hex[:12], "pid": proc.pid}
            for line in iter(proc.stdout.readline, b""):
                yield {"type": "stdout", "data": line.decode(errors="replace")}
            err = proc.stderr.read()
            if err:
                yield {"type": "stderr", "data": err.decode(errors="replace")}
            proc.wait()
            yield {"type": "exit", "exit_code": proc.returncode, "signal": None,
                   "duration_ms": (time.monotonic() - start) * 1000, "timed_out": False, "truncated": False}

        self.stream(events())

    def session_run(self, scope: dict, req: dict) -> None:
        out = io.StringIO()
        status, error = "ok", None
        with contextlib.redirect_stdout(out):
            try:
                exec(compile(req["code"], "<session>", "exec"), scope)  # noqa: S102 - a test double
            except Exception as exc:  # noqa: BLE001
                status, error = "error", {"ename": type(exc).__name__, "evalue": str(exc), "traceback": []}
        events = ([{"type": "stdout", "data": out.getvalue()}] if out.getvalue() else []) + \
            [{"type": "done", "status": status, "error": error, "duration_ms": 1.0}]
        self.stream(iter(events))


def _ok(key: Ed25519PublicKey, sig: bytes, data: bytes) -> bool:
    try:
        key.verify(sig, data)
        return True
    except InvalidSignature:
        return False


if __name__ == "__main__":
    host, port = os.environ["LLMSS_RUNTIME_BIND"].rsplit(":", 1)
    ThreadingHTTPServer((host, int(port)), Handler).serve_forever()
