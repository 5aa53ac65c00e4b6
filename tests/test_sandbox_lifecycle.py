"""Table tests of a sandbox pod's lifecycle (issue 12): a pod that cannot start says why and fails
at its startup deadline; a child the API server refuses is named; a failed pod is replaced a bounded
number of times, counted in status even when status is stale; a warm-served sandbox whose warm pod
fails goes on cold without ever going back to Pending."""
from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any, Optional

import pytest

from hooks import constants as C
from hooks.config import Config
from hooks import sandbox_sync
from tests import sandbox_cases as cases
from tests.factory import NOW, observed, running_pod_status, sandbox, sync_request

RTE = cases.RTE
POD_CREATED = NOW - timedelta(seconds=5)  # tests.factory.observed stamps children 11:59:55


def cond(response: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in response["status"]["conditions"] if c["type"] == type_)


def kinds(response: dict[str, Any]) -> set[tuple[str, str]]:
    return {(c["kind"], c["metadata"]["name"]) for c in response["children"]}


def with_pod(parent: dict[str, Any], pod_status: dict[str, Any], *, restarts: Optional[int] = None) -> dict[str, Any]:
    """A sync of `parent` whose children all exist, its pod with `pod_status` (and, when given, the
    restart number the pod was created as)."""
    fresh = {k: v for k, v in parent.items() if k != "status"}  # children as a first settle makes them
    children = cases._children_of(fresh, **pod_status)
    for child in children:
        if child["kind"] == "Pod" and restarts is not None:
            child["metadata"]["annotations"][C.ANNOTATION_POD_RESTARTS] = str(restarts)
    return sync_request(parent, children=children, related=[RTE])


def waiting(reason: str, message: str) -> dict[str, Any]:
    return {
        "phase": "Pending", "startTime": "2026-11-22T11:59:56Z",
        "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False", "reason": "ContainersNotReady"}],
        "containerStatuses": [{"name": "sandbox", "ready": False, "restartCount": 0, "state": {"waiting": {"reason": reason, "message": message}}}],
    }


UNSCHEDULABLE = {
    "phase": "Pending",
    "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                    "message": "0/2 nodes are available: 2 Insufficient cpu. preemption: 0/2 nodes are available"}],
}
EVICTED = {"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."}


# ---------------------------------------------------------------------------------------------
# Item 6: a pod that never starts


@pytest.mark.parametrize("pod_status, reason, words", [
    (waiting("ImagePullBackOff", 'Back-off pulling image "ghcr.io/x:1"'), "ImagePullBackOff", 'Back-off pulling image "ghcr.io/x:1"'),
    (waiting("CreateContainerConfigError", 'secret "token" not found'), "CreateContainerConfigError", 'secret "token" not found'),
    (waiting("CreateContainerError", "failed to create containerd container: cannot load seccomp profile "
             '"/var/lib/kubelet/seccomp/profiles/strict.json": open: no such file or directory'), "CreateContainerError", "seccomp profile"),
    (UNSCHEDULABLE, "Unschedulable", "2 Insufficient cpu"),
], ids=["image-pull", "config-error", "seccomp-profile-missing", "unschedulable"])
def test_a_pod_that_cannot_start_says_why_and_schedules_its_deadline(pod_status: dict[str, Any], reason: str, words: str) -> None:
    out = sandbox_sync.sync(with_pod(sandbox("stuck"), pod_status), NOW)
    ready = cond(out, "Ready")
    assert out["status"]["phase"] == "Creating"
    assert (ready["status"], ready["reason"]) == ("False", reason) and words in ready["message"], ready
    # Nothing else would wake the hook up at the deadline: the pod's status no longer changes.
    assert out["resyncAfterSeconds"] == C.DEFAULT_STARTUP_TIMEOUT_SECONDS - 5


def test_a_pod_that_never_starts_fails_at_its_deadline_and_keeps_pod_and_volume() -> None:
    parent = sandbox("stuck", spec={"startupTimeoutSeconds": 60, "storage": {"persistent": True}})
    request = with_pod(parent, waiting("ImagePullBackOff", "Back-off pulling image"))
    before = sandbox_sync.sync(request, NOW)
    assert before["status"]["phase"] == "Creating" and before["resyncAfterSeconds"] == 55
    late = sandbox_sync.sync(request, POD_CREATED + timedelta(seconds=60))
    assert late["status"]["phase"] == "Failed"
    ready = cond(late, "Ready")
    assert ready["reason"] == "StartupTimeout" and "60s" in ready["message"] and "ImagePullBackOff" in ready["message"], ready
    assert kinds(late) == kinds(before), "the pod and the volume are never deleted for it"
    assert ("PersistentVolumeClaim", "sandbox-stuck-data") in kinds(late)
    # Should the pod start after all (the image appeared), status says what runs.
    started = sandbox_sync.sync(with_pod(parent, running_pod_status()), POD_CREATED + timedelta(seconds=120))
    assert started["status"]["phase"] == "Running"


