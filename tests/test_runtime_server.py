"""The reference runtime (runtime/) as a process on loopback, as uid 1000 when the suite is root,
with only temporary writable paths: execution, sessions, files, signatures, hostile input."""
from __future__ import annotations

import base64
import json
import os
import signal
import socket
import threading
import time
from typing import Any, Iterator

import pytest

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conformance.client import Client, joined
from conformance.launch import Launched
from runtime import auth
from tests.runtime_util import start

LIMITS = {"LLMSS_RUNTIME_MAX_OUTPUT_BYTES": "100000", "LLMSS_RUNTIME_MAX_CONCURRENT": "2",
          "LLMSS_RUNTIME_MAX_FILE_BYTES": "1000000", "LLMSS_RUNTIME_MAX_REQUEST_BYTES": "200000",
          "LLMSS_RUNTIME_HEADER_TIMEOUT": "1", "LLMSS_RUNTIME_IDLE_TIMEOUT": "2"}


@pytest.fixture(scope="module")
def rt() -> Iterator[Launched]:
    launched = start(env=LIMITS)
    yield launched
    launched.stop()


@pytest.fixture
def c(rt: Launched) -> Iterator[Client]:
    client = Client(rt.client.base, rt.client.key, rt.client.pod_uid)
    yield client
    client.close()


def exit_of(events: list[dict[str, Any]]) -> dict[str, Any]:
    assert events[-1]["type"] == "exit", events
    return events[-1]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# --- execution -----------------------------------------------------------------------------------

def test_exec_streams_lines_before_the_command_ends(c: Client) -> None:
    t0 = time.monotonic()
    seen = [(time.monotonic() - t0, e) for e in c.stream("/v1/exec", {"cmd": "echo one; sleep 2; echo two >&2"})]
    first = next(at for at, e in seen if e["type"] == "stdout")
    assert seen[-1][0] - first >= 1.0, seen  # 'one' came a second or more before the end
    events = [e for _, e in seen]
    assert joined(events, "stdout") == "one\n" and joined(events, "stderr") == "two\n"
    assert exit_of(events)["exit_code"] == 0 and events[0]["type"] == "start"


def test_exit_code_stdin_env_and_cwd(c: Client, rt: Launched) -> None:
    events = c.exec({"cmd": ["sh", "-c", "cat; echo $FOO; pwd; exit 3"], "stdin": "in\n", "env": {"FOO": "bar"},
                     "cwd": rt.writable[0]})
    assert joined(events, "stdout") == f"in\nbar\n{rt.writable[0]}\n" and exit_of(events)["exit_code"] == 3
    assert c.exec({"code": "print(6 * 7)"})[1]["data"] == "42\n"
    assert c.call("POST", "/v1/exec", {"cmd": ["true"], "cwd": "/etc"}).error_code == "path_outside_writable"


def test_timeout_kills_grandchildren(c: Client) -> None:
    events = c.exec({"cmd": "sh -c 'sleep 300 & echo $!; wait' & wait", "timeout": 1})
    end = exit_of(events)
    assert end["timed_out"] and end["signal"] == 9
    pid = int(joined(events, "stdout").split()[0])
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid), "the grandchild outlived its execution's timeout"


def test_output_cap_truncates_and_reports(c: Client) -> None:
    events = c.exec({"cmd": ["python3", "-c", "import sys; sys.stdout.write('x' * 1000000)"]})
    assert len(joined(events, "stdout")) == 100000 and exit_of(events)["truncated"] is True
    assert exit_of(events)["exit_code"] == 0


def test_concurrency_cap_answers_429_and_ready_says_busy(rt: Launched) -> None:
    clients = [Client(rt.client.base, rt.client.key, rt.client.pod_uid) for _ in range(3)]
    threads = [threading.Thread(target=cl.exec, args=({"cmd": "sleep 2"},)) for cl in clients[:2]]
    for th in threads:
        th.start()
    deadline = time.monotonic() + 10
    while clients[2].request("GET", "/ready").status != 503 and time.monotonic() < deadline:
        time.sleep(0.05)
    ready = clients[2].request("GET", "/ready")
    refused = clients[2].call("POST", "/v1/exec", {"cmd": ["true"]})
    for th in threads:
        th.join()
    assert ready.status == 503 and ready.json()["status"] == "busy"
    assert refused.status == 429 and refused.error_code == "too_many_executions"
    assert clients[2].request("GET", "/ready").status == 200


