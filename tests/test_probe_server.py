"""tests/e2e/probe_server.py, the e2e probe image's server, run here as a process on 127.0.0.1 free
ports (PROBE_BIND, PROBE_PORT, DNS_PORT, PROBE_PORTS) with this interpreter: every endpoint's answer
and JSON shape, the dns and http modes, SIGTERM (exits 0 at once; ignored with
PROBE_IGNORE_SIGTERM=1 until SIGKILL), /exit's code; that it imports only what Debian's
python3-minimal ships (the image has nothing else); and that scripts/build-images parses.

The images themselves are built by scripts/build-images (minutes, the Debian archive), not here."""
from __future__ import annotations

import ast
import http.client
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlencode

import pytest
from hypothesis import given

from tests import strategies
from tests.e2e import probe_server
from tests.procs import die_with_parent

ROOT = Path(__file__).resolve().parent.parent
PROBE = ROOT / "tests" / "e2e" / "probe_server.py"
BUILD_IMAGES = ROOT / "scripts" / "build-images"
START_TIMEOUT = 20.0  # seconds; the server is up in well under 0.5 s on a quiet machine
EXIT_TIMEOUT = 10.0  # for exits that take milliseconds
# What the probe may import: modules of python3.11-minimal and libpython3.11-minimal (Debian
# bookworm; `dpkg-deb -c` of both) and modules built into Debian's interpreter. urllib.request is
# shipped but imports http, which is not; json, http and socketserver are not shipped at all.
MINIMAL_MODULES = {
    "__future__", "abc", "argparse", "ast", "base64", "bisect", "codecs", "collections", "contextlib", "copy",
    "datetime", "enum", "errno", "fcntl", "functools", "hashlib", "heapq", "io", "ipaddress", "itertools",
    "math", "operator", "os", "pathlib", "random", "re", "select", "selectors", "signal", "socket", "ssl",
    "stat", "string", "struct", "subprocess", "sys", "tempfile", "textwrap", "threading", "time", "traceback",
    "types", "typing", "urllib.error", "urllib.parse", "warnings", "weakref",
}
DNS_RECORDS = "example.test=192.0.2.7,api.tenant-a.svc.cluster.local=10.96.0.10"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(log: Path, *args: str, **env: str) -> subprocess.Popen[bytes]:
    """The probe in the given mode, once it listens (it prints "probe: ..." after binding, with its
    SIGTERM disposition already set)."""
    environment = {**os.environ, "PROBE_BIND": "127.0.0.1", "PROBE_IGNORE_SIGTERM": "", **env}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, str(PROBE), *args], env=environment, stdout=out,
                                stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
    deadline = time.monotonic() + START_TIMEOUT
    while b"probe: " not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the probe did not start: {log.read_text()}")
        time.sleep(0.02)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def fetch(port: int, path: str, method: str = "GET") -> tuple[int, str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read().decode()
    finally:
        conn.close()


def call(port: int, endpoint: str, /, **params: Any) -> tuple[int, Any]:
    status, content_type, body = fetch(port, endpoint + ("?" + urlencode(params) if params else ""))
    assert content_type.startswith("application/json"), (endpoint, content_type, body)
    return status, json.loads(body)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("probe-home")


@pytest.fixture(scope="module")
def probe(home: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    proc = start(home / "probe.log", PROBE_PORT=str(port), HOME=str(home))
    yield port, proc
    stop(proc)


@pytest.fixture(scope="module")
def dns_port(home: Path) -> Iterator[int]:
    port = free_port(socket.SOCK_DGRAM)
    proc = start(home / "dns.log", "dns", DNS_PORT=str(port), DNS_RECORDS=DNS_RECORDS)
    yield port
    stop(proc)


def test_health_and_ready_say_ok_as_text(probe: tuple[int, Any]) -> None:
    for path in ("/health", "/ready"):
        status, content_type, body = fetch(probe[0], path)
        assert (status, body) == (200, "ok") and content_type.startswith("text/plain")


def test_whoami(probe: tuple[int, subprocess.Popen[bytes]], home: Path) -> None:
    status, me = call(probe[0], "/whoami")
    assert status == 200
    assert set(me) == {"uid", "gid", "groups", "pid", "CapEff", "NoNewPrivs", "Seccomp", "uid_map", "hostname",
                       "home", "pid1_starttime", "writable"}
    assert (me["uid"], me["gid"], me["pid"], me["hostname"]) == (os.getuid(), os.getgid(), probe[1].pid,
                                                                 socket.gethostname())
    assert len(me["CapEff"]) == 16 and int(me["CapEff"], 16) >= 0
    assert me["NoNewPrivs"] in (0, 1) and me["Seccomp"] in (0, 1, 2)
    assert all(len(line.split()) == 3 for line in me["uid_map"].splitlines()) and me["uid_map"].strip()
    assert isinstance(me["pid1_starttime"], int) and me["pid1_starttime"] >= 0
    assert me["home"] == str(home)
    assert set(me["writable"]) == {"/", "/tmp", "/workspace", "$HOME", "/data"}
    assert all(isinstance(v, bool) for v in me["writable"].values())
    assert me["writable"]["/tmp"] and me["writable"]["$HOME"]
    assert not list(home.glob(".probe-*")), "the write checks leave nothing behind"


def test_connect(probe: tuple[int, Any]) -> None:
    assert call(probe[0], "/connect", host="127.0.0.1", port=probe[0]) == (200, {"ok": True, "error": None})
    status, refused = call(probe[0], "/connect", host="127.0.0.1", port=free_port(), timeout=5)
    assert status == 200 and refused["ok"] is False and "ConnectionRefusedError" in refused["error"]


def test_get(probe: tuple[int, Any]) -> None:
    base = f"http://127.0.0.1:{probe[0]}"
    assert call(probe[0], "/get", url=f"{base}/health") == (200, {"status": 200, "body": "ok", "error": None})
    status, missing = call(probe[0], "/get", url=f"{base}/nothing?x=1")
    assert status == 200 and missing["status"] == 404 and json.loads(missing["body"])["error"]
    status, refused = call(probe[0], "/get", url=f"http://127.0.0.1:{free_port()}/")
    assert status == 200 and refused["status"] is None and "ConnectionRefusedError" in refused["error"]
    assert call(probe[0], "/get", url="https://example.com/")[0] == 400


def test_write_then_read(probe: tuple[int, Any], home: Path) -> None:
    path, data = home / "kept.txt", 'héllo\n"world"\t\x01'
    assert call(probe[0], "/write", path=path, data=data) == (200, {"ok": True, "error": None})
    assert path.read_text() == data
    assert call(probe[0], "/read", path=path) == (200, {"ok": True, "data": data, "error": None})
    status, missing = call(probe[0], "/read", path=home / "absent")
    assert status == 200 and missing["ok"] is False and missing["data"] is None
    assert "FileNotFoundError" in missing["error"]
    status, failed = call(probe[0], "/write", path=home / "no" / "such" / "dir", data="x")
    assert status == 200 and failed["ok"] is False and "FileNotFoundError" in failed["error"]


def test_routes(probe: tuple[int, Any]) -> None:
    status, routes = call(probe[0], "/routes")
    assert status == 200 and set(routes) == {"ipv4", "ipv6"}
    assert routes["ipv4"] == Path("/proc/net/route").read_text()
    if Path("/proc/net/ipv6_route").exists():
        assert isinstance(routes["ipv6"], str)


def resident_mib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) // 1024


def test_alloc_keeps_touched_memory(probe: tuple[int, subprocess.Popen[bytes]]) -> None:
    before = resident_mib(probe[1].pid)
    assert call(probe[0], "/alloc", mb=16) == (200, {"allocated_mb": 16})
    assert call(probe[0], "/alloc", mb=16) == (200, {"allocated_mb": 32})
    assert resident_mib(probe[1].pid) >= before + 30


def test_errors_are_json(probe: tuple[int, Any]) -> None:
    status, answer = call(probe[0], "/nothing")
    assert status == 404 and "/nothing" in answer["error"]
    assert call(probe[0], "/alloc", mb="many")[0] == 400
    assert call(probe[0], "/connect", port=80)[0] == 400  # no host
    status, _, body = fetch(probe[0], "/health", method="POST")
    assert status == 405 and json.loads(body)["error"]


@given(strategies.arbitrary_json())
@strategies.fuzz_settings(100)
def test_to_json_is_json(value: Any) -> None:
    assert json.loads(probe_server.to_json(value)) == value


def test_dns_mode_answers_a_plain_query(dns_port: int) -> None:
    """A query built here, not by the probe's own client."""
    name = b"".join(bytes([len(label)]) + label for label in b"Example.TEST".split(b".")) + b"\0"
    query = struct.pack("!6H", 0x1234, 0x0100, 1, 0, 0, 0) + name + struct.pack("!2H", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(10)
        s.sendto(query, ("127.0.0.1", dns_port))
        reply = s.recv(512)
    qid, flags, qdcount, ancount = struct.unpack("!4H", reply[:8])
    assert (qid, qdcount, ancount) == (0x1234, 1, 1)
    assert flags & 0x8000 and flags & 0x0400 and flags & 0xF == 0  # a response, authoritative, NOERROR
    assert reply[12:12 + len(name) + 4] == query[12:]  # the question, echoed
    assert socket.inet_ntoa(reply[-4:]) == "192.0.2.7"


def test_dns_endpoint_against_dns_mode(probe: tuple[int, Any], dns_port: int) -> None:
    def ask(name: str) -> Any:
        status, answer = call(probe[0], "/dns", name=name, server="127.0.0.1", port=dns_port, timeout=10)
        assert status == 200
        return answer

    assert ask("example.test") == {"answers": ["192.0.2.7"], "rcode": 0, "error": None}
    assert ask("API.tenant-a.svc.cluster.local.") == {"answers": ["10.96.0.10"], "rcode": 0, "error": None}
    assert ask("other.svc.cluster.local") == {"answers": [], "rcode": 3, "error": "NXDOMAIN"}
    status, refused = call(probe[0], "/dns", name="example.test", server="127.0.0.1",
                           port=free_port(socket.SOCK_DGRAM), timeout=10)
    assert status == 200 and refused["rcode"] is None and "ConnectionRefusedError" in refused["error"]


def test_dns_mode_refuses_a_bad_record(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(PROBE), "dns"], capture_output=True, timeout=EXIT_TIMEOUT,
                          env={**os.environ, "DNS_RECORDS": "a.test=not-an-address", "DNS_PORT": "0"})
    assert proc.returncode != 0 and b"inet_pton" in proc.stderr


def test_http_mode_says_hello_on_every_port(tmp_path: Path) -> None:
    ports = [free_port(), free_port()]
    proc = start(tmp_path / "http.log", "http", PROBE_PORTS=",".join(map(str, ports)))
    try:
        for port in ports:
            assert fetch(port, "/any/path")[::2] == (200, f"hello from {socket.gethostname()}\n")
    finally:
        stop(proc)


def test_exit_answers_then_exits_with_the_code(tmp_path: Path) -> None:
    port = free_port()
    proc = start(tmp_path / "probe.log", PROBE_PORT=str(port))
    try:
        assert call(port, "/exit", code=3) == (200, {"exiting": 3})
        assert proc.wait(timeout=EXIT_TIMEOUT) == 3
    finally:
        stop(proc)


@pytest.mark.parametrize("mode", ["probe", "dns", "http"])
def test_sigterm_exits_zero_at_once(tmp_path: Path, mode: str) -> None:
    args = [] if mode == "probe" else [mode]
    proc = start(tmp_path / "probe.log", *args, PROBE_PORT=str(free_port()), DNS_PORT=str(free_port(socket.SOCK_DGRAM)),
                 PROBE_PORTS=str(free_port()))
    try:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=EXIT_TIMEOUT) == 0
    finally:
        stop(proc)