def test_a_container_restarted_in_place_leaves_its_trace_in_status() -> None:
    """Found on the real node: after one OOM kill the kubelet restarts the container at once and
    the sandbox is Ready again within seconds; status.containerRestarts and lastTermination keep
    what happened (the pod is not replaced: status.restarts stays absent)."""
    restarted = {**running_pod_status(), "containerStatuses": [{
        "name": "sandbox", "ready": True, "restartCount": 1, "state": {"running": {"startedAt": "2026-11-22T11:59:59Z"}},
        "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137, "finishedAt": "2026-11-22T11:59:58Z",
                                     "containerID": "containerd://x"}}}]}
    out = sandbox_sync.sync(with_pod(sandbox("oom-once"), restarted), NOW)
    assert out["status"]["phase"] == "Running" and cond(out, "Ready")["status"] == "True"
    assert out["status"]["containerRestarts"] == 1
    assert out["status"]["lastTermination"] == {"reason": "OOMKilled", "exitCode": 137, "finishedAt": "2026-11-22T11:59:58Z"}
    assert "restarts" not in out["status"]
    never = sandbox_sync.sync(with_pod(sandbox("fine"), {**running_pod_status(), "containerStatuses": [
        {"name": "sandbox", "ready": True, "restartCount": 0, "state": {"running": {}}}]}), NOW)
    assert "containerRestarts" not in never["status"] and "lastTermination" not in never["status"]
    # Another container's restarts (the egress proxy's sidecar, an init container) are not the sandbox's.
    other = sandbox_sync.sync(with_pod(sandbox("other"), {**running_pod_status(), "containerStatuses": [
        {"name": "sidecar", "ready": True, "restartCount": 4}]}), NOW)
    assert "containerRestarts" not in other["status"]


def test_a_running_pod_that_is_not_ready_says_what_the_kubelet_says() -> None:
    crashing = {**running_pod_status(ready=False), "containerStatuses": [{
        "name": "sandbox", "ready": False, "restartCount": 3,
        "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}},
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}}}]}
    out = sandbox_sync.sync(with_pod(sandbox("oom"), crashing), NOW)
    ready = cond(out, "Ready")
    assert out["status"]["phase"] == "Running" and ready["reason"] == "PodNotReady"
    assert "CrashLoopBackOff" in ready["message"] and "OOMKilled" in ready["message"], ready


# ---------------------------------------------------------------------------------------------
# Item 7: a child the API server refuses


