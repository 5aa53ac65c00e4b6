"""Bad input loses nothing, on the real control plane: the CRDs refuse what they can at apply,
an invalid edit or a vanished runtime or profile keeps a running sandbox's pod and volume and
only reports why, and status says what a failed pod is."""
from __future__ import annotations

import json
import secrets
import time
from typing import Any

import pytest

from hooks import constants as C
from tests.e2e import fakenode
from tests.e2e.kube import Kube, condition
from tests.e2e.objects import runtime, sandbox


def _uids(kube: Kube, namespace: str, name: str) -> dict[str, str]:
    """UIDs of the sandbox's pod and claim: the same UIDs mean never replaced."""
    out = {}
    for kind, child in (("Pod", f"sandbox-{name}"), ("PersistentVolumeClaim", f"sandbox-{name}-data")):
        obj = kube.core(kind, namespace, child)
        assert obj is not None and not obj["metadata"].get("deletionTimestamp"), f"{kind} {child} is gone or going"
        out[kind] = obj["metadata"]["uid"]
    return out


def _patch(kube: Kube, namespace: str, name: str, spec: dict[str, Any], check: bool = True) -> str:
    return kube.kubectl("patch", "sandbox", name, "-n", namespace, "--type=merge", "-p", json.dumps({"spec": spec}), check=check)


def _validated(kube: Kube, namespace: str, name: str, status: str, reason: str) -> dict[str, Any]:
    return kube.wait(f"Validated {status}/{reason}", lambda: (lambda sb: sb if condition(sb, "Validated").get("status") == status
                     and condition(sb, "Validated").get("reason") == reason else None)(kube.custom("Sandbox", namespace, name)), 30,
                     show=lambda: (kube.custom("Sandbox", namespace, name) or {}).get("status"))


def test_invalid_edits_and_vanished_inputs_keep_the_pod_and_volume(kube: Kube, namespace: str, rte: str) -> None:
    profile = {"apiVersion": "llmsafespace.dev/v1", "kind": "SandboxProfile", "metadata": {"name": "base", "namespace": namespace},
               "spec": {"language": "python", "resourceDefaults": {"cpu": "300m", "memory": "300Mi"}}}
    kube.apply(profile, sandbox("keeper", namespace, rte, profileRef={"name": "base"}, storage={"persistent": True, "volumeSize": "1Gi"}))
    kube.wait_sandbox(namespace, "keeper", "Running", ready=True, timeout=60)
    held = _uids(kube, namespace, "keeper")

    # An edit to a runtime that does not exist: reported, nothing replaced.
    _patch(kube, namespace, "keeper", {"runtime": "cobol-85"})
    sb = _validated(kube, namespace, "keeper", "False", "RuntimeNotFound")
    assert sb["status"]["phase"] == "Running" and condition(sb, "Ready")["status"] == "True", sb["status"]
    assert _uids(kube, namespace, "keeper") == held
    _patch(kube, namespace, "keeper", {"runtime": rte})
    _validated(kube, namespace, "keeper", "True", "Valid")

    # The profile deleted under it.
    kube.kubectl("delete", "sandboxprofile", "base", "-n", namespace)
    sb = _validated(kube, namespace, "keeper", "False", "ProfileNotFound")
    assert sb["status"]["phase"] == "Running" and _uids(kube, namespace, "keeper") == held
    kube.apply(profile)
    _validated(kube, namespace, "keeper", "True", "Valid")

    # The runtime deleted under it: still running, still the same pod and volume.
    kube.kubectl("delete", "runtimeenvironment", rte)
    sb = _validated(kube, namespace, "keeper", "False", "RuntimeNotFound")
    assert sb["status"]["phase"] == "Running" and _uids(kube, namespace, "keeper") == held
    kube.apply(runtime(rte))
    _validated(kube, namespace, "keeper", "True", "Valid")
    assert _uids(kube, namespace, "keeper") == held


