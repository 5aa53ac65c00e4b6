"""The whole path of issue 23 on the real node (tests/e2e/realnode.py): a user whose only rights
are namespace-scoped (a ServiceAccount of the tenant namespace bound to `edit` there) creates a
sandbox with the SDK, warm from a pool and cold; it runs on the real node; code runs through the
gateway (its image from scripts/build-images, deployed by the chart on that node: helm upgrade
with gateway.enabled) into the runtime, signed; output streams, a session keeps state, files
round-trip; another namespace's user is refused and cannot touch it; the runtime refuses what the
gateway did not sign; another sandbox's packets to it are dropped while the gateway's get through.

The module deploys the gateway once (tests/e2e/gateway_node.py: key, hooks trusting it, chart
upgrade, a relay for the API server) and restores the release as the suite installed it at its
end. Skipped, naming what is missing, without the real node, kube-proxy or the gateway image."""
from __future__ import annotations

import hashlib
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conformance.client import Client
from hooks import constants as C
from llmsafespace import Connection, Forbidden, NotFound, Sandbox, Unauthenticated
from tests.e2e import gateway_node
from tests.e2e.gateway_node import GatewayOnNode, User, namespace_user
from tests.e2e.kube import Kube
from tests.e2e.objects import SMALL, pool, pool_status
from tests.e2e.realnode import NODE_NAME, PROBE_IMAGE, RealNode

PRINT_1 = "print(1)"
# A real kubelet probes liveness during a deleted pod's grace period: the runtime, which closes its
# port on SIGTERM, fails one probe before the kubelet sees it exit (kubernetes/kubernetes#107473).
LIVENESS_AT_DELETION = (r'^Unhealthy: Pod/[\w.-]+: Liveness probe failed: Get "http://[\d.]+:8080/health": '
                        r"dial tcp [\d.:]+: connect: connection refused$")
pytestmark = pytest.mark.allow_errors(LIVENESS_AT_DELETION)


@pytest.fixture(scope="module")
def gateway(kube: Kube, real_node: RealNode) -> Iterator[GatewayOnNode]:
    reason = gateway_node.skip_reason(real_node)
    if reason:
        pytest.skip(reason)
    with tempfile.TemporaryDirectory(prefix="llmss-e2e-gateway-") as workdir:
        gw = GatewayOnNode(kube, real_node, Path(workdir)).start()
        print(f"\n{gw.summary()}")
        try:
            yield gw
        finally:
            gw.stop()


@pytest.fixture()
def alice(kube: Kube, namespace: str, gateway: GatewayOnNode) -> User:
    return namespace_user(kube, namespace, "alice", gateway.workdir)


def _connection(gateway: GatewayOnNode, user: User) -> Connection:
    return Connection(gateway.url, kubeconfig=str(user.kubeconfig))


def _pod(kube: Kube, sandbox: Sandbox) -> dict[str, Any]:
    pod = kube.core("Pod", sandbox.namespace, sandbox.refresh()["status"]["podName"])
    assert pod is not None
    return pod


def _runtime(kube: Kube, name: str, image: str) -> str:
    kube.apply({"apiVersion": "llmsafespace.dev/v1", "kind": "RuntimeEnvironment", "metadata": {"name": name},
                "spec": {"image": image, "language": "python", "version": "3.11", "securityFeatures": ["seccomp"]}})
    kube.wait(f"runtime {name} available",
              lambda: ((kube.custom("RuntimeEnvironment", None, name) or {}).get("status") or {}).get("available") is True, 30)
    return name