def test_kill_call_ends_a_running_execution(c: Client, rt: Launched) -> None:
    other = Client(rt.client.base, rt.client.key, rt.client.pod_uid)
    stream = c.stream("/v1/exec", {"cmd": "sleep 60"})
    start_ev = next(stream)
    assert other.call("POST", f"/v1/exec/{start_ev['id']}/kill").status == 200
    rest = list(stream)
    assert rest[-1]["signal"] == 9 and not rest[-1]["timed_out"]
    assert other.call("POST", f"/v1/exec/{start_ev['id']}/kill").status == 404


# --- sessions ------------------------------------------------------------------------------------

def run(c: Client, sid: str, code: str, **kw: Any) -> list[dict[str, Any]]:
    return list(c.stream(f"/v1/sessions/{sid}/run", {"code": code, **kw}))


def test_session_keeps_state_and_answers_like_a_repl(c: Client) -> None:
    sid = c.call("POST", "/v1/sessions", {"language": "python"}).json()["id"]
    # A stream may deliver one line in several chunks: what counts is the output they make.
    printed = run(c, sid, "x = 40\nprint('set')")
    assert "".join(e["data"] for e in printed if e["type"] == "stdout") == "set\n" and printed[-1]["status"] == "ok"
    events = run(c, sid, "x + 2")
    assert [e["data"] for e in events if e["type"] == "result"] == ["42"] and events[-1]["status"] == "ok"
    err = run(c, sid, "1 / 0")[-1]
    assert err["status"] == "error" and err["error"]["ename"] == "ZeroDivisionError" and "<cell" in err["error"]["traceback"]
    assert sid in [s["id"] for s in c.request("GET", "/v1/sessions").json()["sessions"]]
    assert c.request("DELETE", f"/v1/sessions/{sid}").status == 204
    assert c.call("POST", f"/v1/sessions/{sid}/run", {"code": "x"}).status == 404


def test_session_interrupt_restart_and_crash(c: Client, rt: Launched) -> None:
    sid = c.call("POST", "/v1/sessions", {}).json()["id"]
    run(c, sid, "kept = 1")
    other = Client(rt.client.base, rt.client.key, rt.client.pod_uid)
    result: list[Any] = []
    th = threading.Thread(target=lambda: result.extend(run(other, sid, "import time\nwhile True: time.sleep(0.05)")))
    th.start()
    deadline = time.monotonic() + 10
    while c.request("GET", f"/v1/sessions/{sid}").json()["state"] != "busy" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert c.call("POST", f"/v1/sessions/{sid}/run", {"code": "1"}).error_code == "session_busy"
    assert c.call("POST", f"/v1/sessions/{sid}/interrupt").json()["interrupted"] is True
    th.join(20)
    assert result[-1]["status"] == "interrupted" and result[-1]["error"]["ename"] == "KeyboardInterrupt"
    assert [e["data"] for e in run(c, sid, "kept") if e["type"] == "result"] == ["1"]  # state survives
    crash = run(c, sid, "import os; os._exit(7)")[-1]
    assert crash["status"] == "crashed" and "code 7" in crash["error"]["evalue"]
    assert c.request("GET", f"/v1/sessions/{sid}").json()["state"] == "crashed"
    assert c.call("POST", f"/v1/sessions/{sid}/run", {"code": "1"}).error_code == "session_crashed"
    assert c.call("POST", f"/v1/sessions/{sid}/restart").json()["state"] == "idle"
    fresh = run(c, sid, "'kept' in dir()")
    assert [e["data"] for e in fresh if e["type"] == "result"] == ["False"]
    c.request("DELETE", f"/v1/sessions/{sid}")


def test_session_timeout_interrupts_the_cell(c: Client) -> None:
    sid = c.call("POST", "/v1/sessions", {}).json()["id"]
    done = run(c, sid, "import time\ntime.sleep(60)", timeout=1)[-1]
    assert done["status"] == "timeout"
    assert [e["data"] for e in run(c, sid, "2 + 2") if e["type"] == "result"] == ["4"]
    c.request("DELETE", f"/v1/sessions/{sid}")


# --- files ---------------------------------------------------------------------------------------

def test_files_round_trip_list_and_delete(c: Client, rt: Launched) -> None:
    base = rt.writable[1]
    assert c.request("PUT", c.file_path(f"{base}/d/e/f.bin"), b"\x00\x01data").status == 201
    assert c.request("GET", c.file_path(f"{base}/d/e/f.bin")).body == b"\x00\x01data"
    entries = c.request("GET", f"/v1/files/list?path={base}/d/e").json()["entries"]
    assert [(e["name"], e["type"], e["size"]) for e in entries] == [("f.bin", "file", 6)]
    assert c.request("DELETE", c.file_path(f"{base}/d")).error_code == "directory_not_empty"
    assert c.request("DELETE", c.file_path(f"{base}/d", recursive="true")).status == 204
    assert c.request("GET", c.file_path(f"{base}/d/e/f.bin")).status == 404


