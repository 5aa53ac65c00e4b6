"""The hook server as deployed (gunicorn + hooks/server/gunicorn_conf.py) under slow and malformed clients,
on 127.0.0.1 with raw sockets, every test bounded: good calls keep being answered within
Metacontroller's webhook timeout while 60 slow connections are held open, and every error the
server itself writes (gunicorn's parser, the body limit, a wrong Content-Type) is JSON."""
from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

from hooks.server.gunicorn_worker import HookWorker
from tests.loopback import call, free_port, gunicorn, stop, stop_all, wait_loaded  # noqa: F401 - stop_all is a fixture
from tests.sandbox_cases import minimal

WEBHOOK_TIMEOUT = 10.0  # Metacontroller's default hook timeout
SLOW_CONNECTIONS = 60
ATTACK_SECONDS = 12.0  # longer than the server's read deadline: the slow clients are cut and come back


def _request_head(length: int) -> bytes:
    return (f"POST /sandbox/sync HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


class SlowClients:
    """Slowloris on loopback: a third of the connections send nothing, a third trickle their
    headers, a third send headers and then trickle the body, one byte per connection every
    0.25 s; a connection the server closes is opened again at once."""

    KINDS = ("silent", "headers", "body")

    def __init__(self, port: int, count: int) -> None:
        self.port, self.count = port, count
        self.socks: list[Optional[socket.socket]] = [None] * count
        self.cuts = [0] * count  # times the server closed each connection
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _open(self, index: int) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        kind = self.KINDS[index % 3]
        if kind == "headers":
            sock.sendall(b"POST /sandbox/sync HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        elif kind == "body":
            sock.sendall(_request_head(1_000_000) + b'{"parent": ')
        sock.setblocking(False)
        self.socks[index] = sock

    def _tick(self, index: int) -> None:
        sock = self.socks[index]
        try:
            assert sock is not None
            try:
                sock.recv(65536)  # an answer (408) or EOF: the server gave up on this connection
                raise ConnectionError
            except BlockingIOError:
                pass  # still open, nothing from the server
            kind = self.KINDS[index % 3]
            if kind != "silent":
                sock.send(b"X" if kind == "headers" else b" ")
            return
        except OSError:
            if sock is not None:
                sock.close()
        self.cuts[index] += 1
        self._open(index)

    def _run(self) -> None:
        while not self.stop.wait(0.25):
            for index in range(self.count):
                self._tick(index)

    def __enter__(self) -> "SlowClients":
        for index in range(self.count):
            self._open(index)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        for sock in self.socks:
            if sock is not None:
                sock.close()


def timed_call(port: int) -> tuple[float, int]:
    start = time.monotonic()
    try:
        code = call(port, timeout=WEBHOOK_TIMEOUT + 1)
    except OSError:  # the client's own timeout: slower than the webhook timeout
        code = 0
    return time.monotonic() - start, code


def test_good_calls_are_answered_within_the_webhook_timeout_under_60_slow_connections(
        tmp_path: Path, stop_all: list) -> None:
    port = free_port()
    proc = gunicorn(tmp_path, port)
    stop_all.append(proc)
    wait_loaded(proc, tmp_path / "gunicorn.log")
    results: list[tuple[float, int]] = []
    with SlowClients(port, SLOW_CONNECTIONS) as slow:
        time.sleep(0.5)  # all of them connected and sending before the first good call
        end = time.monotonic() + ATTACK_SECONDS
        with ThreadPoolExecutor(2) as pool:  # two callers at a time, like Metacontroller's workers
            while time.monotonic() < end and all(code == 200 for _, code in results):
                results += pool.map(timed_call, [port, port])
        cuts = slow.cuts
    slowest = max(duration for duration, _ in results)
    print(f"\n{len(results)} good calls under {SLOW_CONNECTIONS} slow connections: slowest {slowest:.3f} s, "
          f"slow connections cut and reopened {sum(cuts)} times")
    assert [code for _, code in results] == [200] * len(results), results
    assert slowest < WEBHOOK_TIMEOUT, results
    assert len(results) >= 20  # good calls kept flowing during the whole attack
    # The read deadline cut every slow connection, whatever it trickled, and nothing was logged
    # as a server fault.
    assert min(cuts) >= 1, cuts
    log = (tmp_path / "gunicorn.log").read_text()
    assert "Traceback" not in log and "[ERROR]" not in log, log[-3000:]


# ---------------------------------------------------------------------------------------------
# Every error the server writes is JSON: gunicorn's own, the body limit, the Content-Type

LIMIT = 1024 * 1024  # LLMSS_MAX_REQUEST_BYTES of the server below (the smallest the settings allow): a minimal request fits, 2 x LIMIT not


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    tmp_path, port = tmp_path_factory.mktemp("server"), free_port()
    proc = gunicorn(tmp_path, port, {"LLMSS_MAX_REQUEST_BYTES": str(LIMIT)})
    try:
        wait_loaded(proc, tmp_path / "gunicorn.log")
        yield port
    finally:
        stop(proc)


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of a raw HTTP/1.1 answer."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split(" ")[1]), headers, body


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def exchange(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read the answer until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(data)
        return parse(read_all(sock))


def assert_json_error(answer: tuple[int, dict[str, str], bytes], status: int) -> dict:
    code, headers, body = answer
    assert code == status, answer
    assert headers.get("content-type") == "application/json", answer
    error = json.loads(body)
    assert error["status"] == status and isinstance(error["error"], str) and error["error"], error
    return error


def post_raw(body: bytes, content_type: Optional[str] = "application/json", extra: str = "") -> bytes:
    head = "POST /sandbox/sync HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    if content_type is not None:
        head += f"Content-Type: {content_type}\r\n"
    return (head + extra + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def chunked(body: bytes, size: int = 64 * 1024) -> bytes:
    parts = [body[i:i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


GOOD = json.dumps(minimal()).encode()
CHUNKED_HEAD = ("POST /sandbox/sync HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()


@pytest.mark.parametrize("data, status", [
    (b"GARBAGE\r\n\r\n", 400),
    (b"POST /sandbox/sync HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n", 400),
    (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 414),
    (b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(120)) + b"\r\n", 431),
    (b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
    (b"POST /sandbox/sync HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: foo\r\n\r\n", 501),
], ids=["request-line", "header-line", "uri-too-long", "too-many-headers", "header-too-large", "transfer-coding"])
def test_gunicorns_own_errors_are_json(server: int, data: bytes, status: int) -> None:
    assert_json_error(exchange(server, data), status)


@pytest.mark.parametrize("cut", [-10, 40], ids=["body", "headers"])
def test_a_request_not_delivered_in_time_gets_a_json_408(server: int, cut: int) -> None:
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", server), timeout=15) as sock:
        sock.sendall(post_raw(GOOD)[:cut])  # part of the request, then nothing
        answer = read_all(sock)
    assert 4 < time.monotonic() - start < 9, answer  # HOOK_REQUEST_READ_SECONDS from connecting
    assert_json_error(parse(answer), 408)


def test_an_internal_error_of_gunicorns_is_a_json_500() -> None:
    """gunicorn answers 500 itself when something fails outside the app; no detail leaks."""

    class Log:
        def __getattr__(self, name: str) -> Any:
            return lambda *args, **kwargs: None

    worker = HookWorker.__new__(HookWorker)  # handle_error needs only the log (no request parsed)
    worker.log = Log()
    ours, theirs = socket.socketpair()
    with ours, theirs:
        worker.handle_error(None, ours, ("127.0.0.1", 1), RuntimeError("secret detail"))
        ours.close()
        answer = read_all(theirs)
    assert "secret detail" not in assert_json_error(parse(answer), 500)["error"]


def test_chunked_body_over_the_limit_gets_413(server: int) -> None:
    error = assert_json_error(exchange(server, CHUNKED_HEAD + chunked(b" " * (2 * LIMIT))), 413)
    assert f"exceeds {LIMIT} bytes" in error["error"]
    # Exactly at the limit, and under it, chunked bodies are read whole.
    padded = GOOD + b" " * (LIMIT - len(GOOD))
    assert exchange(server, CHUNKED_HEAD + chunked(padded))[0] == 200
    assert exchange(server, CHUNKED_HEAD + chunked(GOOD))[0] == 200


@pytest.mark.parametrize("content_type, status", [
    ("application/json", 200),
    ("application/json; charset=utf-8", 200),
    ("Application/JSON; charset=UTF-8", 200),
    (None, 415),
    ("text/plain", 415),
    ("application/x-www-form-urlencoded", 415),
    ("application/jsonx", 415),
    ("application/json; charset=latin-1", 415),
])
def test_hook_posts_must_be_json(server: int, content_type: Optional[str], status: int) -> None:
    answer = exchange(server, post_raw(GOOD, content_type))
    if status == 200:
        assert answer[0] == 200, answer
    else:
        assert "application/json" in assert_json_error(answer, status)["error"]
