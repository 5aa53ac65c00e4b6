"""Cold sandboxes on the real control plane: creation to Running, what the API server holds,
steady state, ordered deletion with garbage collection, and every spec feature that shapes the
children (profile, security levels, storage, network rules, CPU pinning, lifetime)."""
from __future__ import annotations

import time
from typing import Any, Optional

from hooks import constants as C
from tests.e2e import fakenode
from tests.e2e.kube import Kube, condition, names
from tests.e2e.objects import CHILD_KINDS, children, endpoint_ips, owned_by, sandbox, selects



def resource_versions(kube: Kube, namespace: str, name: str) -> dict[str, str]:
    sb = kube.custom("Sandbox", namespace, name)
    assert sb is not None
    out = {f"Sandbox/{name}": sb["metadata"]["resourceVersion"]}
    for kind in CHILD_KINDS:
        for obj in kube.list(kind, namespace, f"{C.LABEL_SANDBOX_UID}={sb['metadata']['uid']}"):
            out[f"{kind}/{obj['metadata']['name']}"] = obj["metadata"]["resourceVersion"]
    return out


def test_cold_sandbox_from_apply_to_deletion(kube: Kube, namespace: str, rte: str) -> None:
    kube.apply(sandbox("alpha", namespace, rte))
    sb = kube.wait_sandbox(namespace, "alpha", "Running", ready=True, timeout=30)
    status, uid = sb["status"], sb["metadata"]["uid"]

    # Status as documented, and true: the pod it names runs.
    pod = kube.core("Pod", namespace, status["podName"])
    assert pod is not None and pod["status"]["phase"] == "Running"
    assert status["podName"] == "sandbox-alpha" and status["podNamespace"] == namespace
    assert status["serviceName"] == "sandbox-alpha" and status["endpoint"] == f"sandbox-alpha.{namespace}.svc.cluster.local"
    assert status["runtimeEnvironment"] == rte and status["securityLevel"] == "standard"
    assert status["observedGeneration"] == sb["metadata"]["generation"]
    assert status["startTime"] == pod["status"]["startTime"]
    assert condition(sb, "Validated")["status"] == "True" and condition(sb, "Ready")["reason"] == "PodReady"

    # Every child exists, is owned by the sandbox, and selects or is selected correctly.
    held = children(kube, namespace, uid)
    assert held == {"Pod": {"sandbox-alpha"}, "Service": {"sandbox-alpha"}, "ServiceAccount": {"sandbox-alpha"},
                    "PersistentVolumeClaim": set(),
                    "NetworkPolicy": {"sandbox-alpha-default-deny", "sandbox-alpha-api-access", "sandbox-alpha-dns"}}
    assert owned_by(pod, sb) and pod["spec"]["serviceAccountName"] == "sandbox-alpha"
    account = kube.core("ServiceAccount", namespace, "sandbox-alpha")
    assert account is not None and account["automountServiceAccountToken"] is False and owned_by(account, sb)
    service = kube.core("Service", namespace, "sandbox-alpha")
    assert service is not None and selects(service["spec"]["selector"], pod["metadata"]["labels"])
    for policy in kube.list("NetworkPolicy", namespace, f"{C.LABEL_SANDBOX_UID}={uid}"):
        assert owned_by(policy, sb) and selects(policy["spec"]["podSelector"]["matchLabels"], pod["metadata"]["labels"])
    # The Service routes to the pod: the endpoint-slice controller put its IP in as ready.
    kube.wait("the Service's endpoint", lambda: endpoint_ips(kube, namespace, "sandbox-alpha") == {pod["status"]["podIP"]}, 30,
              show=lambda: kube.list("EndpointSlice", namespace))

    # Steady state writes nothing: no status or child churn once Running.
    before = resource_versions(kube, namespace, "alpha")
    time.sleep(3)
    assert resource_versions(kube, namespace, "alpha") == before, "a Running sandbox kept being written"

    # Deletion: the pod goes first while the policies stay; then everything; no orphans.
    kube.kubectl("delete", "sandbox", "alpha", "-n", namespace, "--wait=false")
    policies = {"sandbox-alpha-default-deny", "sandbox-alpha-api-access", "sandbox-alpha-dns"}
    seen_terminating = False
    deadline = time.monotonic() + 60
    while kube.custom("Sandbox", namespace, "alpha") is not None:
        # Policies listed before the pod: a pod still there afterwards was there when they were
        # listed (listed the other way round, a pod gone in between looked like a policy gone first).
        held_policies = names(kube.list("NetworkPolicy", namespace, f"{C.LABEL_SANDBOX_UID}={uid}"))
        state = children(kube, namespace, uid)
        if state["Pod"]:
            assert held_policies == policies, f"a policy went before the pod: {held_policies}, then {state}"
        seen_terminating = seen_terminating or kube.sandbox_phase(namespace, "alpha") == "Terminating"
        assert time.monotonic() < deadline, f"sandbox not gone after 60s: {state}"
        time.sleep(0.05)
    kube.wait("every child gone (garbage collector)", lambda: not any(children(kube, namespace, uid).values()), 30,
              show=lambda: children(kube, namespace, uid))


