"""The hook server as deployed (gunicorn + hooks/gunicorn_conf.py) under slow and malformed clients,
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
from typing import Iterator, Optional

import pytest

from tests.loopback import call, free_port, gunicorn, stop_all, wait_loaded  # noqa: F401 - stop_all is a fixture
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
