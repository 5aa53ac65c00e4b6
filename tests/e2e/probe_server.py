#!/usr/bin/env python3
"""The e2e suite's probe: what a test pod runs on a real node to report the sandbox as seen from
inside, and to act as a workload (connect out, resolve, fill its memory, exit, ignore SIGTERM).

The entrypoint of localhost/llmsafespace/e2e-probe:1 (scripts/build-images), whose Python is
Debian's python3-minimal: only modules that package ships are imported (no json, http,
socketserver, urllib.request; tests/test_probe_server.py checks), so HTTP, JSON and DNS are by hand.

  probe_server.py       HTTP on $PROBE_PORT (8080), one request per connection, JSON unless said:
    /health, /ready                     200 "ok" (text)
    /whoami                             uid, gid, CapEff/NoNewPrivs/Seccomp, uid_map, hostname, pid 1's
                                        start time, which of /, /tmp, /workspace, $HOME, /data are writable
    /connect?host=&port=[&timeout=3]    TCP connect: {ok, error}
    /dns?name=[&server=&port=53&timeout=3]  A query (default server: resolv.conf's): {answers, rcode, error}
    /get?url=http://...[&timeout=5]     HTTP GET: {status, body, error}
    /write?path=&data=, /read?path=     a file: {ok, error}, {ok, data, error}
    /routes                             /proc/net/route and /proc/net/ipv6_route as they are
    /alloc?mb=N                         allocate, touch and keep N more MiB (to be OOM killed)
    /exit?code=N                        answer, then exit with code N
  probe_server.py dns   authoritative DNS on UDP $DNS_PORT (53): the A records of $DNS_RECORDS
                        ("name=ip,name2=ip2", svc.cluster.local names too), NXDOMAIN for other names
  probe_server.py http  "hello from <hostname>" on each port of $PROBE_PORTS (80,8443): the
                        stand-in internet host

$PROBE_BIND is the listen address (default: all, IPv6 and IPv4). SIGTERM exits 0 at once unless
PROBE_IGNORE_SIGTERM=1; then only SIGKILL ends it (as when a grace period runs out).
"""
from __future__ import annotations

import os
import re
import signal
import socket
import struct
import sys
import threading
from types import FrameType
from typing import Callable, Dict, List, Optional, Tuple, Union
from urllib.parse import parse_qs, urlsplit

Json = Union[None, bool, int, float, str, List["Json"], Dict[str, "Json"]]
Query = Dict[str, str]
Handler = Callable[[str, Query], Tuple[int, Json]]  # path, query -> status, answer (a str is sent as text)
HELD: List[bytes] = []  # /alloc's memory, kept until the process ends
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error"}
ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t"}
RCODES = {1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


def to_json(v: Json) -> str:
    """JSON text of what the endpoints return (the json module is not in python3-minimal)."""
    if v is None or isinstance(v, bool):
        return "null" if v is None else ("true" if v else "false")
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):  # quote, backslash and control characters escaped, the rest as UTF-8
        return '"' + re.sub(r'["\\\x00-\x1f\x7f]', lambda m: ESCAPES.get(m[0], "\\u%04x" % ord(m[0])), v) + '"'
    if isinstance(v, list):
        return "[" + ",".join(to_json(x) for x in v) + "]"
    return "{" + ",".join(to_json(str(k)) + ":" + to_json(x) for k, x in v.items()) + "}"


