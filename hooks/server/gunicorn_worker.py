"""The hook server's gunicorn worker: gunicorn's threaded worker (gthread) with a deadline for
reading each request and JSON error pages (hooks/server/gunicorn_conf.py selects it).

Threads, so that a slow client waits in a thread of its own instead of holding the whole worker
(a sync worker reads a request in its only thread: two slow clients stopped both workers). The
hooks stay in processes: a worker's threads share one core, and there are WORKERS of them.

On top of gthread:
- a new connection waits in the worker's poller, not in a thread, until it has sent something;
- from connecting, a client has HOOK_REQUEST_READ_SECONDS to deliver its whole request, headers
  and body: then it gets a JSON 408 and is closed, however slowly it trickles bytes; an answer
  it does not take is dropped after HOOK_RESPONSE_SEND_SECONDS;
- connections are closed in the thread pool, not in the worker's main loop (gunicorn's graceful
  close lingers up to 2 s for a client that does not close its side; the main loop accepts);
- the errors gunicorn answers itself (a malformed request line or header: 400, 414, 431, 501; an
  internal error: 500) keep gunicorn's status but are JSON like every other error of the API.
"""
from __future__ import annotations

import errno
import math
import socket
import time
from concurrent.futures import Future
from functools import partial
from selectors import EVENT_READ
from typing import Any

from gunicorn import util
from gunicorn.workers import gthread
from werkzeug.exceptions import RequestTimeout

from .. import constants as C
from . import jsonio

ERROR_DETAIL_CHARS = 200  # gunicorn's message may quote the request line: a bounded excerpt


class RequestReadTimeout(RequestTimeout):
    """The client did not deliver its whole request in time (a 408: werkzeug answers it as one
    when it surfaces while the app reads the body, handle_error when it surfaces in the headers)."""

    description = f"the request was not received within {C.HOOK_REQUEST_READ_SECONDS:g} s of connecting"


class DeadlineSocket:
    """A client socket whose reads stop at a deadline and whose writes stop after a fixed time;
    everything else is the socket's own (gunicorn's parser and response only recv and sendall)."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.raw = sock
        self.deadline = deadline

    def recv(self, size: int) -> bytes:
        if self.deadline == math.inf:
            return self.raw.recv(size)
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise RequestReadTimeout()
        self.raw.settimeout(remaining)
        try:
            return self.raw.recv(size)
        except socket.timeout:
            raise RequestReadTimeout() from None

    def sendall(self, data: bytes) -> None:
        self.raw.settimeout(C.HOOK_RESPONSE_SEND_SECONDS)  # Python bounds the whole sendall by it
        self.raw.sendall(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


class _ErrorPage:
    """Takes the place of the client socket while gunicorn writes its HTML error page, to learn
    the status gunicorn chose (its logging and access log stay gunicorn's)."""

    def __init__(self) -> None:
        self.data = b""

    def gettimeout(self) -> float:
        return 0.0  # non-blocking already: gunicorn writes without switching modes

    def sendall(self, data: bytes) -> None:
        self.data += data

    def status(self) -> tuple[int, str]:
        _, code, reason = self.data.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        return int(code), reason


def json_error(status: int, reason: str, message: str) -> bytes:
    """A whole HTTP response: the API's error body ({"error", "status"}), then the connection closes."""
    body = jsonio.dumps({"error": message, "status": status})
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body


class HookWorker(gthread.ThreadWorker):
    def accept(self, listener: socket.socket) -> None:
        """Like gthread's, except that the new connection waits in the poller until readable."""
        try:
            client, addr = listener.accept()
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                return
            raise
        self.nr_conns += 1
        deadline = time.monotonic() + C.HOOK_REQUEST_READ_SECONDS
        conn = gthread.TConn(self.cfg, client, addr, listener.getsockname())  # non-blocking now
        conn.sock = DeadlineSocket(client, deadline)
        conn.timeout = deadline  # murder_pending closes it then if it never sent a byte
        self.pending_conns.append(conn)  # deadlines in accept order: the deque stays sorted
        self.poller.register(client, EVENT_READ, partial(self.on_pending_socket_readable, conn))

    def handle(self, conn: gthread.TConn) -> Any:
        sock: DeadlineSocket = conn.sock
        if conn.initialized:  # a kept-alive connection's next request gets a deadline of its own
            sock.deadline = time.monotonic() + C.HOOK_REQUEST_READ_SECONDS
        try:
            return super().handle(conn)
        finally:
            sock.deadline = math.inf  # the request is read and answered; closing drains with its own bound

    def finish_request(self, conn: gthread.TConn, fs: Future) -> None:
        if not fs.cancelled() and fs.exception() is None and fs.result() is False:
            # gunicorn would close gracefully here, in the main loop; a pool thread does it instead.
            self.nr_conns -= 1
            self.tpool.submit(conn.close, True)
            return
        super().finish_request(conn, fs)

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        raw = getattr(client, "raw", client)
        if isinstance(exc, RequestReadTimeout):
            self.log.info("Request not received in time from ip=%s", (addr or ("",))[0])
            status, reason, message = 408, "Request Timeout", exc.description
        else:
            page = _ErrorPage()
            super().handle_error(req, page, addr, exc)
            status, reason = page.status()
            detail = str(exc) if status != 500 else ""
            if len(detail) > ERROR_DETAIL_CHARS:
                detail = detail[:ERROR_DETAIL_CHARS] + "..."
            message = f"{reason}: {detail}" if detail else reason
        try:
            util.write_nonblock(raw, json_error(status, reason, message))
        except Exception:  # the client is gone: nothing to tell it
            self.log.debug("Failed to send error message.")
