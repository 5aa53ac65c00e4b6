"""The gateway against a fake API server (tests/gateway_support.py) and a runtime process, all on 127.0.0.1."""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from kubernetes import client as k8s_client

from gateway import signing
from gateway.app import create_app
from gateway.kube import Kube
from gateway.sandboxes import Sandboxes
from conformance.launch import Launched
from tests.gateway_support import GATEWAY_SA_TOKEN, FakeApiServer, Grant, start_runtime, stop

NS, OTHER_NS = "team-a", "team-b"
ALICE, BOB, EXPIRED = "alice-token", "bob-token", "expired-token"


@pytest.fixture()
def key_file(tmp_path: Path) -> Path:
    pem, _ = signing.generate()
    path = tmp_path / "key.pem"
    path.write_bytes(pem)
    return path


@pytest.fixture()
def api() -> Iterator[FakeApiServer]:
    server = FakeApiServer(users={ALICE: {"username": "alice", "uid": "1", "groups": ["dev"]},
                                  BOB: {"username": "bob", "uid": "2", "groups": ["dev"]},
                                  EXPIRED: {"error": "token has expired"}},
                           grants=[Grant("alice", NS, "sandboxes", "exec", ("create",)),
                                   Grant("alice", NS, "sandboxes", "files", ("get", "create", "delete")),
                                   Grant("alice", NS, "sandboxes", "", ("patch",)),
                                   Grant("bob", OTHER_NS, "sandboxes", "exec", ("create",))])
    with server:
        yield server


@pytest.fixture()
def launched(api: FakeApiServer, key_file: Path) -> Iterator[Launched]:
    """The real runtime serving sandbox team-a/sb: it trusts key_file and answers to sb's pod UID."""
    api.put_sandbox(NS, "sb")
    rt = start_runtime(signing.public_key_b64(signing.load_private_key(key_file)), api.pod_uid(NS, "sb"))
    try:
        yield rt
    finally:
        rt.stop()


@pytest.fixture()
def runtime(launched: Launched) -> int:
    return int(launched.client.base.rsplit(":", 1)[1])


def make_app(api: FakeApiServer, key_file: Path, runtime_port: int = 1, **extra: str) -> Any:
    configuration = k8s_client.Configuration()
    configuration.host = api.url
    configuration.api_key = {"authorization": GATEWAY_SA_TOKEN}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    env = {"LLMSS_GATEWAY_SIGNING_KEY_FILE": str(key_file), "LLMSS_GATEWAY_RUNTIME_PORT": str(runtime_port), **extra}
    return create_app(env, kube=Kube(configuration)).test_client()


