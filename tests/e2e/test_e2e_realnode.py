"""Sandboxes on a real node (tests/e2e/realnode.py: kubelet, containerd 2, runc, CNI bridge), each
scenario asserting on what really happened — the container's process and files as the kernel
shows them, containerd's tasks, the kubelet's own reports, packets — not only on the API
server's view. Our pods tolerate no taint: each test runs with the kwok nodes cordoned and the
real node open (the `on_real_node` fixture). Skipped, with one line naming what is missing,
without the node's binaries, the images of scripts/build-images or root."""
from __future__ import annotations

import json
import secrets
import time
import urllib.error
import urllib.parse
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

from hooks import constants as C
from tests.e2e.kube import Kube, condition
from tests.e2e.objects import SMALL, pool, pool_status, sandbox, warm_pods, warm_sandbox
from tests.e2e.realnode import NODE_NAME, PROBE_IMAGE, RealNode, probe_pod, stateless_enforcement

MISSING_IMAGE = "ghcr.io/llmsafespace/runtime-python:0.0-missing"


def _runtime(name: str, image: str) -> dict[str, Any]:
    return {"apiVersion": "llmsafespace.dev/v1", "kind": "RuntimeEnvironment", "metadata": {"name": name},
            "spec": {"image": image, "language": "python", "version": "3.11", "securityFeatures": ["seccomp"]}}


@pytest.fixture()
def probe_rte(kube: Kube) -> Iterator[str]:
    """A RuntimeEnvironment whose image is the probe (tests/e2e/probe_server.py): sandboxes that
    report what they see and connect, allocate or exit on request."""
    name = f"probe-e2e-{secrets.token_hex(3)}"
    kube.apply(_runtime(name, PROBE_IMAGE))
    kube.wait(f"runtime {name} available",
              lambda: ((kube.custom("RuntimeEnvironment", None, name) or {}).get("status") or {}).get("available") is True, 30)
    yield name
    kube.kubectl("delete", "runtimeenvironment", name, "--ignore-not-found", "--wait=false", check=False)


def _exec(kube: Kube, namespace: str, pod: str, *command: str, container: str = C.SANDBOX_CONTAINER) -> tuple[int, str]:
    out = kube.cp.kubectl("exec", "-n", namespace, pod, "-c", container, "--", *command, check=False, timeout=60)
    return out.returncode, out.stdout + out.stderr


def _status_fields(text: str) -> dict[str, str]:
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines()) if v}


def _probe(kube: Kube, namespace: str, pod: str, path: str, **query: Any) -> dict[str, Any]:
    """GET a probe endpoint of a pod through the API server's pod proxy (a root process on the
    node's machine: the kubelet's probes come the same way, and NetworkPolicies let them in)."""
    qs = "?" + urllib.parse.urlencode({k: str(v) for k, v in query.items()}) if query else ""
    answer = kube.get(f"/api/v1/namespaces/{namespace}/pods/{pod}:8080/proxy{path}{qs}")
    assert answer is not None, f"{namespace}/{pod}{path}: not found"
    return answer


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    return next(cs for cs in pod["status"]["containerStatuses"] if cs["name"] == C.SANDBOX_CONTAINER)