def test_a_namespace_user_runs_code_through_the_gateway_warm_and_cold(kube: Kube, namespace: str, rte: str, alice: User,
                                                                      gateway: GatewayOnNode, on_real_node: RealNode) -> None:
    """SDK -> API server (create) -> warm pod on the real node -> gateway -> runtime -> result, as a
    user with `edit` in one namespace: print(1), streamed output, session state, files, delete;
    then the same cold."""
    kube.apply(pool("python", namespace, rte, minSize=1, maxSize=2))
    kube.wait("pool with 1 available", lambda: pool_status(kube, namespace, "python").get("availablePods", 0) >= 1, 120,
              show=lambda: pool_status(kube, namespace, "python"))
    conn = _connection(gateway, alice)
    assert conn.namespace == namespace

    t0 = time.monotonic()
    sandbox = Sandbox.create(rte, connection=conn, warm_pool="python", resources=SMALL)
    first = sandbox.run(PRINT_1)
    warm_s = time.monotonic() - t0
    assert (first.exit_code, first.stdout, first.stderr) == (0, "1\n", ""), first
    status = sandbox.obj["status"]
    assert status["warmPodUsed"] is True, status
    pod = _pod(kube, sandbox)
    assert pod["spec"]["nodeName"] == NODE_NAME, pod["spec"].get("nodeName")
    container = next(c for c in pod["status"]["containerStatuses"] if c["name"] == C.SANDBOX_CONTAINER)
    pid = on_real_node.host_pid(container["containerID"])  # a real process on the node

    # Streamed: each line reaches the caller as the runtime produces it.
    seen: list[tuple[float, str]] = []
    for event in sandbox.exec_stream("echo one; sleep 1.5; echo two"):
        if event["type"] == "stdout":
            seen.append((time.monotonic(), event["data"]))
        if event["type"] == "exit":
            assert event["exit_code"] == 0, event
    assert "".join(d for _, d in seen) == "one\ntwo\n", seen
    assert len(seen) >= 2 and seen[-1][0] - seen[0][0] > 1.0, f"the output came in one piece: {seen}"

    # A session keeps Python state between calls.
    with sandbox.session() as py:
        assert py.run("import math\nr = 2").ok
        result = py.run("round(math.pi * r ** 2, 3)")
        assert (result.status, result.result) == ("ok", "12.566"), result

    # Files, both ways: bytes in, the same bytes out, seen by code in the sandbox.
    data = bytes(range(256)) * 64 + secrets.token_bytes(1000)
    assert sandbox.files.write("/workspace/in/data.bin", data) == len(data)
    assert sandbox.files.read("/workspace/in/data.bin") == data
    assert [e.name for e in sandbox.files.list("/workspace/in")] == ["data.bin"]
    code = sandbox.run("import hashlib; print(hashlib.sha256(open('/workspace/in/data.bin','rb').read()).hexdigest())")
    assert code.stdout.strip() == hashlib.sha256(data).hexdigest()
    sandbox.run("open('/workspace/out.txt', 'w').write('made inside')").check()
    assert sandbox.files.read_text("/workspace/out.txt") == "made inside"
    sandbox.files.delete("/workspace/in", recursive=True)
    assert "in" not in [e.name for e in sandbox.files.list("/workspace")]

    sandbox.delete()
    kube.wait_gone("Sandbox", namespace, sandbox.name, timeout=90)
    kube.wait("the warm pod's container gone", lambda: container["containerID"].split("://")[1] not in on_real_node.tasks(), 60)
    kube.wait(f"its process {pid} gone", lambda: not Path(f"/proc/{pid}").exists(), 30)

    # Cold: no pool involved, the pod made for this sandbox.
    t0 = time.monotonic()
    with Sandbox.create(rte, connection=conn, warm=False, resources=SMALL) as cold:
        first = cold.run(PRINT_1)
        cold_s = time.monotonic() - t0
        assert (first.exit_code, first.stdout) == (0, "1\n"), first
        assert cold.obj["status"].get("warmPodUsed") is not True, cold.obj["status"]
        assert _pod(kube, cold)["spec"]["nodeName"] == NODE_NAME
        name = cold.name
    kube.wait_gone("Sandbox", namespace, name, timeout=90)
    print(f"\ncreate -> first result of print(1) through the SDK and the gateway: warm {warm_s:.2f}s, cold {cold_s:.2f}s")