@pytest.mark.parametrize("path", ["/etc/passwd", "relative/x", "/x/../etc/passwd", "{base}/../../../etc/passwd",
                                  "{base}/link/passwd", "{base}/a\x00b", "/"])
def test_path_escapes_are_refused(c: Client, rt: Launched, path: str) -> None:
    base = rt.writable[1]
    c.exec({"cmd": ["ln", "-sfn", "/etc", f"{base}/link"]})
    path = path.format(base=base)
    for method, body in (("GET", b""), ("PUT", b"x"), ("DELETE", b"")):
        r = c.request(method, c.file_path(path), body)
        assert r.status == 400 and r.error_code == "path_outside_writable", (method, path, r)
    assert os.path.exists("/etc/passwd")


def test_a_symlink_is_deleted_not_its_target_and_written_files_replace_links(c: Client, rt: Launched) -> None:
    base = rt.writable[1]
    c.exec({"cmd": ["sh", "-c", f"echo keep > {base}/target; ln -sfn {base}/target {base}/alias"]})
    assert c.request("DELETE", c.file_path(f"{base}/alias")).status == 204
    assert open(f"{base}/target").read() == "keep\n"


def test_oversized_bodies_are_refused_413(c: Client, rt: Launched) -> None:
    r = c.request("PUT", c.file_path(f"{rt.writable[1]}/big"), b"x" * 1000001)
    assert r.status == 413 and r.error_code == "file_too_large"
    r = c.call("POST", "/v1/exec", {"cmd": "true", "stdin": "x" * 300000})
    assert r.status == 413 and r.error_code == "body_too_large"


# --- signatures ----------------------------------------------------------------------------------

@pytest.mark.parametrize("override,check", [
    ({"sign": False}, "missing"), ({"aud": "other-pod"}, "audience"), ({"m": "GET"}, "method"),
    ({"p": "/v1/exec?x=1"}, "path"), ({"b": "0" * 64}, "body"), ({"exp": 10**10}, "validity"),
    ({"iat": 1000, "exp": 1030}, "expired"), ({"iat": 10**10 - 30, "exp": 10**10}, "not_yet_valid"),
    ({"v": 2}, "format"), ({"jti": "short"}, "format"),
])
def test_bad_tokens_are_refused_and_name_the_check(c: Client, override: dict[str, Any], check: str) -> None:
    r = c.call("POST", "/v1/exec", {"cmd": ["true"]}, **override)
    assert r.status == 401 and r.error_code == "unauthenticated" and f"check: {check}" in r.json()["error"]["message"]


def test_a_token_signed_by_another_key_is_refused(c: Client) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    forged = Client(c.base, Ed25519PrivateKey.generate(), c.pod_uid)
    assert "check: signature" in forged.call("POST", "/v1/exec", {"cmd": ["true"]}).json()["error"]["message"]


def test_replayed_token_is_refused(c: Client) -> None:
    body = json.dumps({"cmd": ["true"]}).encode()
    header = auth.sign(c.key, c.pod_uid, "POST", "/v1/exec", body)
    first = c.request("POST", "/v1/exec", body, headers={"Authorization": header}, sign=False)
    again = c.request("POST", "/v1/exec", body, headers={"Authorization": header}, sign=False)
    assert first.status == 200 and again.status == 401 and "check: replay" in again.json()["error"]["message"]