def call(client: Any, token: str | None, ns: str = NS, name: str = "sb", op: str = "exec",
         body: Any = None, method: str = "POST", **kw: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.open(f"/v1/namespaces/{ns}/sandboxes/{name}/{op}", method=method, headers=headers,
                       data=json.dumps(body if body is not None else {"cmd": ["echo", "hi"]}), **kw)


@pytest.mark.parametrize("token,ns,status,code", [
    (ALICE, NS, 200, None),
    (None, NS, 401, "unauthenticated"),
    ("unknown-token", NS, 401, "unauthenticated"),
    (EXPIRED, NS, 401, "unauthenticated"),
    (BOB, NS, 403, "forbidden"),          # bob's rights are in another namespace
    (ALICE, OTHER_NS, 403, "forbidden"),  # alice has none there
], ids=["allowed", "no-token", "unknown-token", "expired-token", "other-namespace-token", "forbidden-namespace"])
def test_authn_authz_table(api: FakeApiServer, key_file: Path, runtime: int, token: str | None, ns: str,
                           status: int, code: str | None) -> None:
    response = call(make_app(api, key_file, runtime), token, ns=ns)
    assert response.status_code == status, response.get_data(as_text=True)
    if code:
        assert response.get_json()["error"]["code"] == code
    else:
        lines = [json.loads(line) for line in response.get_data(as_text=True).splitlines()]
        assert lines[-1]["type"] == "exit" and lines[-1]["exit_code"] == 0
        assert any(e["type"] == "stdout" and "hi" in e["data"] for e in lines)
    # the gateway makes every API call as itself, never with the caller's token (none at all without one)
    assert {bearer for _, _, bearer, _ in api.calls} <= {GATEWAY_SA_TOKEN}
    assert bool(api.calls) == (token is not None)


def test_decisions_are_cached_by_token_and_never_logged(api: FakeApiServer, key_file: Path, runtime: int,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    client = make_app(api, key_file, runtime)
    for _ in range(3):
        assert call(client, ALICE).status_code == 200
    assert api.reviews("tokenreviews") == 1 and api.reviews("subjectaccessreviews") == 1
    assert call(client, BOB).status_code == 403
    assert api.reviews("tokenreviews") == 2
    logs = capsys.readouterr().err
    assert '"event": "gateway_call"' in logs or '"event":"gateway_call"' in logs
    assert ALICE not in logs and BOB not in logs and "echo" not in logs


def test_files_need_the_files_subresource(api: FakeApiServer, key_file: Path, runtime: int, launched: Launched) -> None:
    client = make_app(api, key_file, runtime)
    path = launched.writable[1] + "/a.txt"
    put = client.put(f"/v1/namespaces/{NS}/sandboxes/sb/files?path={path}", data=b"hello",
                     headers={"Authorization": f"Bearer {ALICE}"})
    assert put.status_code == 201, put.get_data(as_text=True)
    got = client.get(f"/v1/namespaces/{NS}/sandboxes/sb/files?path={path}", headers={"Authorization": f"Bearer {ALICE}"})
    assert got.data == b"hello"
    api.grants.append(Grant("bob", NS, "sandboxes", "exec", ("create",)))  # exec, but not files
    denied = client.get(f"/v1/namespaces/{NS}/sandboxes/sb/files?path={path}", headers={"Authorization": f"Bearer {BOB}"})
    assert denied.status_code == 403 and "sandboxes/files" in denied.get_json()["error"]["message"]


def test_errors_carry_the_sandboxs_reason(api: FakeApiServer, key_file: Path) -> None:
    client = make_app(api, key_file)
    missing = call(client, ALICE, name="nope")
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "sandbox_not_found"
    api.put_sandbox(NS, "young", phase="Creating", ready=False, reason="PodPending", message="waiting for the node")
    young = call(client, ALICE, name="young").get_json()["error"]
    assert young["code"] == "sandbox_not_ready" and young["sandbox"]["reason"] == "PodPending"
    api.put_sandbox(NS, "down", pod_ip="127.0.0.1")
    down = call(client, ALICE, name="down")  # runtime port 1: nothing listens
    assert down.status_code == 502 and down.get_json()["error"]["code"] == "runtime_unreachable"


def test_a_signature_for_another_pod_is_refused_by_the_runtime(api: FakeApiServer, key_file: Path, runtime: int) -> None:
    api.put_sandbox(NS, "other")  # its pod has another UID; the runtime listening is sb's
    response = call(make_app(api, key_file, runtime), ALICE, name="other")
    assert response.status_code == 502 and response.get_json()["error"]["code"] == "runtime_rejected_gateway"


def test_activity_is_written_at_most_once_per_interval(api: FakeApiServer, key_file: Path, runtime: int) -> None:
    client = make_app(api, key_file, runtime, LLMSS_GATEWAY_ACTIVITY_INTERVAL_SECONDS="3600")
    for _ in range(5):
        assert call(client, ALICE).status_code == 200
    writes = [p for p in api.patches("sb") if "llmsafespace.dev/last-activity" in (p.get("metadata") or {}).get("annotations", {})]
    assert len(writes) == 1
    value = writes[0]["metadata"]["annotations"]["llmsafespace.dev/last-activity"]
    assert time.strptime(value, "%Y-%m-%dT%H:%M:%SZ")
    # a second gateway process sees the annotation and writes nothing either
    assert call(make_app(api, key_file, runtime, LLMSS_GATEWAY_ACTIVITY_INTERVAL_SECONDS="3600"), ALICE).status_code == 200
    assert len(api.patches("sb")) == 1


def test_suspended_sandbox_is_resumed_and_awaited(api: FakeApiServer, key_file: Path, runtime: int) -> None:
    client = make_app(api, key_file, runtime)
    api.set_state(NS, "sb", phase="Suspended", ready=False, reason="Suspended", suspended="IdleTimeout")
    now = call(client, ALICE).get_json()["error"]
    assert now["code"] == "sandbox_suspended" and now["sandbox"]["reason"] == "IdleTimeout"
    patch = api.patches("sb")[-1]
    assert patch["spec"] == {"operatingMode": "Running"} and "llmsafespace.dev/last-activity" in patch["metadata"]["annotations"]

    import threading
    threading.Timer(0.5, lambda: api.set_state(NS, "sb", phase="Running", ready=True)).start()
    waited = call(client, ALICE, query_string={"wait": "true"})
    assert waited.status_code == 200 and '"exit"' in waited.get_data(as_text=True)


def test_streaming_through_gunicorn_delivers_lines_before_the_command_ends(api: FakeApiServer, key_file: Path,
                                                                           runtime: int, tmp_path: Path) -> None:
    import os
    import sys
    import urllib3
    from tests.gateway_support import ROOT, free_port, wait_http

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({"apiVersion": "v1", "kind": "Config", "current-context": "c",
                                      "clusters": [{"name": "c", "cluster": {"server": api.url}}],
                                      "users": [{"name": "u", "user": {"token": GATEWAY_SA_TOKEN}}],
                                      "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    port = free_port()
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "LLMSS_GATEWAY_SIGNING_KEY_FILE": str(key_file),
           "LLMSS_GATEWAY_RUNTIME_PORT": str(runtime), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    (tmp_path / "metrics").mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "--config", "gateway/gunicorn_conf.py", "--bind",
                             f"127.0.0.1:{port}", "--workers", "1", "gateway.wsgi:app"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        code = "import time\nprint('first', flush=True)\ntime.sleep(3)\nprint('second', flush=True)"
        response = urllib3.PoolManager().request(
            "POST", f"http://127.0.0.1:{port}/v1/namespaces/{NS}/sandboxes/sb/exec", body=json.dumps({"cmd": ["python3", "-c", code]}),
            headers={"Authorization": f"Bearer {ALICE}", "Content-Type": "application/json"}, preload_content=False)
        assert response.status == 200
        start, seen, buffer = time.monotonic(), {}, b""
        for chunk in response.read_chunked():
            buffer += chunk
            for line in buffer.split(b"\n")[:-1]:
                event = json.loads(line)
                if event["type"] == "stdout":
                    seen.setdefault(event["data"].strip(), time.monotonic() - start)
            buffer = buffer.split(b"\n")[-1]
        assert set(seen) >= {"first", "second"}
        assert seen["second"] - seen["first"] >= 2.0  # the first line came while the command still ran
        metrics = urllib3.PoolManager().request("GET", f"http://127.0.0.1:{port}/metrics").data.decode()
        assert 'llmsafespace_gateway_requests_total{code="",operation="exec",status="200"}' in metrics
    finally:
        stop(proc)


def kube_of(api: FakeApiServer) -> Kube:
    configuration = k8s_client.Configuration()
    configuration.host = api.url
    configuration.api_key = {"authorization": GATEWAY_SA_TOKEN}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    return Kube(configuration)


def activity_writes(api: FakeApiServer, name: str) -> list[str]:
    return [p["metadata"]["annotations"]["llmsafespace.dev/last-activity"] for p in api.patches(name)
            if "llmsafespace.dev/last-activity" in ((p.get("metadata") or {}).get("annotations") or {})]


def test_activity_is_written_again_once_the_interval_has_passed(api: FakeApiServer) -> None:
    now = [1_800_000_000.0]
    sandboxes = Sandboxes(kube_of(api), 60, clock=lambda: now[0])
    api.put_sandbox(NS, "sb")
    for step in (0, 10, 59):  # within one interval: one write
        now[0] = 1_800_000_000.0 + step
        sandboxes.record_activity(sandboxes.get(NS, "sb"))
    assert len(activity_writes(api, "sb")) == 1
    now[0] += 2  # 61 s after the first write
    sandboxes.record_activity(sandboxes.get(NS, "sb"))
    assert activity_writes(api, "sb") == ["2027-01-15T08:00:00Z", "2027-01-15T08:01:01Z"]


def test_activity_survives_a_concurrent_status_update_but_not_a_second_writer(api: FakeApiServer) -> None:
    now = [1_800_000_000.0]
    api.put_sandbox(NS, "sb")
    stale = Sandboxes(kube_of(api), 60, clock=lambda: now[0]).get(NS, "sb")
    api.set_state(NS, "sb", phase="Running", ready=True, message="the controller wrote status")  # new resourceVersion
    Sandboxes(kube_of(api), 60, clock=lambda: now[0]).record_activity(stale)
    stored = api.sandboxes[(NS, "sb")]["metadata"]["annotations"]
    assert stored["llmsafespace.dev/last-activity"] == "2027-01-15T08:00:00Z"  # the 409 was retried on the fresh version
    assert len(api.patches("sb")) == 2
    # another replica decided on the same stale read: after its 409 it sees the fresh annotation and stops
    Sandboxes(kube_of(api), 60, clock=lambda: now[0] + 1).record_activity(stale)
    assert len(api.patches("sb")) == 3 and api.sandboxes[(NS, "sb")]["metadata"]["annotations"] == stored


@pytest.mark.parametrize("rest", ["sessions/../run", "sessions/./run", "exec/../kill", "sessions/..", "exec/.hidden/kill",
                                  "files/../exec", "v1/exec", "exec/"])
def test_path_tricks_are_refused_before_any_review(api: FakeApiServer, key_file: Path, rest: str) -> None:
    client = make_app(api, key_file)
    response = client.open(f"/v1/namespaces/{NS}/sandboxes/sb/{rest}", method="POST" if rest != "sessions/.." else "DELETE",
                           headers={"Authorization": f"Bearer {ALICE}"}, data=b"{}")
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "unknown_operation"
    assert api.calls == []


@pytest.mark.parametrize("pod_ip", ["127.0.0.1:22/x?", "metadata.example", "169.254.169.254", "0.0.0.0", "fe80::1", "224.0.0.1"])
def test_a_pod_ip_that_is_no_pod_address_is_never_called(api: FakeApiServer, key_file: Path, pod_ip: str) -> None:
    api.put_sandbox(NS, "odd", pod_ip=pod_ip)
    response = call(make_app(api, key_file), ALICE, name="odd")
    error = response.get_json()["error"]
    assert response.status_code == 502 and error["code"] == "runtime_unreachable" and "address" in error["message"]


def test_an_oversize_body_is_refused_and_not_forwarded(api: FakeApiServer, key_file: Path, runtime: int, launched: Launched) -> None:
    client = make_app(api, key_file, runtime, LLMSS_GATEWAY_MAX_BODY_BYTES="2048")
    path = launched.writable[1] + "/big"
    big = client.put(f"/v1/namespaces/{NS}/sandboxes/sb/files?path={path}", data=b"x" * 4096,
                     headers={"Authorization": f"Bearer {ALICE}"})
    assert big.status_code == 413 and big.get_json()["error"]["code"] == "too_large"
    assert not Path(path).exists()
    small = client.put(f"/v1/namespaces/{NS}/sandboxes/sb/files?path={path}", data=b"x" * 2000,
                       headers={"Authorization": f"Bearer {ALICE}"})
    assert small.status_code == 201 and Path(path).stat().st_size == 2000


def test_sandbox_content_is_never_rendered_as_the_gateways(api: FakeApiServer, key_file: Path, runtime: int,
                                                           launched: Launched) -> None:
    client = make_app(api, key_file, runtime)
    path = launched.writable[1] + "/page.html"
    auth = {"Authorization": f"Bearer {ALICE}"}
    assert client.put(f"/v1/namespaces/{NS}/sandboxes/sb/files?path={path}", data=b"<script>1</script>", headers=auth).status_code == 201
    got = client.get(f"/v1/namespaces/{NS}/sandboxes/sb/files?path={path}", headers=auth)
    assert got.headers["X-Content-Type-Options"] == "nosniff" and got.headers["Content-Security-Policy"] == "sandbox"


def test_sessions_keep_state_across_calls(api: FakeApiServer, key_file: Path, runtime: int) -> None:
    client = make_app(api, key_file, runtime)
    created = call(client, ALICE, op="sessions", body={"language": "python"})
    assert created.status_code == 201, created.get_data(as_text=True)
    sid = created.get_json()["id"]
    assert call(client, ALICE, op=f"sessions/{sid}/run", body={"code": "x = 41"}).status_code == 200
    lines = [json.loads(line) for line in call(client, ALICE, op=f"sessions/{sid}/run", body={"code": "print(x + 1)"}).get_data(as_text=True).splitlines()]
    assert "".join(e["data"] for e in lines if e["type"] == "stdout") == "42\n" and lines[-1]["status"] == "ok"
    assert call(client, ALICE, op=f"sessions/{sid}", method="DELETE").status_code == 204
    # bob may not run code in team-a's sandbox, not even in a session someone else opened
    assert call(client, BOB, op=f"sessions/{sid}/run", body={"code": "1"}).status_code == 403


def test_resume_needs_the_right_to_patch(api: FakeApiServer, key_file: Path) -> None:
    api.grants.append(Grant("bob", NS, "sandboxes", "exec", ("create",)))  # exec, but not patch
    api.put_sandbox(NS, "sb", phase="Suspended", ready=False, reason="Suspended")
    api.set_state(NS, "sb", phase="Suspended", ready=False, reason="Suspended", suspended="IdleTimeout")
    response = call(make_app(api, key_file), BOB, query_string={"wait": "5"})
    error = response.get_json()["error"]
    assert response.status_code == 409 and error["code"] == "sandbox_suspended" and "patch" in error["message"]
    assert api.patches("sb") == []


def test_a_warm_pod_is_the_sandboxs_by_the_uid_label_of_its_warmpod() -> None:
    """A warm pod carries its WarmPod's UID label from creation; the sandbox's status names that
    WarmPod once it runs on it (assigned to its UID for good). The first call need not wait for
    the relabel with the sandbox's UID, and no other pod passes."""
    from gateway.sandboxes import LABEL_SANDBOX_UID, LABEL_WARMPOD_UID, carries_identity
    warm = {"metadata": {"uid": "sb-1"}, "status": {"warmPodUsed": True, "warmPodRef": {"name": "python-0", "uid": "wp-1"}}}
    assert carries_identity(warm, {LABEL_WARMPOD_UID: "wp-1"})
    assert carries_identity(warm, {LABEL_SANDBOX_UID: "sb-1"})  # relabelled, or its own pod
    assert not carries_identity(warm, {LABEL_WARMPOD_UID: "wp-2"})  # another warm pod
    assert not carries_identity(warm, {LABEL_SANDBOX_UID: "sb-2"})
    left = {"metadata": {"uid": "sb-1"}, "status": {"warmPodUsed": False, "warmPodRef": {"name": "python-0", "uid": "wp-1"}}}
    assert not carries_identity(left, {LABEL_WARMPOD_UID: "wp-1"})  # it went cold: that pod is released
    unnamed = {"metadata": {"uid": "sb-1"}, "status": {"warmPodUsed": True, "warmPodRef": {"name": "python-0"}}}
    assert not carries_identity(unnamed, {LABEL_WARMPOD_UID: ""}) and not carries_identity(unnamed, {})
