"""The SDK (sdk/llmsafespace) end to end on loopback: kubeconfig credentials -> the fake API server
(tests/gateway_support.py; a small "controller" thread plays the hooks) -> the gateway (in this
process, served by werkzeug) -> the real runtime (a process, as tests/test_runtime_server.py runs it)."""
from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from kubernetes import client as k8s_client
from werkzeug.serving import make_server

from gateway import signing
from gateway.app import create_app
from gateway.kube import Kube
from llmsafespace import (Connection, Forbidden, NotReady, Sandbox, SandboxError, Suspended, Timeout, Unauthenticated)
from tests.gateway_support import GATEWAY_SA_TOKEN, FakeApiServer, Grant, start_runtime

NS = "team-a"
ALICE, BOB = "alice-token", "bob-token"
POD_UID = str(uuid.uuid4())  # the one runtime process answers to this UID: every sandbox's pod has it


class Controllers:
    """What the hooks do, as far as the SDK can see: a new sandbox runs (or fails, when its runtime
    says so), operatingMode Suspended suspends it, Running brings it back."""

    def __init__(self, api: FakeApiServer) -> None:
        self.api, self.stop = api, threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self) -> None:
        while not self.stop.wait(0.05):
            with self.api.lock:
                todo = [(k, json.loads(json.dumps(v))) for k, v in self.api.sandboxes.items()]
            for (ns, name), sandbox in todo:
                self.api.pod_uids[(ns, f"{name}-pod")] = POD_UID
                spec, status = sandbox.get("spec") or {}, sandbox.get("status") or {}
                phase, mode = status.get("phase"), spec.get("operatingMode", "Running")
                if spec.get("runtime") == "broken" and phase != "Failed":
                    self.api.set_state(ns, name, phase="Failed", ready=False, reason="ImagePullBackOff", message="no such image")
                elif spec.get("runtime") == "slow" and phase != "Creating":
                    self.api.set_state(ns, name, phase="Creating", ready=False, reason="PodPending", message="no node has room")
                elif spec.get("runtime") in ("broken", "slow"):
                    continue
                elif mode == "Suspended" and phase != "Suspended":
                    self.api.set_state(ns, name, phase="Suspended", ready=False, reason="Suspended", suspended="Requested")
                elif mode == "Running" and phase in (None, "Suspended"):
                    self.api.set_state(ns, name, phase="Running", ready=True)


def kubeconfig(tmp_path: Path, api: FakeApiServer, token: str | None, name: str) -> str:
    user: dict[str, Any] = {"token": token} if token else {"username": "cert-user", "password": "x"}
    path = tmp_path / f"{name}.kubeconfig"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "Config", "current-context": "c",
                                "clusters": [{"name": "c", "cluster": {"server": api.url}}],
                                "users": [{"name": "u", "user": user}],
                                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u", "namespace": NS}}]}))
    return str(path)


@pytest.fixture()
def cluster(tmp_path: Path) -> Iterator[dict[str, Any]]:
    api = FakeApiServer(users={ALICE: {"username": "alice", "uid": "1", "groups": ["dev"]},
                               BOB: {"username": "bob", "uid": "2", "groups": ["dev"]}},
                        grants=[Grant("alice", NS, "sandboxes", "exec", ("create",)),
                                Grant("alice", NS, "sandboxes", "files", ("get", "create", "delete")),
                                Grant("alice", NS, "sandboxes", "", ("patch",))])
    pem, public = signing.generate()
    key = tmp_path / "key.pem"
    key.write_bytes(pem)
    with api:
        controllers = Controllers(api)
        controllers.thread.start()
        rt = start_runtime(public, POD_UID)
        configuration = k8s_client.Configuration()
        configuration.host = api.url
        configuration.api_key = {"authorization": GATEWAY_SA_TOKEN}
        configuration.api_key_prefix = {"authorization": "Bearer"}
        app = create_app({"LLMSS_GATEWAY_SIGNING_KEY_FILE": str(key), "LLMSS_GATEWAY_RUNTIME_PORT": rt.client.base.rsplit(":", 1)[1]},
                         kube=Kube(configuration))
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_port}"
        try:
            yield {"api": api, "url": url, "runtime": rt,
                   "alice": Connection(url, kubeconfig=kubeconfig(tmp_path, api, ALICE, "alice")),
                   "bob": Connection(url, kubeconfig=kubeconfig(tmp_path, api, BOB, "bob")),
                   "tmp": tmp_path}
        finally:
            server.shutdown()
            controllers.stop.set()
            rt.stop()