def test_nothing_a_sandbox_can_read_signs_a_call(c: Client, rt: Launched) -> None:
    """What code in the sandbox can read of the runtime: its environment (inherited, and the
    server's own through /proc), its command line, the writable paths. Every 32-byte value among
    them (base64, as keys are written) taken as an Ed25519 private seed signs a refused call: the
    runtime holds public keys only."""
    script = ('cat /proc/$PPID/environ /proc/$PPID/cmdline | tr "\\0" "\\n"; env; '
              'find "$HOME" "$TMPDIR" -type f -size -64k -exec cat {} + 2>/dev/null')
    events = c.exec({"cmd": script})
    assert exit_of(events)["exit_code"] == 0
    seen = joined(events, "stdout")
    assert f"LLMSS_POD_UID={rt.client.pod_uid}" in seen  # it did read the server's environment
    words = {w for line in seen.splitlines() for part in line.split("=", 1) for w in part.split(",")}
    seeds = set()
    for word in words:
        for decode in (base64.b64decode, base64.urlsafe_b64decode):
            try:
                raw = decode(word + "=" * (-len(word) % 4))
            except (ValueError, TypeError):
                continue
            if len(raw) == 32:
                seeds.add(raw)
    public = base64.b64decode(auth.public_key_b64(c.key))  # type: ignore[arg-type]
    assert public in seeds, "the gateway's public key, which the runtime reads, was among the candidates"
    for seed in seeds:
        forged = Client(c.base, Ed25519PrivateKey.from_private_bytes(seed), c.pod_uid)
        r = forged.call("POST", "/v1/exec", {"cmd": ["true"]})
        forged.close()
        assert r.status == 401 and "check: signature" in r.json()["error"]["message"], "a value the sandbox can read signs calls"


def test_probes_need_no_signature_and_metrics_count(c: Client) -> None:
    assert c.request("GET", "/health", sign=False).json() == {"status": "ok"}
    metrics = c.request("GET", "/metrics", sign=False).body.decode()
    assert 'llmss_runtime_executions_total{kind="exec",outcome="ok"}' in metrics
    assert 'llmss_runtime_auth_refused_total{check="missing"}' in metrics


def test_no_keys_refuses_every_authenticated_call() -> None:
    launched = start(env={"LLMSS_GATEWAY_PUBLIC_KEYS": ""})
    try:
        r = launched.client.call("POST", "/v1/exec", {"cmd": ["true"]})
        assert r.status == 401 and "check: no_keys" in r.json()["error"]["message"]
        assert launched.client.request("GET", "/ready").status == 200
    finally:
        launched.stop()


# --- hostile input -------------------------------------------------------------------------------

@pytest.mark.parametrize("body,code", [(b"{not json", "malformed_json"), (b"[1]", "malformed_json"),
                                       (b'{"cmd": 5}', "bad_request"), (b'{"cmd": ["a"], "timeout": -1}', "bad_request"),
                                       (b'{"cmd": ["a"], "bogus": 1}', "bad_request"),
                                       (b'{"cmd": ["/nonexistent"]}', "cannot_start")])
def test_bad_input_gets_a_json_error_never_a_trace(c: Client, body: bytes, code: str) -> None:
    r = c.request("POST", "/v1/exec", body)
    assert r.status == 400 and r.error_code == code and b"Traceback" not in r.body


def test_slow_clients_are_cut_off_and_the_server_keeps_serving(rt: Launched, c: Client) -> None:
    host, port = c.hostport
    slow_head = socket.create_connection((host, port))
    slow_head.sendall(b"GET /health HTTP/1.1\r\n")  # and never the rest
    slow_body = socket.create_connection((host, port))
    body = json.dumps({"cmd": ["true"]}).encode()
    head = c.headers("POST", "/v1/exec", body)
    slow_body.sendall(b"POST /v1/exec HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nAuthorization: "
                      + head["Authorization"].encode() + b"\r\n\r\n{")
    for sock in (slow_head, slow_body):
        sock.settimeout(20)
        assert sock.recv(65536) in (b"",) or True  # the server closes: recv returns what is left, then b""
        deadline = time.monotonic() + 20
        while sock.recv(65536) and time.monotonic() < deadline:
            pass
        sock.close()
    assert c.request("GET", "/health").status == 200


def test_unknown_methods_and_routes_get_json(c: Client) -> None:
    assert c.request("GET", "/v1/nothing").error_code == "not_found"
    r = c.request("PATCH", "/v1/exec", sign=False)
    assert r.status == 501 and r.json()["error"]["code"]


# --- the process ---------------------------------------------------------------------------------

def test_sigterm_exits_zero_and_kills_running_executions() -> None:
    launched = start()
    try:
        stream = launched.client.stream("/v1/exec", {"cmd": "sleep 300"})
        pid = next(stream)["pid"]
        launched.proc.send_signal(signal.SIGTERM)
        assert launched.proc.wait(30) == 0
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(pid)
    finally:
        launched.stop()


def test_refuses_to_run_as_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to try")
    from conformance.launch import launch
    from tests.runtime_util import interpreter, source_path
    launched = launch([interpreter(), "-m", "runtime"], uid=0, env={"PYTHONPATH": source_path()}, wait=10)
    try:
        assert launched.proc.wait(30) == 2
        assert "refusing to run as root" in open(launched.log).read()
    finally:
        launched.stop()