@pytest.fixture()
def bob(kube: Kube, gateway: GatewayOnNode) -> Iterator[User]:
    """A user with `edit` in a namespace of his own."""
    other = f"e2e-other-{secrets.token_hex(2)}"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": other}})
    kube.wait("its default ServiceAccount", lambda: kube.core("ServiceAccount", other, "default"), 60)
    try:
        yield namespace_user(kube, other, "bob", gateway.workdir)
    finally:
        kube.kubectl("delete", "namespace", other, "--wait=false", "--ignore-not-found", check=False)


def test_another_namespace_user_is_refused_and_cannot_touch_the_sandbox(kube: Kube, namespace: str, rte: str, alice: User,
                                                                          bob: User, gateway: GatewayOnNode,
                                                                          on_real_node: RealNode) -> None:
    conn = _connection(gateway, alice)
    with Sandbox.create(rte, connection=conn, warm=False, resources=SMALL) as sandbox:
        assert sandbox.run(PRINT_1).stdout == "1\n"
        url = f"{gateway.url}/v1/namespaces/{namespace}/sandboxes/{sandbox.name}/exec"
        body = {"code": PRINT_1, "language": "python"}

        # The gateway says why, in JSON: who, which verb, which subresource.
        answer = requests.post(url, json=body, headers={"Authorization": f"Bearer {bob.token}"}, timeout=30)
        assert answer.status_code == 403, answer.text
        error = answer.json()["error"]
        assert error["code"] == "forbidden", error
        assert bob.username in error["message"] and "create" in error["message"] and "sandboxes/exec" in error["message"], error
        print(f"\nwhat bob is told: {answer.status_code} {error['message']}")
        anonymous = requests.post(url, json=body, timeout=30)
        assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "unauthenticated", anonymous.text
        forged = requests.post(url, json=body, headers={"Authorization": f"Bearer {alice.token[:-4]}AAAA"}, timeout=30)
        assert forged.status_code == 401, forged.text

        # Through the SDK: neither the gateway nor the API server lets him.
        bobs = Connection(gateway.url, kubeconfig=str(bob.kubeconfig))
        theirs = Sandbox(sandbox.name, namespace, bobs)
        with pytest.raises(Forbidden, match="sandboxes/exec"):
            theirs.run(PRINT_1)
        with pytest.raises(Forbidden, match="sandboxes/files"):
            theirs.files.read("/workspace/x")
        with pytest.raises(Forbidden, match="sandboxes/files"):
            theirs.files.write("/workspace/x", b"bob was here")
        for attempt in (lambda: Sandbox.get(sandbox.name, namespace=namespace, connection=bobs), theirs.delete, theirs.suspend):
            with pytest.raises(Forbidden):
                attempt()
        # His own namespace has no such sandbox; nothing of his reached alice's.
        with pytest.raises((NotFound, Forbidden)):
            Sandbox(sandbox.name, bob.namespace, bobs).run(PRINT_1)
        with pytest.raises(Unauthenticated):
            Sandbox(sandbox.name, namespace, Connection(gateway.url, configuration=_bearer(kube, "not-a-token"))).run(PRINT_1)
        assert sandbox.refresh()["status"]["phase"] == "Running"
        assert not [e.name for e in sandbox.files.list("/workspace") if e.name == "x"]
        assert sandbox.run(PRINT_1).stdout == "1\n"


def _bearer(kube: Kube, token: str) -> Any:
    from kubernetes import client as k8s_client

    configuration = k8s_client.Configuration()
    configuration.host = kube.cp.server
    configuration.ssl_ca_cert = str(kube.cp.pki.ca_cert) if kube.cp.pki else None
    configuration.api_key = {"authorization": f"Bearer {token}"}
    return configuration