def test_create_run_and_delete_in_a_few_lines(cluster: dict[str, Any]) -> None:
    api = cluster["api"]
    with Sandbox.create(runtime="python:3.11", connection=cluster["alice"]) as sandbox:
        assert sandbox.namespace == NS  # the kubeconfig context's namespace
        assert sandbox.run("print(6 * 7)").stdout == "42\n"
        result = sandbox.exec(["sh", "-c", "echo out; echo err >&2; exit 3"])
        assert (result.exit_code, result.stdout, result.stderr, result.ok) == (3, "out\n", "err\n", False)
        with pytest.raises(SandboxError, match="exited 3"):
            result.check()
        name = sandbox.name
        assert (NS, name) in api.sandboxes
    assert (NS, name) not in api.sandboxes
    # the SDK waited on a watch: one watch request, and no GET loop
    reads = [p for m, p, b, _ in api.calls if b == ALICE and m == "GET" and p.endswith(f"/sandboxes/{name}")]
    assert len(reads) <= 2, reads
    assert any(b == ALICE and m == "GET" and p.endswith("/sandboxes") for m, p, b, _ in api.calls), "no watch"


def test_output_streams_while_the_command_runs(cluster: dict[str, Any]) -> None:
    seen: list[tuple[float, str]] = []
    with Sandbox.create(runtime="python", connection=cluster["alice"]) as sandbox:
        start = time.monotonic()
        result = sandbox.exec("echo first; sleep 2; echo second", on_stdout=lambda data: seen.append((time.monotonic() - start, data)))
        end = time.monotonic() - start
        assert result.stdout == "first\nsecond\n" and result.exit_code == 0 and result.id
        assert seen[0][1] == "first\n" and end - seen[0][0] >= 1.5, seen  # 'first' arrived long before the end
        events = list(sandbox.exec_stream(["echo", "hi"]))
        assert [e["type"] for e in events] == ["start", "stdout", "exit"]


def test_sessions_keep_python_state(cluster: dict[str, Any]) -> None:
    with Sandbox.create(runtime="python", connection=cluster["alice"]) as sandbox:
        with sandbox.session() as session:
            assert session.run("x = 40").ok
            answer = session.run("x += 2\nprint('x is', x)\nx")
            assert (answer.stdout, answer.result, answer.status) == ("x is 42\n", "42", "ok")
            failed = session.run("1 / 0")
            assert failed.status == "error" and failed.error and failed.error["ename"] == "ZeroDivisionError"
            assert [s["id"] for s in sandbox.sessions()] == [session.id]
        assert sandbox.sessions() == []


def test_files_round_trip(cluster: dict[str, Any]) -> None:
    workspace = cluster["runtime"].writable[1]
    with Sandbox.create(runtime="python", connection=cluster["alice"]) as sandbox:
        assert sandbox.files.write(f"{workspace}/data/in.txt", "hello\n") == 6
        assert sandbox.run(f"print(open('{workspace}/data/in.txt').read().upper(), end='')").stdout == "HELLO\n"
        assert sandbox.files.read_text(f"{workspace}/data/in.txt") == "hello\n"
        (entry,) = sandbox.files.list(f"{workspace}/data")
        assert (entry.name, entry.type, entry.size) == ("in.txt", "file", 6)
        sandbox.files.delete(f"{workspace}/data", recursive=True)
        assert sandbox.files.list(workspace) == []
        with pytest.raises(SandboxError) as outside:
            sandbox.files.read("/etc/passwd")
        assert outside.value.code == "path_outside_writable"


def test_warm_by_default_through_the_annotation_or_a_named_pool(cluster: dict[str, Any]) -> None:
    conn = cluster["alice"]
    warm = Sandbox.create(runtime="python", connection=conn, wait=False)
    pooled = Sandbox.create(runtime="python", connection=conn, wait=False, warm_pool="py-pool")
    cold = Sandbox.create(runtime="python", connection=conn, wait=False, warm=False)
    try:
        assert warm.obj["metadata"]["annotations"] == {"llmsafespace.dev/use-warm-pod": "true"}
        assert pooled.obj["spec"]["warmPoolRef"] == {"name": "py-pool"} and not pooled.obj["metadata"]["annotations"]
        assert "warmPoolRef" not in cold.obj["spec"] and not cold.obj["metadata"]["annotations"]
    finally:
        for sandbox in (warm, pooled, cold):
            sandbox.delete()


def test_the_context_manager_deletes_whatever_happens(cluster: dict[str, Any]) -> None:
    api = cluster["api"]
    with pytest.raises(RuntimeError):
        with Sandbox.create(runtime="python", connection=cluster["alice"]) as sandbox:
            raise RuntimeError("the agent's own bug")
    assert (NS, sandbox.name) not in api.sandboxes
    sandbox.delete()  # twice is fine