def test_sigterm_ignored_when_asked(tmp_path: Path) -> None:
    port = free_port()
    proc = start(tmp_path / "probe.log", PROBE_PORT=str(port), PROBE_IGNORE_SIGTERM="1")
    try:
        proc.send_signal(signal.SIGTERM)
        time.sleep(1)
        assert proc.poll() is None, "exited on SIGTERM"
        assert fetch(port, "/health")[::2] == (200, "ok")
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=EXIT_TIMEOUT) == -signal.SIGKILL
    finally:
        stop(proc)


def test_imports_only_what_python3_minimal_ships() -> None:
    imported = set()
    for node in ast.walk(ast.parse(PROBE.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    assert imported and imported <= MINIMAL_MODULES, imported - MINIMAL_MODULES


def test_build_scripts_parse_and_explain_themselves(tmp_path: Path) -> None:
    for script in (BUILD_IMAGES, ROOT / "scripts" / "build-runtime-image"):
        assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0, script
    usage = subprocess.run([str(BUILD_IMAGES), "--help"], capture_output=True, text=True, timeout=EXIT_TIMEOUT)
    assert usage.returncode == 0
    for line in ("runtime.tar  ghcr.io/llmsafespace/runtime-python:3.11", "probe.tar    localhost/llmsafespace/e2e-probe:1",
                 "pause.tar    localhost/llmsafespace/pause:1", "ctr -n k8s.io images import OUTPUT_DIR/probe.tar"):
        assert line in usage.stdout
    unknown = subprocess.run([str(BUILD_IMAGES), str(tmp_path / "out"), "nginx"], capture_output=True, text=True,
                             timeout=EXIT_TIMEOUT)
    assert unknown.returncode == 2 and unknown.stderr.startswith("build-images: ") and not (tmp_path / "out").exists()