def _missing_pod(status: Optional[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    """A sandbox whose every child exists except its pod (the API server refused it)."""
    parent = sandbox("refused", spec=spec or None, status=status)
    children = [c for c in cases._children_of(parent, **running_pod_status()) if c["kind"] != "Pod"]
    return sync_request(parent, children=children, related=[RTE])


def _since(seconds: int) -> dict[str, Any]:
    """The status an earlier sync wrote: children missing since NOW - seconds."""
    stamp = (NOW - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"phase": "Creating", "conditions": [
        {"type": "ChildrenCreated", "status": "False", "reason": "ChildrenCreating", "message": "x", "lastTransitionTime": stamp}]}


def test_a_child_still_missing_after_the_grace_period_is_named_with_likely_causes() -> None:
    early = sandbox_sync.sync(_missing_pod(_since(5)), NOW)
    assert cond(early, "ChildrenCreated")["reason"] == "ChildrenCreating" and cond(early, "Ready")["reason"] == "PodCreating"
    late = sandbox_sync.sync(_missing_pod(_since(C.DEFAULT_CHILD_CREATE_GRACE_SECONDS), securityLevel="high"), NOW)
    children = cond(late, "ChildrenCreated")
    assert (children["status"], children["reason"]) == ("False", "ChildNotCreated"), children
    for words in ("Pod sandbox-refused", "ResourceQuota", 'RuntimeClass "gvisor"', "Pod Security", "kubectl describe sandbox refused"):
        assert words in children["message"], children["message"]
    ready = cond(late, "Ready")
    assert ready["reason"] == "PodNotCreated" and ready["message"] == children["message"]
    assert late["status"]["phase"] == "Creating" and late["resyncAfterSeconds"] == sandbox_sync.CREATE_POLL_SECONDS
    # The transition time is when the children went missing, so the grace period is measured.
    assert children["lastTransitionTime"] == _since(C.DEFAULT_CHILD_CREATE_GRACE_SECONDS)["conditions"][0]["lastTransitionTime"]


@pytest.mark.parametrize("grace", [6, 120])
def test_the_grace_period_is_the_operators_setting(grace: int) -> None:
    """LLMSS_CHILD_CREATE_GRACE_SECONDS: reported exactly from `grace` seconds on, and the message
    says how long it waited."""
    config = Config(child_create_grace_seconds=grace)
    before = sandbox_sync.sync(_missing_pod(_since(grace - 1)), NOW, config)
    assert cond(before, "ChildrenCreated")["reason"] == "ChildrenCreating"
    after = sandbox_sync.sync(_missing_pod(_since(grace)), NOW, config)
    assert cond(after, "ChildrenCreated")["reason"] == "ChildNotCreated"
    assert cond(after, "ChildrenCreated")["message"].startswith(f"not created {grace}s after it was asked for")


def test_a_pod_never_created_fails_at_the_startup_deadline() -> None:
    out = sandbox_sync.sync(_missing_pod(_since(C.DEFAULT_STARTUP_TIMEOUT_SECONDS)), NOW)
    assert out["status"]["phase"] == "Failed" and cond(out, "Ready")["reason"] == "StartupTimeout"
    assert "Pod sandbox-refused" in cond(out, "Ready")["message"]
    assert out["resyncAfterSeconds"] == sandbox_sync.CREATE_POLL_SECONDS, "Metacontroller keeps trying to create it"


def test_every_child_observed_is_reported_and_costs_no_status_write() -> None:
    _, settled = cases.settle(sandbox_sync.sync, cases.first_sync(), pod_status=running_pod_status())
    assert cond(settled, "ChildrenCreated")["status"] == "True"
    first = sandbox_sync.sync(cases.first_sync(), NOW)
    second = sandbox_sync.sync(cases.minimal(), NOW)  # the account exists, the pod does not yet
    assert first["status"] == second["status"]


# ---------------------------------------------------------------------------------------------
# Item 4: a failed pod is replaced, a bounded number of times


def test_a_failed_pod_is_replaced_once_its_count_is_in_status_and_the_volume_stays() -> None:
    parent = sandbox("evicted", spec={"storage": {"persistent": True}})
    counted = sandbox_sync.sync(with_pod(parent, EVICTED), NOW)
    # The count is written first; the pod, evidence of the failure, stays until status has it.
    assert counted["status"]["restarts"] == 1 and ("Pod", "sandbox-evicted") in kinds(counted)
    assert counted["status"]["phase"] == "Creating" and cond(counted, "Ready")["reason"] == "PodReplacing"
    assert "low on resource: memory" in cond(counted, "Ready")["message"]
    assert counted.get("resyncAfterSeconds") is not None
    parent["status"] = counted["status"]
    replaced = sandbox_sync.sync(with_pod(parent, EVICTED), NOW)
    assert ("Pod", "sandbox-evicted") not in kinds(replaced), "Metacontroller deletes the failed pod"
    assert ("PersistentVolumeClaim", "sandbox-evicted-data") in kinds(replaced)
    assert replaced["status"]["restarts"] == 1 and replaced["status"]["phase"] == "Creating"
    # No pod observed: a new one, created as restart 1.
    children = [c for c in cases._children_of(parent) if c["kind"] != "Pod"]
    parent["status"] = replaced["status"]
    again = sandbox_sync.sync(sync_request(parent, children=children, related=[RTE]), NOW)
    pod = next(c for c in again["children"] if c["kind"] == "Pod")
    assert pod["metadata"]["annotations"][C.ANNOTATION_POD_RESTARTS] == "1"


def test_the_restart_count_survives_a_stale_status() -> None:
    # The new pod carries its number: a status that lags behind cannot lower the count.
    stale = sandbox("flaky", status={"phase": "Running", "restarts": 0})
    out = sandbox_sync.sync(with_pod(stale, EVICTED, restarts=2), NOW)
    assert out["status"]["restarts"] == 3 and ("Pod", "sandbox-flaky") in kinds(out), "not deleted before the count is stored"
    running = sandbox_sync.sync(with_pod(sandbox("flaky", status={"phase": "Running"}), running_pod_status(), restarts=2), NOW)
    assert running["status"]["restarts"] == 2


def test_a_pod_that_fails_repeatedly_fails_the_sandbox_and_is_kept() -> None:
    limit = C.MAX_POD_REPLACEMENTS
    parent = sandbox("doomed", status={"phase": "Creating", "restarts": limit})
    out = sandbox_sync.sync(with_pod(parent, EVICTED, restarts=limit), NOW)
    assert out["status"]["phase"] == "Failed" and out["status"]["restarts"] == limit
    ready = cond(out, "Ready")
    assert ready["reason"] == "PodFailedRepeatedly" and f"{limit + 1} times" in ready["message"], ready
    assert ("Pod", "sandbox-doomed") in kinds(out), "kept for inspection"


def test_a_first_pod_carries_no_restart_annotation() -> None:
    pod = next(c for c in sandbox_sync.sync(cases.minimal(), NOW)["children"] if c["kind"] == "Pod")
    assert C.ANNOTATION_POD_RESTARTS not in pod["metadata"].get("annotations", {})


# ---------------------------------------------------------------------------------------------
# Item 8: a warm pod that fails under a running sandbox


def _warm_served(wp_phase: Optional[str]) -> dict[str, Any]:
    """A sandbox that ran on its warm pod (status says so) whose WarmPod is now in `wp_phase`
    (None: gone), well within the warm-pod wait window."""
    request = cases.warm_running()
    first = sandbox_sync.sync(request, NOW)
    assert first["status"]["phase"] == "Running" and first["status"]["warmPodUsed"] is True
    parent = copy.deepcopy(request["parent"])
    parent["status"] = first["status"]
    related = [o for group in request["related"].values() for o in group.values()]
    if wp_phase is None:
        related = [o for o in related if o["kind"] != C.KIND_WARMPOD]
    for o in related:
        if o["kind"] == C.KIND_WARMPOD:
            o["status"]["phase"] = wp_phase
    children = [observed(c, parent) for c in first["children"]]
    return sync_request(parent, children=children, related=related)


@pytest.mark.parametrize("wp_phase", ["Failed", "Terminating", None], ids=["failed", "terminating", "gone"])
def test_a_sandbox_whose_warm_pod_failed_goes_on_cold_never_back_to_pending(wp_phase: Optional[str]) -> None:
    out = sandbox_sync.sync(_warm_served(wp_phase), NOW)
    status = out["status"]
    assert status["phase"] == "Creating", status
    assert status["warmPodUsed"] is False and status["restarts"] == 1
    warm = cond(out, "WarmPod")
    assert warm["reason"] == "WarmPodFailed" and "python-pool-0" in warm["message"], warm
    assert ("ServiceAccount", "sandbox-quick") in kinds(out), "the cold start begins at once"
    # Its Service and policies are pointed back at its own pods, before any pod of its own exists.
    own = {C.LABEL_APP: C.APP_NAME, C.LABEL_SANDBOX_UID: out_uid(out)}
    assert all(c["spec"]["podSelector"]["matchLabels"] == own for c in out["children"] if c["kind"] == "NetworkPolicy")
    # Next sync: the account exists; the reason stays (recorded, or recomputed from a stale status
    # that still says warm), the pod is created as restart 1.
    for previous in (status, _warm_served(wp_phase)["parent"]["status"]):
        request = _warm_served(wp_phase)
        request["parent"]["status"] = previous
        request["children"] = sync_request(request["parent"], children=[observed(c, request["parent"]) for c in out["children"]])["children"]
        nxt = sandbox_sync.sync(request, NOW)
        assert nxt["status"]["phase"] == "Creating" and cond(nxt, "WarmPod")["reason"] == "WarmPodFailed"
        pod = next(c for c in nxt["children"] if c["kind"] == "Pod")
        assert pod["metadata"]["annotations"][C.ANNOTATION_POD_RESTARTS] == "1"
    # Not while an observed policy still selects the warm pod (its update not applied yet): the
    # new pod must never start outside its default deny.
    stale = _warm_served(wp_phase)
    stale["children"][C.GVK_SERVICE_ACCOUNT] = sync_request(stale["parent"], children=[
        observed(c, stale["parent"]) for c in out["children"] if c["kind"] == "ServiceAccount"])["children"][C.GVK_SERVICE_ACCOUNT]
    assert ("Pod", "sandbox-quick") not in kinds(sandbox_sync.sync(stale, NOW))


def out_uid(out: dict[str, Any]) -> str:
    return next(c for c in out["children"] if c["kind"] == "ServiceAccount")["metadata"]["labels"][C.LABEL_SANDBOX_UID]


def test_a_warm_start_then_its_replacement_counts_one_start() -> None:
    from tests.test_metrics import InProcess, value
    server = InProcess()
    served = _warm_served("Failed")
    warm_status = served["parent"]["status"]
    server.sync(cases.warm_bound())  # adopts: warmPodUsed first set
    cold = server.sync(served)
    assert warm_status["warmPodUsed"] is True and cold["status"]["warmPodUsed"] is False
    starts = "llmsafespace_warmpool_sandbox_starts_total"
    m = server.scrape()
    assert value(m, starts, result="warm") == 1 and value(m, starts) == 1, "the cold replacement is no second start"