def _pod(kube: Kube, namespace: str, sb: dict[str, Any]) -> dict[str, Any]:
    pod = kube.core("Pod", namespace, sb["status"]["podName"])
    assert pod is not None
    return pod


def test_spec_features_shape_the_children(kube: Kube, namespace: str, rte: str) -> None:
    """Each feature, all at once in one namespace (Pod Security "restricted" admits every pod)."""
    profile = {"apiVersion": "llmsafespace.dev/v1", "kind": "SandboxProfile", "metadata": {"name": "analysts", "namespace": namespace},
               "spec": {"language": "python", "securityLevel": "high",
                        "resourceDefaults": {"cpu": "750m", "memory": "768Mi"},
                        "networkPolicies": [{"type": "egress", "rules": [{"domain": "pypi.org", "ports": [{"port": 443}]}]}]}}
    specs: dict[str, dict[str, Any]] = {
        "profiled": {"profileRef": {"name": "analysts"}},
        "high": {"securityLevel": "high"},
        "custom": {"securityLevel": "custom", "securityContext": {
            "runAsUser": 2000, "runAsGroup": 3000, "seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/strict.json"}}},
        "keep": {"storage": {"persistent": True, "volumeSize": "1Gi", "retentionPolicy": "Retain"}},
        "drop": {"storage": {"persistent": True, "volumeSize": "1Gi"}},
        "egress": {"networkAccess": {"egress": [{"domain": "files.pythonhosted.org"}, {"cidr": "203.0.113.0/24", "ports": [{"port": 5432}]},
                                                 {"cidr": "::/0", "ports": [{"port": 443}]}]}},  # IPv6: the API server's ipBlock rules
        "ingress": {"networkAccess": {"ingress": True}},
        "pinned": {"resources": {"cpu": "2", "memory": "1Gi", "cpuPinning": True}},
    }
    kube.apply(profile, *(sandbox(n, namespace, rte, **s) for n, s in specs.items()))
    sbs = {n: kube.wait_sandbox(namespace, n, "Running", ready=True, timeout=60) for n in specs}
    pods = {n: _pod(kube, namespace, sb) for n, sb in sbs.items()}

    # Profile: its level, resources and egress rule; status names it.
    assert sbs["profiled"]["status"]["profile"].endswith("analysts") and sbs["profiled"]["status"]["securityLevel"] == "high"
    assert pods["profiled"]["spec"]["runtimeClassName"] == fakenode.RUNTIME_CLASS
    assert pods["profiled"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "750m"
    assert kube.core("NetworkPolicy", namespace, "sandbox-profiled-egress") is not None
    # Security levels: gVisor's RuntimeClass, or the Localhost seccomp profile and the user's ids.
    assert pods["high"]["spec"]["runtimeClassName"] == fakenode.RUNTIME_CLASS
    custom = pods["custom"]["spec"]
    assert custom["securityContext"]["seccompProfile"] == {"type": "Localhost", "localhostProfile": "profiles/strict.json"}
    assert (custom["securityContext"]["runAsUser"], custom["securityContext"]["runAsGroup"]) == (2000, 3000)
    # Storage: a bound claim mounted at /data, through the class that matches the retention policy.
    for n, klass in (("keep", fakenode.RETAIN_STORAGE_CLASS), ("drop", fakenode.STORAGE_CLASS)):
        claim = kube.core("PersistentVolumeClaim", namespace, f"sandbox-{n}-data")
        assert claim is not None and claim["status"]["phase"] == "Bound" and claim["spec"]["storageClassName"] == klass
        mounts = {m["mountPath"]: m["name"] for m in pods[n]["spec"]["containers"][0]["volumeMounts"]}
        assert "/data" in mounts
    # Network rules: their own policies, selecting the pod.
    egress = kube.core("NetworkPolicy", namespace, "sandbox-egress-egress")
    assert egress is not None and {r["to"][0]["ipBlock"]["cidr"] for r in egress["spec"]["egress"]} >= {"0.0.0.0/0", "203.0.113.0/24", "2000::/3"}
    assert kube.core("NetworkPolicy", namespace, "sandbox-ingress-ingress") is not None
    assert kube.core("NetworkPolicy", namespace, "sandbox-egress-ingress") is None
    # CPU pinning: scheduled onto the node that offers it.
    assert pods["pinned"]["spec"]["nodeSelector"] == {"cpu-pinning": "true"}
    assert pods["pinned"]["spec"]["nodeName"] == fakenode.PINNED_NODE

    # Deleting: the Retain volume outlives its sandbox as a Released PersistentVolume, the
    # Delete one goes with its claim.
    volumes = {n: kube.core("PersistentVolumeClaim", namespace, f"sandbox-{n}-data")["spec"]["volumeName"] for n in ("keep", "drop")}
    kube.kubectl("delete", "sandbox", "keep", "drop", "-n", namespace, "--wait=false")
    for n in ("keep", "drop"):
        kube.wait_gone("Sandbox", namespace, n)
        kube.wait_gone("PersistentVolumeClaim", namespace, f"sandbox-{n}-data")
    kube.wait_gone("PersistentVolume", None, volumes["drop"])
    kept = kube.wait("the retained volume Released", lambda: _released(kube, volumes["keep"]), 30)
    assert kept["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    kube.cp.remove_volume_dirs(volumes["keep"])
    kube.kubectl("delete", "pv", volumes["keep"], "--wait=false")


def _released(kube: Kube, name: str) -> Optional[dict[str, Any]]:
    pv = kube.core("PersistentVolume", None, name)
    return pv if pv and pv["status"].get("phase") == "Released" else None


def test_lifetime_ends_a_sandbox_and_keeps_the_object(kube: Kube, namespace: str, rte: str) -> None:
    kube.apply(sandbox("brief", namespace, rte, lifetimeSeconds=4))
    running = kube.wait_sandbox(namespace, "brief", "Running", ready=True, timeout=30)
    assert running["status"]["expiresAt"]
    ended = kube.wait_sandbox(namespace, "brief", "Terminated", ready=False, timeout=30)
    assert condition(ended, "Ready")["reason"] == "LifetimeExpired"
    kube.wait("its children gone", lambda: not any(children(kube, namespace, ended["metadata"]["uid"]).values()), 30,
              show=lambda: children(kube, namespace, ended["metadata"]["uid"]))
    assert kube.custom("Sandbox", namespace, "brief") is not None, "the object stays for inspection"


def test_metadata_at_kubernetes_limits_is_served(kube: Kube, namespace: str, rte: str) -> None:
    """The hook server's metadata limits (hooks/server/wire.py) are Kubernetes' own: a Sandbox the API
    server accepts with a 253-character name, label keys and values at their maximum and 200 KB
    of annotations is served like any other, its labels copied to the pod (never a 400)."""
    name = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
    key = ".".join(["p" * 63, "q" * 63, "r" * 63, "s" * 61]) + "/" + "n" * 63
    obj = sandbox(name, namespace, rte)
    obj["metadata"]["labels"] = {key: "v" * 63, "team": "data"}
    obj["metadata"]["annotations"] = {"example.com/notes": "x" * 200_000}
    kube.create(obj)  # POST: no last-applied annotation doubling the annotations
    sb = kube.wait_sandbox(namespace, name, "Running", ready=True, timeout=30)
    pod = _pod(kube, namespace, sb)
    assert pod["metadata"]["labels"][key] == "v" * 63 and pod["metadata"]["labels"]["team"] == "data"
    log = (kube.cp.logs / "hooks.log").read_text(errors="replace")
    assert "MalformedRequest" not in log, [line for line in log.splitlines() if "MalformedRequest" in line][:3]