def err(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def read_or_none(path: str) -> Optional[str]:
    try:
        return read(path)
    except OSError:
        return None


def listen(kind: int, port: int) -> socket.socket:
    """A TCP (listening) or UDP socket on $PROBE_BIND:port; when unset, on "::" taking IPv4 too, or
    on 0.0.0.0 where the pod has no IPv6."""
    host = os.environ.get("PROBE_BIND", "")
    for family, addr in [(socket.AF_INET6 if ":" in host else socket.AF_INET, host)] if host else \
            [(socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")]:
        s = socket.socket(family, kind)
        try:
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if addr == "::":
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.bind((addr, port))
            if kind == socket.SOCK_STREAM:
                s.listen(64)
            return s
        except OSError:
            s.close()
            if not host and addr == "::":
                continue  # no IPv6 here: IPv4 only
            raise
    raise OSError(f"cannot listen on port {port}")


# --- HTTP server --------------------------------------------------------------------------------
def serve_http(sock: socket.socket, handler: Handler) -> None:
    """Accept forever, a thread per connection."""
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=answer, args=(conn, handler), daemon=True).start()


def answer(conn: socket.socket, handler: Handler) -> None:
    exit_code: Optional[int] = None
    with conn:
        conn.settimeout(30)
        try:
            data = b""
            while b"\r\n\r\n" not in data and len(data) < 65536:
                chunk = conn.recv(4096)
                data += chunk
                if not chunk:
                    break
            method, target = data.split(b"\r\n", 1)[0].decode("latin-1").split()[:2]
        except (OSError, ValueError):
            return  # not an HTTP request (a TCP probe, a closed connection)
        url = urlsplit(target)
        result: Json
        try:
            if method not in ("GET", "HEAD"):
                status, result = 405, {"error": f"{method} not allowed"}
            else:
                status, result = handler(url.path, {k: v[-1] for k, v in parse_qs(url.query).items()})
        except SystemExit as e:  # /exit: answer first
            exit_code = int(e.code or 0)
            status, result = 200, {"exiting": exit_code}
        except (KeyError, ValueError) as e:  # a missing or malformed parameter
            status, result = 400, {"error": err(e)}
        except Exception as e:  # noqa: BLE001 - any failure is the caller's answer
            status, result = 500, {"error": err(e)}
        body = (result if isinstance(result, str) else to_json(result)).encode()
        kind = "text/plain" if isinstance(result, str) else "application/json"
        head = (f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\nContent-Type: {kind}; charset=utf-8\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        try:
            conn.sendall(head + (b"" if method == "HEAD" else body))
        except OSError:
            pass
    print(f"{method} {target} {status}", flush=True)
    if exit_code is not None:
        os._exit(exit_code)


# --- the probe's endpoints ----------------------------------------------------------------------
def can_write(directory: Optional[str]) -> bool:
    path = os.path.join(directory or "/nonexistent", f".probe-{os.getpid()}-{threading.get_ident()}")
    try:
        with open(path, "x"):
            pass
        os.unlink(path)
        return True
    except OSError:
        return False


def whoami(q: Query) -> Json:
    status = dict(line.split(":\t", 1) for line in read("/proc/self/status").splitlines() if ":\t" in line)
    stat = read_or_none("/proc/1/stat")  # field 22 is starttime; fields 3 on follow "(comm)"
    home = os.environ.get("HOME")
    return {
        "uid": os.getuid(), "gid": os.getgid(), "groups": list(os.getgroups()), "pid": os.getpid(),
        "CapEff": status.get("CapEff"), "NoNewPrivs": int(status["NoNewPrivs"]) if "NoNewPrivs" in status else None,
        "Seccomp": int(status["Seccomp"]) if "Seccomp" in status else None,
        "uid_map": read_or_none("/proc/self/uid_map"), "hostname": socket.gethostname(), "home": home,
        "pid1_starttime": int(stat.rsplit(")", 1)[1].split()[19]) if stat else None,
        "writable": {name: can_write(d) for name, d in
                     [("/", "/"), ("/tmp", "/tmp"), ("/workspace", "/workspace"), ("$HOME", home), ("/data", "/data")]},
    }


def connect(q: Query) -> Json:
    try:
        socket.create_connection((q["host"], int(q["port"])), timeout=float(q.get("timeout", "3"))).close()
        return {"ok": True, "error": None}
    except OSError as e:
        return {"ok": False, "error": err(e)}


def skip_name(msg: bytes, off: int) -> int:
    """The offset after the (possibly compressed) DNS name at `off`."""
    while msg[off] and msg[off] < 0xC0:
        off += msg[off] + 1
    return off + (2 if msg[off] else 1)


def nameserver() -> str:
    for fields in (line.split() for line in read("/etc/resolv.conf").splitlines()):
        if len(fields) > 1 and fields[0] == "nameserver":
            return fields[1]
    raise ValueError("no server given and no nameserver in /etc/resolv.conf")


def dns(q: Query) -> Json:
    server = q.get("server") or nameserver()
    name = b"".join(bytes([len(label)]) + label for label in q["name"].rstrip(".").encode("ascii").split(b"."))
    query = struct.pack("!6H", int.from_bytes(os.urandom(2), "big"), 0x0100, 1, 0, 0, 0) + name + b"\0" \
        + struct.pack("!2H", 1, 1)  # recursion desired; one question: A, class IN
    try:
        with socket.socket(socket.AF_INET6 if ":" in server else socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(float(q.get("timeout", "3")))
            s.connect((server, int(q.get("port", "53"))))  # connected: an ICMP refusal is an error
            s.send(query)
            msg = b""
            while len(msg) < 12 or msg[:2] != query[:2]:  # skip stray datagrams
                msg = s.recv(4096)
    except OSError as e:
        return {"answers": [], "rcode": None, "error": err(e)}
    _, flags, qdcount, ancount, _, _ = struct.unpack("!6H", msg[:12])
    off, answers = 12, []  # type: int, List[Json]
    for _ in range(qdcount):
        off = skip_name(msg, off) + 4
    for _ in range(ancount):
        off = skip_name(msg, off)
        rtype, _, _, rdlength = struct.unpack("!HHIH", msg[off:off + 10])
        if rtype == 1 and rdlength == 4:
            answers.append(socket.inet_ntoa(msg[off + 10:off + 14]))
        off += 10 + rdlength
    rcode = flags & 0xF
    return {"answers": answers, "rcode": rcode, "error": RCODES.get(rcode, f"rcode {rcode}") if rcode else None}


def get(q: Query) -> Json:
    url = urlsplit(q["url"])
    if url.scheme != "http" or not url.hostname:
        raise ValueError("only http://host[:port]/path URLs")
    target = (url.path or "/") + (f"?{url.query}" if url.query else "")
    try:
        with socket.create_connection((url.hostname, url.port or 80), timeout=float(q.get("timeout", "5"))) as s:
            s.sendall(f"GET {target} HTTP/1.0\r\nHost: {url.netloc}\r\nConnection: close\r\n\r\n".encode())
            data, chunk = b"", b"-"
            while chunk and len(data) < 1 << 20:
                chunk = s.recv(65536)
                data += chunk
    except OSError as e:
        return {"status": None, "body": None, "error": err(e)}
    head, _, body = data.partition(b"\r\n\r\n")
    fields = head.split(b" ", 2)
    if len(fields) < 2 or not fields[0].startswith(b"HTTP/") or not fields[1].isdigit():
        return {"status": None, "body": None, "error": "not an HTTP answer"}
    return {"status": int(fields[1]), "body": body.decode("utf-8", "replace"), "error": None}


def write(q: Query) -> Json:
    try:
        with open(q["path"], "w", encoding="utf-8") as f:
            f.write(q.get("data", ""))
            f.flush()
            os.fsync(f.fileno())  # on the volume before we answer
        return {"ok": True, "error": None}
    except OSError as e:
        return {"ok": False, "error": err(e)}


def read_file(q: Query) -> Json:
    try:
        return {"ok": True, "data": read(q["path"]), "error": None}
    except OSError as e:
        return {"ok": False, "data": None, "error": err(e)}


def alloc(q: Query) -> Json:
    HELD.append(b"\x01" * (int(q["mb"]) << 20))  # filled with a non-zero byte: every page is resident
    return {"allocated_mb": sum(len(b) for b in HELD) >> 20}


def exit_(q: Query) -> Json:
    raise SystemExit(int(q.get("code", "0")))  # answer() sends the answer, then exits


ROUTES: Dict[str, Callable[[Query], Json]] = {
    "/health": lambda q: "ok", "/ready": lambda q: "ok", "/whoami": whoami, "/connect": connect, "/dns": dns,
    "/get": get, "/write": write, "/read": read_file, "/alloc": alloc, "/exit": exit_,
    "/routes": lambda q: {"ipv4": read_or_none("/proc/net/route"), "ipv6": read_or_none("/proc/net/ipv6_route")},
}


def probe(path: str, q: Query) -> Tuple[int, Json]:
    route = ROUTES.get(path)
    return (200, route(q)) if route else (404, {"error": f"no endpoint {path}"})


# --- DNS server ---------------------------------------------------------------------------------
def dns_reply(msg: bytes, records: Dict[str, str]) -> bytes:
    """The authoritative answer to a one-question query; IndexError, struct.error or
    UnicodeDecodeError for anything else."""
    qid, flags, qdcount = struct.unpack("!3H", msg[:6])
    if flags & 0x8000 or qdcount != 1:
        raise IndexError("not a query")
    labels, off = [], 12  # type: List[str], int
    while msg[off]:  # a query's name is not compressed
        labels.append(msg[off + 1:off + 1 + msg[off]].decode("ascii").lower())
        off += msg[off] + 1
    qtype, _ = struct.unpack("!2H", msg[off + 1:off + 5])
    ip = records.get(".".join(labels))
    ans = struct.pack("!HHHIH", 0xC00C, 1, 1, 5, 4) + socket.inet_aton(ip) if ip and qtype in (1, 255) else b""
    reply_flags = 0x8400 | (flags & 0x0100) | (0 if ip else 3)  # response, authoritative, RD echoed; NXDOMAIN
    print(f"dns {'.'.join(labels)} type {qtype}: {ip or 'NXDOMAIN'}", flush=True)
    return struct.pack("!6H", qid, reply_flags, 1, 1 if ans else 0, 0, 0) + msg[12:off + 5] + ans


def parse_records(spec: str) -> Dict[str, str]:
    records: Dict[str, str] = {}
    for name, _, ip in (item.partition("=") for item in spec.split(",") if item.strip()):
        socket.inet_pton(socket.AF_INET, ip.strip())  # a bad address fails at start, not per query
        records[name.strip().rstrip(".").lower()] = ip.strip()
    return records


def serve_dns(sock: socket.socket, records: Dict[str, str]) -> None:
    while True:
        msg, peer = sock.recvfrom(4096)
        try:
            sock.sendto(dns_reply(msg, records), peer)
        except (IndexError, struct.error, UnicodeDecodeError, OSError):
            pass  # not a query we answer, or the client is gone


def exit_now(signum: int, frame: Optional[FrameType]) -> None:
    sys.stdout.flush()
    os._exit(0)


def main(argv: List[str]) -> None:
    ignore = os.environ.get("PROBE_IGNORE_SIGTERM") == "1"
    signal.signal(signal.SIGTERM, signal.SIG_IGN if ignore else exit_now)  # as pid 1, no handler = ignored
    mode = argv[1] if len(argv) > 1 else "probe"
    if mode == "probe":
        sock = listen(socket.SOCK_STREAM, int(os.environ.get("PROBE_PORT", "8080")))
        print(f"probe: HTTP on {sock.getsockname()[:2]}, ignoring SIGTERM: {ignore}", flush=True)
        serve_http(sock, probe)
    elif mode == "dns":
        records = parse_records(os.environ.get("DNS_RECORDS", ""))
        sock = listen(socket.SOCK_DGRAM, int(os.environ.get("DNS_PORT", "53")))
        print(f"probe: DNS on {sock.getsockname()[:2]}, {len(records)} records", flush=True)
        serve_dns(sock, records)
    elif mode == "http":
        hello = f"hello from {socket.gethostname()}\n"
        ports = [int(p) for p in os.environ.get("PROBE_PORTS", "80,8443").split(",") if p.strip()]
        for s in [listen(socket.SOCK_STREAM, p) for p in ports]:  # every port bound before any is served
            threading.Thread(target=serve_http, args=(s, lambda path, q: (200, hello)), daemon=True).start()
        print(f"probe: hello on ports {ports}", flush=True)
        while True:
            signal.pause()
    else:
        sys.exit(f"usage: {argv[0]} [dns|http]")


if __name__ == "__main__":
    main(sys.argv)
