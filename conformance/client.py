"""A small signing HTTP client for the runtime API (conformance tool, tests, benchmark)."""
from __future__ import annotations

import http.client
import json
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional
from urllib.parse import quote, urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from runtime import auth


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error_code(self) -> Optional[str]:
        try:
            return self.json()["error"]["code"]
        except (ValueError, KeyError, TypeError):
            return None


@dataclass
class Client:
    base: str  # http://host:port
    key: Optional[Ed25519PrivateKey]
    pod_uid: str
    timeout: float = 60.0
    _conn: Optional[http.client.HTTPConnection] = field(default=None, repr=False)

    @property
    def hostport(self) -> tuple[str, int]:
        url = urlsplit(self.base)
        return url.hostname or "127.0.0.1", url.port or 80

    def connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            host, port = self.hostport
            self._conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def headers(self, method: str, path: str, body: bytes, sign: bool = True, **override: Any) -> dict[str, str]:
        headers = {"Content-Type": "application/json"} if body else {}
        if sign and self.key is not None:
            headers["Authorization"] = f"{auth.SCHEME} {auth.token(self.key, self.pod_uid, method, path, body, **override)}"
        return headers

    def send(self, method: str, path: str, body: bytes = b"", headers: Optional[dict[str, str]] = None,
             sign: bool = True, **override: Any) -> http.client.HTTPResponse:
        hdrs = self.headers(method, path, body, sign, **override)
        hdrs.update(headers or {})
        for attempt in (0, 1):
            conn = self.connection()
            try:
                conn.request(method, path, body=body, headers=hdrs)
                return conn.getresponse()
            except (http.client.HTTPException, OSError) as exc:
                self.close()
                # a kept-alive connection the server closed: once more, fresh
                if attempt or not isinstance(exc, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)):
                    raise
        raise AssertionError("unreachable")

    def request(self, method: str, path: str, body: bytes = b"", headers: Optional[dict[str, str]] = None,
                sign: bool = True, **override: Any) -> Response:
        resp = self.send(method, path, body, headers, sign, **override)
        data = resp.read()
        if resp.getheader("Connection", "").lower() == "close":
            self.close()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)

    def call(self, method: str, path: str, obj: Any = None, **kw: Any) -> Response:
        return self.request(method, path, json.dumps(obj).encode() if obj is not None else b"", **kw)

    def stream(self, path: str, obj: Any, **kw: Any) -> Iterator[dict[str, Any]]:
        """POST obj and yield each NDJSON line as it arrives; a non-200 answer is yielded as
        {"type": "http_error", "status", "error"}."""
        resp = self.send("POST", path, json.dumps(obj).encode(), **kw)
        if resp.status != 200:
            body = resp.read()
            try:
                err = json.loads(body).get("error")
            except ValueError:
                err = {"code": "not_json", "message": body[:200].decode("utf-8", "replace")}
            yield {"type": "http_error", "status": resp.status, "error": err}
            return
        while True:
            line = resp.readline()
            if not line:
                break
            yield json.loads(line)
        resp.read()

    def exec(self, obj: dict[str, Any]) -> list[dict[str, Any]]:
        return list(self.stream("/v1/exec", obj))

    def file_path(self, path: str, **params: str) -> str:
        query = "&".join([f"path={quote(path, safe='/')}"] + [f"{k}={quote(v)}" for k, v in params.items()])
        return f"/v1/files?{query}"


def joined(events: list[dict[str, Any]], kind: str) -> str:
    return "".join(e["data"] for e in events if e.get("type") == kind)
