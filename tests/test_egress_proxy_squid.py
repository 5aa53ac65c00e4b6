"""The proxy backend's generated squid.conf under the real squid (Debian's 5.7 from .tools/squid,
tools/install_tools.py) on loopback.

The configuration is the one the tenant-namespace hook generates from a namespace's Sandboxes
(hooks/egress_proxy.py), changed only through SquidSettings, its documented test override: a free
127.0.0.1 port, temporary run directories, squid's files under .tools/squid, a hosts file that
maps the test's names to 127.0.0.1, and the denied destinations without 127.0.0.0/8 (where the
test's upstream listens). The upstream is a tiny HTTP server on 127.0.0.1; CONNECT tunnels reach
it too (a tunnel is TCP, TLS or not). A listed name passes, on its ports only; an unlisted name,
an apex under a wildcard, a look-alike and any IP literal get 403. A second squid with the
production denied ranges refuses a listed name that resolves to loopback."""
from __future__ import annotations

import atexit
import functools
import http.server
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hooks import egress_proxy as ep
from tests.factory import group, profile, sandbox
from tests.procs import die_with_parent

try:
    from tooling import ROOT, tool
except ImportError:  # if tests/ ever becomes a package
    from tests.tooling import ROOT, tool

NS = "team-a"
NOBODY = 65534  # squid runs unprivileged, as in the proxy pod


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Upstream(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body = f"upstream saw {self.headers.get('Host')}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def upstream() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def namespace_rules(port: int, other_port: int) -> tuple[ep.Allowed, ...]:
    """The allow-list of a namespace whose two sandboxes and one profile list the test's names."""
    first = sandbox("one", NS, spec={"networkAccess": {"egress": [
        {"domain": "pypi.test", "ports": [{"port": port}]},
        {"domain": "*.example.test", "ports": [{"port": port}]},
        {"domain": "10.0.0.1.nip.test", "ports": [{"port": port}]},  # a name, even if it looks numeric
    ]}, "profileRef": {"name": "web"}})
    second = sandbox("two", NS, spec={"networkAccess": {"egress": [
        {"domain": "other-port.test", "ports": [{"port": other_port}]},
        {"cidr": "203.0.113.0/24"},  # not the proxy's
    ]}})
    web = profile("web", NS, networkPolicies=[{"type": "egress", "rules": [{"domain": "from-profile.test", "ports": [{"port": port}]}]}])
    elsewhere = sandbox("three", "team-b", spec={"networkAccess": {"egress": [{"domain": "team-b-only.test", "ports": [{"port": port}]}]}})
    related = group([first, second, elsewhere, web])
    return ep.namespace_allow_list(NS, related)


@dataclass
class Squid:
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    directory: Path

    def stop(self) -> None:
        stop(self.process)
        shutil.rmtree(self.directory, ignore_errors=True)

    def request(self, raw: bytes) -> tuple[int, bytes, socket.socket]:
        conn = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        conn.sendall(raw)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(4096)
            if not chunk:
                break
            head += chunk
        status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
        return status, head, conn

    def get(self, host: str, port: int) -> tuple[int, bytes]:
        """Plain HTTP through the proxy: the status, and the body when it passed."""
        status, head, conn = self.request(
            f"GET http://{host}:{port}/ HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        with conn:
            rest = head.split(b"\r\n\r\n", 1)[1]
            while chunk := conn.recv(4096):
                rest += chunk
        return status, rest

    def connect(self, host: str, port: int) -> tuple[int, bytes]:
        """HTTP CONNECT, then (when the tunnel opens) a request through it: the status and what
        the upstream answered."""
        status, _, conn = self.request(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        with conn:
            if status != 200:
                return status, b""
            conn.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            answer = b""
            while chunk := conn.recv(4096):
                answer += chunk
        return status, answer


def reachable_by_others(path: Path) -> bool:
    """Every directory above `path` lets any user through (o+x): what squid run as nobody needs."""
    return all(os.stat(d).st_mode & stat.S_IXOTH for d in path.resolve().parents)


@functools.lru_cache(maxsize=None)
def squid_home() -> Path:
    """A world-readable directory for squid's files and each run's directory, wherever the checkout
    lives: as root the suite runs squid as nobody, who cannot enter a private checkout (mode 700,
    like root's home: issue 24), and squid.conf cannot name a path with a space. So squid's install
    (.tools/squid) is copied once per session into a fresh directory of the system's temporary
    directory (of /tmp when that one is private or has a space in its path), removed at exit."""
    base = Path(tempfile.gettempdir())
    if not reachable_by_others(base / "x") or any(c.isspace() for c in str(base)):
        base = Path("/tmp")
    home = Path(tempfile.mkdtemp(prefix="llmss-squid-", dir=base))
    atexit.register(shutil.rmtree, home, True)
    home.chmod(0o755)
    installed = Path(tool("squid")).resolve().parent.parent  # .tools/squid (bin/squid is its wrapper)
    shutil.copytree(installed, home / "install", symlinks=True)
    return home


def start_squid(allowed: tuple[ep.Allowed, ...], hosts: list[str], denied: tuple[str, ...]) -> Squid:
    # Not pytest's tmp_path: its parents are private to root, and squid runs as nobody.
    tmp = Path(tempfile.mkdtemp(prefix="run-", dir=squid_home()))
    run = tmp / "run"
    run.mkdir()
    (tmp / "hosts").write_text("".join(f"127.0.0.1 {h}\n" for h in hosts))
    port = free_port()
    settings = ep.SquidSettings(http_port=f"127.0.0.1:{port}", run_dir=str(run), spool_dir=str(run),
                                hosts_file=str(tmp / "hosts"), install_prefix=str(squid_home() / "install"),
                                denied_destinations=denied)
    conf = tmp / "squid.conf"
    conf.write_text(ep.squid_conf(allowed, NS, settings))
    log = tmp / "squid.log"
    log.touch()
    prefix: list[str] = []
    if os.geteuid() == 0:  # squid refuses to run as root without switching users: run it as nobody
        for path in (tmp, run, log):
            os.chown(path, NOBODY, NOBODY)
        prefix = [shutil.which("setpriv") or "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    with log.open("ab") as out:
        process = subprocess.Popen([*prefix, str(squid_home() / "install" / "bin" / "squid"), "-N", "-f", str(conf)], stdout=out, stderr=out,
                                   stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            text = log.read_text()
            shutil.rmtree(tmp, ignore_errors=True)
            raise AssertionError(f"squid exited with {process.returncode}:\n{text}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return Squid(port, process, log, tmp)
        except OSError:
            time.sleep(0.1)
    stop(process)
    text = log.read_text()
    shutil.rmtree(tmp, ignore_errors=True)
    raise AssertionError(f"squid did not listen within 30 s:\n{text}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGINT: squid shuts down at once (SIGTERM waits shutdown_lifetime); by PID, never by name."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


LOOPBACK_ALLOWED = tuple(d for d in ep.DENIED_DESTINATIONS if d != "127.0.0.0/8")
TEST_NAMES = ["pypi.test", "a.example.test", "a.b.example.test", "example.test", "from-profile.test",
              "other-port.test", "other.test", "pypi.test.evil.test", "evilpypi.test", "team-b-only.test",
              "10.0.0.1.nip.test"]


@pytest.fixture(scope="module")
def squid(upstream: int) -> Iterator[tuple[Squid, int]]:
    allowed = namespace_rules(upstream, free_port())
    proxy = start_squid(allowed, TEST_NAMES, LOOPBACK_ALLOWED)
    yield proxy, upstream
    proxy.stop()


def test_the_namespace_allow_list_is_every_sandbox_and_profile_rule_of_the_namespace(upstream: int) -> None:
    allowed = namespace_rules(upstream, 9999)
    assert [a.domain for a in allowed] == ["*.example.test", "10.0.0.1.nip.test", "from-profile.test", "other-port.test", "pypi.test"]
    assert {a.domain: a.ports for a in allowed}["other-port.test"] == (9999,)


@pytest.mark.parametrize("host", ["pypi.test", "PyPI.Test", "a.example.test", "a.b.example.test", "from-profile.test", "10.0.0.1.nip.test"])
def test_listed_names_pass_plain_http_and_connect(squid: tuple[Squid, int], host: str) -> None:
    proxy, port = squid
    status, body = proxy.get(host, port)
    # squid forwards the name lower-cased (names are case-insensitive)
    assert status == 200 and body == f"upstream saw {host.lower()}:{port}".encode(), (status, body)
    status, answer = proxy.connect(host, port)
    assert status == 200 and answer.endswith(f"upstream saw {host}".encode())  # the tunnel carries our bytes as sent, (status, answer)


@pytest.mark.parametrize("host", [
    "other.test",  # on no list
    "example.test",  # the apex under *.example.test
    "pypi.test.evil.test", "evilpypi.test",  # look-alikes
    "team-b-only.test",  # another namespace's rule
    "127.0.0.1", "2130706433", "[::1]", "[::ffff:127.0.0.1]",  # IP literals, however written
])
def test_unlisted_names_and_ip_literals_are_refused(squid: tuple[Squid, int], host: str) -> None:
    proxy, port = squid
    assert proxy.get(host, port)[0] == 403
    assert proxy.connect(host, port)[0] == 403


def test_a_listed_name_passes_on_its_own_ports_only(squid: tuple[Squid, int]) -> None:
    proxy, port = squid
    assert proxy.connect("other-port.test", port)[0] == 403  # listed for another port
    assert proxy.connect("pypi.test", port + 1 if port < 65535 else port - 1)[0] == 403


def test_the_test_override_changes_only_the_documented_lines(upstream: int) -> None:
    allowed = namespace_rules(upstream, 9999)
    production = ep.squid_conf(allowed, NS).splitlines()
    test = ep.squid_conf(allowed, NS, ep.SquidSettings(
        http_port="127.0.0.1:1", run_dir="/r", spool_dir="/r", hosts_file="/h", install_prefix="/p",
        denied_destinations=LOOPBACK_ALLOWED)).splitlines()
    overridden = ("http_port ", "pid_filename ", "coredump_dir ", "hosts_file ", "mime_table ", "icon_directory ",
                  "error_directory ", "unlinkd_program ", "acl llmss_denied_dst ")
    assert [l for l in production if not l.startswith(overridden)] == [l for l in test if not l.startswith(overridden)]


def test_a_listed_name_resolving_to_loopback_is_refused_with_the_production_ranges(upstream: int) -> None:
    allowed = namespace_rules(upstream, 9999)
    proxy = start_squid(allowed, TEST_NAMES, ep.DENIED_DESTINATIONS)
    try:
        assert proxy.get("pypi.test", upstream)[0] == 403
        assert proxy.connect("pypi.test", upstream)[0] == 403
    finally:
        proxy.stop()


def test_no_rules_refuse_everything(upstream: int) -> None:
    proxy = start_squid((), TEST_NAMES, LOOPBACK_ALLOWED)
    try:
        assert proxy.get("pypi.test", upstream)[0] == 403
        assert proxy.connect("pypi.test", upstream)[0] == 403
    finally:
        proxy.stop()