def test_the_runtime_takes_only_the_gateways_signed_calls(kube: Kube, namespace: str, rte: str, alice: User,
                                                          gateway: GatewayOnNode, on_real_node: RealNode) -> None:
    """From the host (which reaches pod IPs on the bridge): unsigned, or signed by another key, the
    runtime refuses (401); signed with the gateway's key it answers. With the enforcer running,
    another sandbox's connection to the runtime's port is dropped while the gateway's calls go
    through."""
    conn = _connection(gateway, alice)
    with Sandbox.create(rte, connection=conn, warm=False, resources=SMALL) as sandbox:
        pod = _pod(kube, sandbox)
        base, uid = f"http://{pod['status']['podIP']}:8080", pod["metadata"]["uid"]
        body = b'{"code": "print(1)", "language": "python"}'
        unsigned = Client(base, None, uid, timeout=10).request("POST", "/v1/exec", body)
        assert unsigned.status == 401 and unsigned.error_code == "unauthenticated", (unsigned.status, unsigned.body)
        stranger = Client(base, Ed25519PrivateKey.generate(), uid, timeout=10).request("POST", "/v1/exec", body)
        assert stranger.status == 401 and b"signature" in stranger.body.lower(), (stranger.status, stranger.body)
        assert gateway.key is not None
        wrong_pod = Client(base, gateway.key, "0" * 8 + uid[8:], timeout=10).request("POST", "/v1/exec", body)
        assert wrong_pod.status == 401, (wrong_pod.status, wrong_pod.body)
        signed = Client(base, gateway.key, uid, timeout=30)
        events = signed.exec({"code": PRINT_1, "language": "python"})
        assert "".join(e.get("data", "") for e in events if e.get("type") == "stdout") == "1\n", events
        signed.close()

        reason = on_real_node.has("kube-network-policies")
        if reason:
            print(f"\nno packet check: {reason}")
            return
        probe = _runtime(kube, f"probe-e2e-{secrets.token_hex(3)}", PROBE_IMAGE)
        try:
            kube.apply({"apiVersion": "llmsafespace.dev/v1", "kind": "Sandbox", "metadata": {"name": "neighbour", "namespace": namespace},
                        "spec": {"runtime": probe}})
            kube.wait_sandbox(namespace, "neighbour", "Running", ready=True, timeout=120)
            answer = kube.get(f"/api/v1/namespaces/{namespace}/pods/sandbox-neighbour:8080/proxy/connect",
                              host=pod["status"]["podIP"], port="8080", timeout="2")
            assert answer is not None and answer["ok"] is False, f"another sandbox reached the runtime's port: {answer}"
            assert sandbox.run(PRINT_1).stdout == "1\n", "the gateway's call did not get through"
            print(f"\nneighbour -> runtime :8080: {answer}; gateway -> runtime: ok")
        finally:
            kube.kubectl("delete", "sandbox", "neighbour", "-n", namespace, "--ignore-not-found", "--wait=false", check=False)
            kube.kubectl("delete", "runtimeenvironment", probe, "--ignore-not-found", "--wait=false", check=False)



def test_the_benchmark_first_result_section_runs(kube: Kube, gateway: GatewayOnNode, real_node: RealNode,
                                                 clean_cluster: None) -> None:
    """A smoke run of bench/run e2e's section 6 (create -> first result, warm, cold, and the
    floor) with 2 samples each, on this module's gateway."""
    from bench import e2e

    results = e2e.run_first_result(kube, real_node, gateway, 2, timeout=90, wait_cleanup=False)
    for path in ("warm", "cold", "floor"):
        assert results[path]["complete"] and len(results[path]["samples_ms"]) == 2, results[path]
    assert results["warm"]["served_warm"] == 2 and results["cold"]["served_warm"] == 0, results
    assert 0 < results["floor"]["p50"] < results["warm"]["p50"] < 30, results
    for path in ("warm", "cold"):  # the create alone, then the first call through the gateway
        assert 0 < results[path]["create"]["p50"] < results[path]["p50"] and 0 < results[path]["call"]["p50"], results[path]
    table = e2e.table({"sizes": {"first_result": 2}, "first_result": results})
    assert "## 6. Create -> first result" in table and "| floor: signed call straight to the runtime | 2 |" in table
    print("\n## 6." + table.split("## 6.", 1)[1].split("\n\n", 1)[0])