def _host_uid(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:")))


def _start_time(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def _pod(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    pod = kube.core("Pod", namespace, name)
    assert pod is not None, f"pod {namespace}/{name} not found"
    return pod


def test_a_cold_sandbox_runs_as_its_pod_says(kube: Kube, namespace: str, rte: str, on_real_node: RealNode) -> None:
    """The reference runtime on the real node: the process is uid 1000 (an unprivileged id of the
    machine: its own user namespace), with no capability, no new privileges, a seccomp filter, a
    read-only root and exactly the pod's writable paths; the kubelet's probes pass; kubectl exec
    works; deleting the sandbox stops the container."""
    started = time.monotonic()
    kube.apply(sandbox("alpha", namespace, rte))
    sb = kube.wait_sandbox(namespace, "alpha", "Running", ready=True, timeout=120)
    print(f"\ncold start on the real node: apply -> Running + Ready in {time.monotonic() - started:.1f}s")
    pod = _pod(kube, namespace, sb["status"]["podName"])
    assert pod["spec"]["nodeName"] == NODE_NAME and pod["spec"].get("hostUsers") is False
    cs = _container(pod)
    assert cs["ready"] and cs["started"] and cs["restartCount"] == 0 and cs["containerID"].startswith("containerd://"), cs

    # The container's PID 1 as its kernel reports it (kubectl exec: through the API server, the
    # kubelet and containerd's stream server).
    code, text = _exec(kube, namespace, pod["metadata"]["name"], "cat", "/proc/1/status")
    assert code == 0, text
    status = _status_fields(text)
    assert status["Uid"].split() == ["1000"] * 4 and status["Gid"].split() == ["1000"] * 4, status
    assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0 and int(status["CapBnd"], 16) == 0, status
    assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2", status  # 2: a filter is in force
    code, uid_map = _exec(kube, namespace, pod["metadata"]["name"], "cat", "/proc/1/uid_map")
    inside, outside, count = (int(f) for f in uid_map.split()[:3])
    assert code == 0 and (inside, count) == (0, 65536) and outside >= 65536, uid_map  # not "0 0 4294967295"
    # From the machine's side: the same process, as an unprivileged uid of the machine.
    pid = on_real_node.host_pid(cs["containerID"])
    assert _host_uid(pid) == outside + 1000
    started_at = _start_time(pid)

    # Files: the root is read-only, each writable path of the pod is writable.
    code, text = _exec(kube, namespace, pod["metadata"]["name"], "sh", "-c", "echo x > /e2e-probe")
    assert code != 0 and "Read-only file system" in text, text
    writable = [m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]]
    assert writable, pod["spec"]["containers"][0]
    for path in writable:
        code, text = _exec(kube, namespace, pod["metadata"]["name"], "sh", "-c", f"echo e2e > {path}/.e2e && cat {path}/.e2e && id -u")
        assert code == 0 and text.split() == ["e2e", "1000"], (path, text)

    # The probes the kubelet ran: Ready, no restart, nothing reported unhealthy.
    unhealthy = [e for e in kube.events(namespace) if e.get("reason") == "Unhealthy"]
    assert not unhealthy, unhealthy

    # Deletion really stops the container.
    container_id = cs["containerID"].split("://", 1)[1]
    kube.kubectl("delete", "sandbox", "alpha", "-n", namespace, "--wait=false")
    kube.wait_gone("Sandbox", namespace, "alpha", timeout=90)
    kube.wait("the container gone from containerd", lambda: container_id not in on_real_node.tasks(), 30,
              show=lambda: on_real_node.tasks())
    assert not Path(f"/proc/{pid}").exists() or _start_time(pid) != started_at, "the container's process still runs"


def test_the_sandbox_service_answers_an_api_pod(kube: Kube, namespace: str, rte: str, on_real_node: RealNode) -> None:
    """The sandbox's Service, as the API component reaches it: from a pod labelled as our API
    in the release namespace, to the Service's ClusterIP (kube-proxy's DNAT onto the bridge)."""
    reason = on_real_node.has("kube-proxy")
    if reason:
        pytest.skip(reason)
    kube.apply(sandbox("served", namespace, rte, resources=SMALL))
    kube.wait_sandbox(namespace, "served", "Running", ready=True, timeout=120)
    api = _api_pod(kube)
    try:
        service = kube.core("Service", namespace, "sandbox-served")
        assert service is not None
        url = f"http://{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}/health"
        answer = kube.wait("the Service answers", lambda: (lambda a: a if a.get("status") == 200 else None)(
            _probe(kube, api[0], api[1], "/get", url=url, timeout=3)), 30, interval=1,
            show=lambda: _probe(kube, api[0], api[1], "/get", url=url, timeout=3))
        assert answer["status"] == 200, answer
    finally:
        kube.kubectl("delete", "pod", api[1], "-n", api[0], "--wait=false", "--ignore-not-found", check=False)


def _api_pod(kube: Kube) -> tuple[str, str]:
    """A probe pod in the release namespace labelled as our API component (what the sandboxes'
    api-access policy lets in on 8080), once ready."""
    name = f"e2e-api-{secrets.token_hex(3)}"
    namespace = "llmsafespace"
    kube.apply(probe_pod(name, namespace, labels={C.LABEL_APP: C.APP_NAME, C.LABEL_COMPONENT: C.COMPONENT_API}))
    kube.wait(f"pod {name} ready", lambda: _ready(kube.core("Pod", namespace, name)), 60,
              show=lambda: (kube.core("Pod", namespace, name) or {}).get("status"))
    return namespace, name


def _ready(pod: Optional[dict[str, Any]]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in ((pod or {}).get("status") or {}).get("conditions") or [])


def test_a_warm_pod_runs_before_its_sandbox_and_serves_it_as_the_same_process(kube: Kube, namespace: str, rte: str,
                                                                              on_real_node: RealNode) -> None:
    """A warm pod's container really runs before any sandbox exists; the sandbox it serves is that
    very container (same containerd task, same host PID and start time, no restart)."""
    kube.apply(pool("python", namespace, rte, minSize=1, maxSize=1))
    kube.wait("pool with 1 available", lambda: pool_status(kube, namespace, "python").get("availablePods") == 1, 120,
              show=lambda: pool_status(kube, namespace, "python"))
    (wp,) = warm_pods(kube, namespace, "python")
    before = _pod(kube, namespace, wp["status"]["podName"])
    assert before["spec"]["nodeName"] == NODE_NAME
    cs = _container(before)
    pid = on_real_node.host_pid(cs["containerID"])
    started = _start_time(pid)
    code, text = _exec(kube, namespace, before["metadata"]["name"], "cat", "/proc/1/uid_map")
    assert code == 0 and text.split()[:2] != ["0", "0"], text

    t0 = time.monotonic()
    kube.apply(warm_sandbox("quick", namespace, rte, "python"))
    sb = kube.wait_sandbox(namespace, "quick", "Running", ready=True, timeout=60)
    print(f"\nwarm start on the real node: apply -> Running + Ready in {time.monotonic() - t0:.2f}s")
    assert sb["status"]["warmPodUsed"] is True and sb["status"]["podName"] == before["metadata"]["name"], sb["status"]
    after = _pod(kube, namespace, sb["status"]["podName"])
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    now = _container(after)
    assert (now["containerID"], now["state"]["running"]["startedAt"], now["restartCount"]) == \
        (cs["containerID"], cs["state"]["running"]["startedAt"], 0), (cs, now)
    assert on_real_node.host_pid(now["containerID"]) == pid and _start_time(pid) == started, "not the process that was started warm"
    assert after["metadata"]["labels"][C.LABEL_SANDBOX_UID] == sb["metadata"]["uid"]


@pytest.mark.allow_errors(r"^BackOff: Pod/", r"^Unhealthy: Pod/")
def test_a_container_over_its_memory_limit_is_oom_killed_and_the_sandbox_says_so(kube: Kube, namespace: str, probe_rte: str,
                                                                                 on_real_node: RealNode) -> None:
    """The kernel kills the container's process at its memory limit: the kubelet reports
    OOMKilled, exit 137, and starts it again at once; killed a second time, the kubelet backs off
    (CrashLoopBackOff, 10 s) and meanwhile the sandbox's Ready condition says why, in the
    kubelet's words."""
    kube.apply(sandbox("hungry", namespace, probe_rte, resources={"cpu": "250m", "memory": "96Mi", "ephemeralStorage": "256Mi"}))
    kube.wait_sandbox(namespace, "hungry", "Running", ready=True, timeout=120)

    def allocate() -> None:
        try:
            _probe(kube, namespace, "sandbox-hungry", "/alloc", mb=512)
        except (urllib.error.HTTPError, urllib.error.URLError, OSError, RuntimeError):
            return  # the connection dies with the process
        raise AssertionError("allocating 512 MiB under a 96 MiB limit was answered")

    allocate()
    killed = kube.wait("the OOM kill reported", lambda: (lambda cs: cs if cs.get("restartCount", 0) >= 1 else None)(
        _container(_pod(kube, namespace, "sandbox-hungry"))), 60, show=lambda: _pod(kube, namespace, "sandbox-hungry")["status"])
    last = killed["lastState"]["terminated"]
    assert (last["reason"], last["exitCode"]) == ("OOMKilled", 137), killed
    kube.wait_sandbox(namespace, "hungry", "Running", ready=True, timeout=60)  # restarted at once, ready again

    allocate()
    sb = kube.wait("Ready says OOMKilled", lambda: (lambda s: s if "OOMKilled" in condition(s, "Ready").get("message", "") else None)(
        kube.custom("Sandbox", namespace, "hungry")), 30, interval=0.05,
        show=lambda: (kube.custom("Sandbox", namespace, "hungry") or {}).get("status"))
    ready = condition(sb, "Ready")
    print(f"\nwhat a user sees: Ready={ready['status']} {ready['reason']}: {ready['message']}")
    assert ready["status"] == "False" and "CrashLoopBackOff" in ready["message"] and "code 137" in ready["message"], ready
    waiting = _container(_pod(kube, namespace, "sandbox-hungry"))
    assert waiting["lastState"]["terminated"]["reason"] == "OOMKilled", waiting


@pytest.mark.allow_errors(r"^Failed: Pod/", r"^BackOff: Pod/")
def test_a_missing_image_is_reported_in_the_sandbox_status(kube: Kube, namespace: str, on_real_node: RealNode) -> None:
    """An image the node does not have and cannot pull (nothing is pulled here: containerd's
    proxy is a closed local port): the kubelet's ErrImagePull / ImagePullBackOff, naming the image,
    is the sandbox's Ready condition while it is Creating."""
    name = f"missing-e2e-{secrets.token_hex(3)}"
    kube.apply(_runtime(name, MISSING_IMAGE))
    try:
        kube.wait(f"runtime {name} validated", lambda: (kube.custom("RuntimeEnvironment", None, name) or {}).get("status"), 30)
        kube.apply(sandbox("unpullable", namespace, name, resources=SMALL))
        sb = kube.wait("Ready says the image cannot be pulled", lambda: (lambda s: s if condition(s, "Ready").get("reason") in (
            "ErrImagePull", "ImagePullBackOff") else None)(kube.custom("Sandbox", namespace, "unpullable")), 90,
            show=lambda: (kube.custom("Sandbox", namespace, "unpullable") or {}).get("status"))
        ready = condition(sb, "Ready")
        print(f"\nwhat a user sees: Ready={ready['reason']}: {ready['message']}")
        assert sb["status"]["phase"] == "Creating" and MISSING_IMAGE in ready["message"], ready
        pod = _pod(kube, namespace, "sandbox-unpullable")
        assert pod["spec"]["nodeName"] == NODE_NAME
        waiting = _container(pod)["state"]["waiting"]
        assert waiting["reason"] in ("ErrImagePull", "ImagePullBackOff") and MISSING_IMAGE in waiting.get("message", ""), waiting
    finally:
        kube.kubectl("delete", "runtimeenvironment", name, "--ignore-not-found", "--wait=false", check=False)


@pytest.fixture()
def isolation(kube: Kube, namespace: str, probe_rte: str, on_real_node: RealNode) -> Iterator[dict[str, Any]]:
    """Two probe sandboxes (a, b) in the test's tenant namespace, two plain probe pods in a
    namespace without policies, and a probe pod labelled as our API component in the release
    namespace, all on the real node with kube-network-policies enforcing."""
    reason = on_real_node.has("kube-network-policies")
    if reason:
        pytest.skip(reason)
    kube.apply(sandbox("a", namespace, probe_rte, resources=SMALL), sandbox("b", namespace, probe_rte, resources=SMALL))
    plain = f"e2e-plain-{secrets.token_hex(2)}"  # no policy there: its pods talk freely
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": plain}})
    api: Optional[tuple[str, str]] = None
    try:
        kube.apply(probe_pod("one", plain), probe_pod("two", plain))
        api = _api_pod(kube)
        ips = {n: _pod(kube, namespace, kube.wait_sandbox(namespace, n, "Running", ready=True, timeout=120)["status"]["podName"])
               ["status"]["podIP"] for n in ("a", "b")}
        for p in ("one", "two"):
            kube.wait(f"pod {p} ready", lambda p=p: _ready(kube.core("Pod", plain, p)), 60)
            ips[p] = _pod(kube, plain, p)["status"]["podIP"]
        ips["api"] = _pod(kube, api[0], api[1])["status"]["podIP"]
        yield {"ips": ips, "plain": plain, "api": api}
    finally:
        if api is not None:
            kube.kubectl("delete", "pod", api[1], "-n", api[0], "--wait=false", "--ignore-not-found", check=False)
        kube.kubectl("delete", "namespace", plain, "--wait=false", "--ignore-not-found", check=False)


def _connects(kube: Kube, namespace: str, pod: str, ip: str, port: int = 8080) -> bool:
    """Whether `pod` opens a TCP connection to ip:port (the probe's /connect, 2 s)."""
    return bool(_probe(kube, namespace, pod, "/connect", host=ip, port=port, timeout=2)["ok"])


def test_network_policies_hold_for_real_packets(kube: Kube, namespace: str, isolation: dict[str, Any]) -> None:
    """With an enforcer on the node (kube-network-policies), our sandboxes' NetworkPolicies act on
    packets: a sandbox reaches neither another sandbox nor an unrelated pod; an unrelated pod does
    not reach it; our API component reaches it on 8080. Between two pods no policy selects, the
    same connection goes through: a refusal is the policy's, not a broken network."""
    ips, plain, api = isolation["ips"], isolation["plain"], isolation["api"]
    assert _connects(kube, plain, "one", ips["two"]), "two unrelated pods do not reach each other: the network itself is broken"
    assert not _connects(kube, namespace, "sandbox-a", ips["b"]), "a sandbox reached another sandbox"
    assert not _connects(kube, namespace, "sandbox-a", ips["one"]), "a sandbox reached an unrelated pod (egress is denied by default)"
    assert not _connects(kube, plain, "one", ips["a"]), "an unrelated pod reached a sandbox"
    assert _connects(kube, api[0], api[1], ips["a"]), "the API component did not reach the sandbox on 8080"
    assert not _connects(kube, api[0], api[1], ips["a"], port=8081), "the API component reached a sandbox port other than 8080"


@pytest.fixture()
def stateful_enforcer() -> None:
    reason = stateless_enforcement()
    if reason:
        pytest.skip(reason)


def test_a_sandbox_reaches_the_api_component(kube: Kube, namespace: str, stateful_enforcer: None, isolation: dict[str, Any]) -> None:
    """The api-access policy's egress rule: a sandbox may call back into the API component (the
    answer comes back on the connection, which a stateful enforcer lets through)."""
    api = isolation["api"]
    assert _connects(kube, namespace, "sandbox-a", isolation["ips"]["api"]), f"the sandbox did not reach {api[0]}/{api[1]}"