def test_an_unusable_spec_keeps_the_isolation_of_its_running_pod(kube: Kube, namespace: str, rte: str) -> None:
    """Issue 13, items 3 and 4: the metadata service spelt in IPv6 is refused like its IPv4 form,
    and a default-deny deleted while the spec is invalid comes back, the pod untouched."""
    kube.apply(sandbox("guarded", namespace, rte))
    kube.wait_sandbox(namespace, "guarded", "Running", ready=True, timeout=60)
    pod_uid = kube.core("Pod", namespace, "sandbox-guarded")["metadata"]["uid"]  # type: ignore[index]
    _patch(kube, namespace, "guarded", {"networkAccess": {"egress": [{"cidr": "::ffff:169.254.169.254/128"}]}})
    sb = _validated(kube, namespace, "guarded", "False", "InvalidSpec")
    assert "spells IPv4 addresses in IPv6" in condition(sb, "Validated")["message"], sb["status"]
    policy = "sandbox-guarded-default-deny"
    old = kube.core("NetworkPolicy", namespace, policy)
    assert old is not None
    kube.kubectl("delete", "networkpolicy", policy, "-n", namespace)
    back = kube.wait("default-deny recreated", lambda: (lambda np: np if np and np["metadata"]["uid"] != old["metadata"]["uid"] else None)(
        kube.core("NetworkPolicy", namespace, policy)), 30)
    assert back["spec"]["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in back["spec"] and "egress" not in back["spec"]
    assert kube.core("Pod", namespace, "sandbox-guarded")["metadata"]["uid"] == pod_uid  # type: ignore[index]
    sb = kube.custom("Sandbox", namespace, "guarded")
    assert sb is not None and sb["status"]["phase"] == "Running" and condition(sb, "Validated")["reason"] == "InvalidSpec"


@pytest.mark.parametrize("spec,message", [
    ({"securityContext": {"runAsUser": 0}}, "should be greater than or equal to 1"),
    ({"securityLevel": "root"}, "Unsupported value"),
    ({"networkAccess": {"egress": [{"domain": "pypi.org", "cidr": "203.0.113.0/24"}]}}, "exactly one of domain or cidr"),
    ({"filesystem": {"readOnlyRoot": False}}, "readOnlyRoot cannot be disabled"),
    ({"securityContext": {"seccompProfile": {"type": "Localhost"}}}, "Localhost needs localhostProfile"),
    ({"resources": {"cpu": "1500m", "cpuPinning": True}}, "cpuPinning needs a whole number of CPUs in resources.cpu"),
], ids=["root-user", "unknown-level", "domain-and-cidr", "writable-root", "localhost-without-profile", "pinning-fractional-cpu"])
def test_the_crd_refuses_what_it_can_at_apply(kube: Kube, namespace: str, rte: str, spec: dict[str, Any], message: str) -> None:
    proc = kube.cp.kubectl("apply", "-f", "-", input=json.dumps(sandbox("refused", namespace, rte, **spec)), check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
    assert kube.custom("Sandbox", namespace, "refused") is None


def test_turning_persistence_off_is_refused_and_the_volume_stays(kube: Kube, namespace: str, rte: str) -> None:
    kube.apply(sandbox("data", namespace, rte, storage={"persistent": True, "volumeSize": "1Gi"}))
    kube.wait_sandbox(namespace, "data", "Running", ready=True, timeout=60)
    held = _uids(kube, namespace, "data")
    proc = kube.cp.kubectl("patch", "sandbox", "data", "-n", namespace, "--type=merge", "-p",
                           json.dumps({"spec": {"storage": {"persistent": False}}}), check=False)
    assert proc.returncode != 0 and "storage.persistent cannot change after creation" in proc.stderr, proc.stderr
    assert _uids(kube, namespace, "data") == held


def test_a_new_sandbox_that_cannot_run_fails_with_its_reason(kube: Kube, namespace: str, rte: str) -> None:
    kube.apply(sandbox("orphan", namespace, rte, profileRef={"name": "missing"}),
               sandbox("early", namespace, f"not-yet-{secrets.token_hex(2)}"),
               # The CRD cannot see the default CPU (500m): the hook refuses what pinning cannot pin.
               sandbox("unpinnable", namespace, rte, resources={"cpuPinning": True}))
    orphan = kube.wait_sandbox(namespace, "orphan", "Failed", ready=False, timeout=30)
    assert condition(orphan, "Validated")["reason"] == "ProfileNotFound" and "missing" in condition(orphan, "Validated")["message"]
    early = kube.wait_sandbox(namespace, "early", "Failed", ready=False, timeout=30)
    assert condition(early, "Validated")["reason"] == "RuntimeNotFound"
    unpinnable = kube.wait_sandbox(namespace, "unpinnable", "Failed", ready=False, timeout=30)
    assert condition(unpinnable, "Validated")["reason"] == "InvalidSpec"
    assert "cpuPinning needs a whole number of CPUs" in condition(unpinnable, "Validated")["message"]
    for name in ("orphan", "early", "unpinnable"):
        assert kube.core("Pod", namespace, f"sandbox-{name}") is None


def test_status_says_what_the_pod_went_through(kube: Kube, namespace: str, rte: str) -> None:
    """The fake kubelet reports an out-of-memory kill (the pod restarts: not ready): the sandbox's
    status says so, in the kubelet's own words."""
    kube.apply(sandbox("oom", namespace, rte))
    kube.wait_sandbox(namespace, "oom", "Running", ready=True, timeout=60)
    kube.kubectl("annotate", "pod", "sandbox-oom", "-n", namespace, f"{fakenode.FAIL_ANNOTATION}=OOMKilled")
    oom = kube.wait_sandbox(namespace, "oom", "Running", ready=False, timeout=30)
    ready = condition(oom, "Ready")
    assert ready["reason"] == "PodNotReady" and "CrashLoopBackOff" in ready["message"] and "OOMKilled" in ready["message"], ready


def test_an_evicted_pod_is_replaced_and_its_volume_stays(kube: Kube, namespace: str, rte: str) -> None:
    """An eviction fails the pod (phase Failed): the sandbox gets a new pod on the same volume,
    counts it in status.restarts and runs again."""
    kube.apply(sandbox("evicted", namespace, rte, storage={"persistent": True, "volumeSize": "1Gi"}))
    kube.wait_sandbox(namespace, "evicted", "Running", ready=True, timeout=60)
    held = _uids(kube, namespace, "evicted")
    kube.kubectl("annotate", "pod", "sandbox-evicted", "-n", namespace, f"{fakenode.FAIL_ANNOTATION}=Evicted")
    replaced = kube.wait("a new pod, counted", lambda: (lambda sb: sb if (sb or {}).get("status", {}).get("restarts") == 1
                         and sb["status"].get("phase") == "Running" and condition(sb, "Ready").get("status") == "True" else None)(
                         kube.custom("Sandbox", namespace, "evicted")), 60,
                         show=lambda: (kube.custom("Sandbox", namespace, "evicted") or {}).get("status"))
    now = _uids(kube, namespace, "evicted")
    assert now["Pod"] != held["Pod"] and now["PersistentVolumeClaim"] == held["PersistentVolumeClaim"], (held, now)
    pod = kube.core("Pod", namespace, "sandbox-evicted")
    assert pod is not None and pod["metadata"]["annotations"]["llmsafespace.dev/restarts"] == "1"
    assert replaced["status"]["podName"] == "sandbox-evicted"


def _spec_applied(kube: Kube, namespace: str, name: str, status: str, reason: str) -> dict[str, Any]:
    return kube.wait(f"SpecApplied {status}/{reason}", lambda: (lambda sb: sb if condition(sb, "SpecApplied").get("status") == status
                     and condition(sb, "SpecApplied").get("reason") == reason and sb["status"].get("phase") == "Running"
                     and condition(sb, "Ready").get("status") == "True" else None)(kube.custom("Sandbox", namespace, name)), 60,
                     show=lambda: (kube.custom("Sandbox", namespace, name) or {}).get("status"))


def test_a_level_edit_is_reported_until_a_requested_replacement_applies_it(kube: Kube, namespace: str, rte: str) -> None:
    """Pods are immutable: an edit from standard to high leaves the running pod as it is, and
    status says so (level of the pod that runs, SpecApplied=False naming the difference). The
    replace-pod annotation replaces the pod once, on the same volume, with the new level."""
    kube.apply(sandbox("upgraded", namespace, rte, storage={"persistent": True, "volumeSize": "1Gi"}))
    kube.wait_sandbox(namespace, "upgraded", "Running", ready=True, timeout=60)
    held = _uids(kube, namespace, "upgraded")
    _patch(kube, namespace, "upgraded", {"securityLevel": "high"})
    sb = _spec_applied(kube, namespace, "upgraded", "False", "PodOutdated")
    message = condition(sb, "SpecApplied")["message"]
    print(f"\nwhat a user sees: SpecApplied=PodOutdated: {message}")
    assert "securityLevel: runs standard, spec asks high" in message and C.ANNOTATION_REPLACE_POD in message
    assert sb["status"]["securityLevel"] == "standard", "status describes the pod that runs"
    assert _uids(kube, namespace, "upgraded") == held
    pod = kube.core("Pod", namespace, "sandbox-upgraded")
    assert pod is not None and "runtimeClassName" not in pod["spec"]

    kube.kubectl("annotate", "sandbox", "upgraded", "-n", namespace, f"{C.ANNOTATION_REPLACE_POD}=e2e-1")
    kube.wait("a new pod", lambda: (lambda p: p if p and p["metadata"]["uid"] != held["Pod"] and not p["metadata"].get("deletionTimestamp")
                                    else None)(kube.core("Pod", namespace, "sandbox-upgraded")), 60)
    sb = _spec_applied(kube, namespace, "upgraded", "True", "PodUpToDate")
    now = _uids(kube, namespace, "upgraded")
    assert now["Pod"] != held["Pod"] and now["PersistentVolumeClaim"] == held["PersistentVolumeClaim"], (held, now)
    pod = kube.core("Pod", namespace, "sandbox-upgraded")
    assert pod is not None and pod["spec"]["runtimeClassName"] == fakenode.RUNTIME_CLASS
    assert pod["metadata"]["annotations"][C.ANNOTATION_REPLACE_POD] == "e2e-1"
    assert sb["status"]["securityLevel"] == "high" and sb["status"]["replacePodToken"] == "e2e-1" and "restarts" not in sb["status"]
    time.sleep(3)  # once: the new pod stays
    assert _uids(kube, namespace, "upgraded") == now


def test_a_pod_that_cannot_pull_its_image_says_so_then_fails_at_its_startup_deadline(kube: Kube, namespace: str, rte: str) -> None:
    kube.apply(sandbox("unpullable", namespace, rte, startupTimeoutSeconds=10, storage={"persistent": True, "volumeSize": "1Gi"}))
    kube.wait("the pod", lambda: kube.core("Pod", namespace, "sandbox-unpullable"), 30)
    kube.kubectl("annotate", "pod", "sandbox-unpullable", "-n", namespace, f"{fakenode.FAIL_ANNOTATION}=ImagePullBackOff")
    stuck = kube.wait("Ready says ImagePullBackOff", lambda: (lambda sb: sb if condition(sb, "Ready").get("reason") == "ImagePullBackOff"
                      else None)(kube.custom("Sandbox", namespace, "unpullable")), 30,
                      show=lambda: (kube.custom("Sandbox", namespace, "unpullable") or {}).get("status"))
    assert stuck["status"]["phase"] == "Creating" and "Back-off pulling image" in condition(stuck, "Ready")["message"]
    held = _uids(kube, namespace, "unpullable")
    # Nothing changes on the pod any more: only the hook's resyncAfterSeconds brings the deadline.
    failed = kube.wait_sandbox(namespace, "unpullable", "Failed", ready=False, timeout=30)
    ready = condition(failed, "Ready")
    assert ready["reason"] == "StartupTimeout" and "ImagePullBackOff" in ready["message"], ready
    print(f"\nwhat a user sees: Ready={ready['reason']}: {ready['message']}")
    assert _uids(kube, namespace, "unpullable") == held, "the pod and the volume are kept"


# Metacontroller logs the refusal and records it as a SyncError event on the sandbox: that is the
# API server's answer, which the ChildrenCreated condition points to.
REFUSED = (r"exceeded quota", r'RuntimeClass \\?"gvisor\\?" not found', r"SyncError")


@pytest.mark.allow_errors(*REFUSED)
@pytest.mark.parametrize("namespace", [{"llmsafespace.dev/quota-cpu": "1"}], indirect=True)
def test_a_pod_refused_for_quota_is_named_with_its_likely_causes(kube: Kube, namespace: str, rte: str) -> None:
    kube.apply(sandbox("greedy", namespace, rte, resources={"cpu": "2"}))
    sb = kube.wait("ChildNotCreated", lambda: (lambda s: s if condition(s, "ChildrenCreated").get("reason") == "ChildNotCreated" else None)(
        kube.custom("Sandbox", namespace, "greedy")), 60, show=lambda: (kube.custom("Sandbox", namespace, "greedy") or {}).get("status"))
    message = condition(sb, "ChildrenCreated")["message"]
    print(f"\nwhat a user sees (quota): ChildrenCreated=ChildNotCreated: {message}")
    assert "Pod sandbox-greedy" in message and "ResourceQuota" in message and f"kubectl describe sandbox greedy -n {namespace}" in message
    assert sb["status"]["phase"] == "Creating" and condition(sb, "Ready")["reason"] == "PodNotCreated"
    events = [e for e in kube.events(namespace) if e.get("involvedObject", {}).get("name") == "greedy"]
    assert any("exceeded quota" in (e.get("message") or "") for e in events), [e.get("message") for e in events]


@pytest.mark.allow_errors(*REFUSED)
def test_a_pod_refused_for_a_missing_runtime_class_is_named_with_its_likely_causes(kube: Kube, namespace: str, rte: str) -> None:
    kube.kubectl("delete", "runtimeclass", fakenode.RUNTIME_CLASS)
    try:
        kube.apply(sandbox("isolated", namespace, rte, securityLevel="high"))
        sb = kube.wait("ChildNotCreated", lambda: (lambda s: s if condition(s, "ChildrenCreated").get("reason") == "ChildNotCreated" else None)(
            kube.custom("Sandbox", namespace, "isolated")), 60, show=lambda: (kube.custom("Sandbox", namespace, "isolated") or {}).get("status"))
        message = condition(sb, "ChildrenCreated")["message"]
        print(f"\nwhat a user sees (RuntimeClass): ChildrenCreated=ChildNotCreated: {message}")
        assert "Pod sandbox-isolated" in message and f'RuntimeClass "{fakenode.RUNTIME_CLASS}" does not exist' in message
    finally:
        kube.apply({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": fakenode.RUNTIME_CLASS}, "handler": "runsc"})
    # Once the RuntimeClass exists, the next creation attempt (every 5 s) succeeds.
    sb = kube.wait_sandbox(namespace, "isolated", "Running", ready=True, timeout=60)
    assert condition(sb, "ChildrenCreated")["status"] == "True"


def test_runtime_and_profile_status_say_why_they_cannot_be_used(kube: Kube, namespace: str) -> None:
    bad_runtime = runtime(f"python-e2e-bad-{secrets.token_hex(2)}")
    bad_runtime["spec"]["packageManager"] = "cargo"  # not a Python package manager
    profile = {"apiVersion": "llmsafespace.dev/v1", "kind": "SandboxProfile", "metadata": {"name": "ancient", "namespace": namespace},
               "spec": {"language": "cobol"}}  # no runtime of that language
    kube.apply(bad_runtime, profile)
    try:
        name = bad_runtime["metadata"]["name"]
        rte = kube.wait("runtime verdict", lambda: (lambda r: r if "available" in (r or {}).get("status", {}) else None)(
            kube.custom("RuntimeEnvironment", None, name)), 30)
        assert rte["status"]["available"] is False
        assert condition(rte, "Available")["reason"] == "CompatibilityCheckFailed" and "cargo" in condition(rte, "Available")["message"]
        prof = kube.wait("profile verdict", lambda: (lambda p: p if "validated" in (p or {}).get("status", {}) else None)(
            kube.custom("SandboxProfile", namespace, "ancient")), 30)
        assert prof["status"]["validated"] is False and condition(prof, "Validated")["reason"] == "RuntimeValidationFailed"
        kube.apply(sandbox("on-bad-runtime", namespace, name))
        sb = kube.wait_sandbox(namespace, "on-bad-runtime", "Failed", ready=False, timeout=30)
        assert condition(sb, "Validated")["reason"] == "RuntimeUnavailable"
    finally:
        kube.kubectl("delete", "runtimeenvironment", bad_runtime["metadata"]["name"], "--wait=false", check=False)