def test_errors_name_the_sandboxs_reason_and_failed_creations_are_cleaned_up(cluster: dict[str, Any]) -> None:
    api = cluster["api"]
    with pytest.raises(NotReady) as failed:
        Sandbox.create(runtime="broken", connection=cluster["alice"], name="b1")
    assert failed.value.reason == "ImagePullBackOff" and failed.value.phase == "Failed" and "no such image" in str(failed.value)
    assert (NS, "b1") not in api.sandboxes
    with pytest.raises(Timeout) as slow:
        Sandbox.create(runtime="slow", connection=cluster["alice"], name="s1", wait_timeout=1.5)
    assert slow.value.reason == "PodPending" and "no node has room" in str(slow.value)
    # through the gateway: a sandbox that is not ready says why
    pending = Sandbox.create(runtime="slow", connection=cluster["alice"], name="s2", wait=False)
    pending.wait = 0
    try:
        time.sleep(0.3)
        with pytest.raises(NotReady) as not_ready:
            pending.run("print(1)")
        assert not_ready.value.code == "sandbox_not_ready" and not_ready.value.reason == "PodPending"
    finally:
        pending.delete()


def test_another_user_cannot_touch_it(cluster: dict[str, Any]) -> None:
    with Sandbox.create(runtime="python", connection=cluster["alice"]) as sandbox:
        intruder = Sandbox(sandbox.name, NS, cluster["bob"])
        with pytest.raises(Forbidden) as refused:
            intruder.run("print(1)")
        assert 'user "bob" cannot create sandboxes/exec' in str(refused.value)
        with pytest.raises(Forbidden):
            intruder.files.read("/workspace/x")


def test_suspend_resume_and_resume_on_demand(cluster: dict[str, Any]) -> None:
    with Sandbox.create(runtime="python", connection=cluster["alice"]) as sandbox:
        sandbox.suspend()
        assert sandbox.phase == "Suspended"
        sandbox.resume()
        assert sandbox.phase == "Running" and sandbox.run("print('back')").stdout == "back\n"
        sandbox.suspend()
        # a call to a suspended sandbox: the gateway resumes it (alice may patch) and waits
        assert sandbox.run("print('woken')").stdout == "woken\n"
        sandbox.suspend()
        sandbox.wait = 0  # no waiting: the answer says it is suspended and being resumed
        with pytest.raises(Suspended) as suspended:
            sandbox.run("print(1)")
        assert suspended.value.code == "sandbox_suspended" and suspended.value.reason == "Requested"


def test_credentials_are_the_kubeconfig_bearer_token_or_a_clear_error(cluster: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    cert_user = Connection(cluster["url"], kubeconfig=kubeconfig(cluster["tmp"], cluster["api"], None, "cert"))
    with pytest.raises(Unauthenticated, match="no bearer token"):
        Sandbox("x", NS, cert_user).run("print(1)")
    monkeypatch.delenv("LLMSS_GATEWAY_URL", raising=False)
    with pytest.raises(SandboxError, match="LLMSS_GATEWAY_URL"):
        Connection(kubeconfig=kubeconfig(cluster["tmp"], cluster["api"], ALICE, "alice2"))
    monkeypatch.setenv("LLMSS_GATEWAY_URL", cluster["url"] + "/")
    assert Connection(kubeconfig=kubeconfig(cluster["tmp"], cluster["api"], ALICE, "alice3")).gateway_url == cluster["url"]


def test_the_readme_example_runs_as_written(cluster: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """README.md, "Run code in a sandbox": credentials from KUBECONFIG, the URL from LLMSS_GATEWAY_URL
    (only /workspace is moved to the test runtime's writable directory)."""
    import re

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Run code in a sandbox", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]
    monkeypatch.setenv("LLMSS_GATEWAY_URL", cluster["url"])
    monkeypatch.setenv("KUBECONFIG", kubeconfig(cluster["tmp"], cluster["api"], ALICE, "readme"))
    before = set(cluster["api"].sandboxes)
    exec(compile(code.replace("/workspace", cluster["runtime"].writable[1]), "README.md", "exec"), {})  # noqa: S102
    assert capsys.readouterr().out == "1\n2\n3\n42\n\n12.566370614359172\na,b\n1,2\n\n"
    assert set(cluster["api"].sandboxes) == before  # deleted on exit


def test_a_running_execution_can_be_killed(cluster: dict[str, Any]) -> None:
    from llmsafespace import NotFound

    with Sandbox.create(runtime="python", connection=cluster["alice"]) as sandbox:
        events = sandbox.exec_stream(["sleep", "60"])
        start = next(events)
        assert start["type"] == "start"
        began = time.monotonic()
        sandbox.kill(start["id"])
        end = [e for e in events if e["type"] == "exit"][0]
        assert end["signal"] == 9 and time.monotonic() - began < 30
        with pytest.raises(NotFound):
            sandbox.kill(start["id"])
