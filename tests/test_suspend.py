"""Table tests of suspend, resume and idle suspension (issue 15, items 1 and 2; docs/suspend.md):
a suspended sandbox desires no pod and keeps its volume, Service, ServiceAccount and policies;
status says Suspending while a pod is left and Suspended once none is; a warm-served sandbox
releases its warm pod for good; resuming is a cold start on the same volume; the idle deadline is
computed from the last-activity annotation, the creation and the last resume, and wakes the hook."""
from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any, Optional

from hooks import constants as C
from hooks import sandbox_sync, suspend, warm, warmpool_sync
from hooks.meta import fmt_time
from tests import sandbox_cases as cases
from tests.factory import NOW, running_pod_status, sandbox, sync_request

RTE = cases.RTE
PERSISTENT = {"storage": {"persistent": True}}
NETWORK = {("Service", "sandbox-{n}"), ("NetworkPolicy", "sandbox-{n}-default-deny"), ("NetworkPolicy", "sandbox-{n}-api-access"),
           ("NetworkPolicy", "sandbox-{n}-dns")}


def cond(response: dict[str, Any], type_: str) -> Optional[dict[str, Any]]:
    return next((c for c in response["status"]["conditions"] if c["type"] == type_), None)


def kinds(response: dict[str, Any]) -> set[tuple[str, str]]:
    return {(c["kind"], c["metadata"]["name"]) for c in response["children"]}


def kept(n: str, persistent: bool = True) -> set[tuple[str, str]]:
    out = {(k, v.format(n=n)) for k, v in NETWORK} | {("ServiceAccount", f"sandbox-{n}")}
    return out | ({("PersistentVolumeClaim", f"sandbox-{n}-data")} if persistent else set())


def running(parent: dict[str, Any]) -> list[dict[str, Any]]:
    """The children of `parent` once it runs on its own pod (settled with the spec Running)."""
    fresh = copy.deepcopy({k: v for k, v in parent.items() if k != "status"})
    fresh["spec"]["operatingMode"] = "Running"
    return cases._children_of(fresh, **running_pod_status())


def suspended_cond(reason: str, status: str = "True", when: str = "2026-11-22T11:00:00Z") -> dict[str, Any]:
    return {"type": "Suspended", "status": status, "reason": reason, "message": "x", "lastTransitionTime": when}


# ---------------------------------------------------------------------------------------------
# Suspend


def test_suspending_a_running_sandbox_removes_only_its_pod() -> None:
    parent = sandbox("nb", spec={**PERSISTENT, "operatingMode": "Suspended"})
    children = running(parent)
    assert ("Pod", "sandbox-nb") in {(c["kind"], c["metadata"]["name"]) for c in children}
    out = sandbox_sync.sync(sync_request(parent, children=children, related=[RTE]), NOW)
    assert kinds(out) == kept("nb")  # no Pod: Metacontroller deletes it gracefully; the claim stays
    # Status tells the truth: the pod still terminates.
    assert out["status"]["phase"] == C.PHASE_SUSPENDING and out["status"]["podName"] == "sandbox-nb"
    assert cond(out, "Ready")["reason"] == "Suspending" and "pod sandbox-nb" in cond(out, "Ready")["message"]
    assert cond(out, "Suspended")["status"] == "True" and cond(out, "Suspended")["reason"] == suspend.REASON_OPERATING_MODE
    assert out["resyncAfterSeconds"] > 0  # looks again while the pod terminates


def test_a_terminating_pod_keeps_the_sandbox_suspending() -> None:
    parent = sandbox("nb", spec={**PERSISTENT, "operatingMode": "Suspended"})
    children = running(parent)
    for c in children:
        if c["kind"] == "Pod":
            c["metadata"]["deletionTimestamp"] = "2026-11-22T11:59:59Z"
    out = sandbox_sync.sync(sync_request(parent, children=children, related=[RTE]), NOW)
    assert out["status"]["phase"] == C.PHASE_SUSPENDING and ("Pod", "sandbox-nb") not in kinds(out)


def test_suspended_once_the_pod_is_gone() -> None:
    parent = sandbox("nb", spec={**PERSISTENT, "operatingMode": "Suspended"}, status={"phase": "Running", "restarts": 2})
    children = [c for c in running(parent) if c["kind"] != "Pod"]
    out = sandbox_sync.sync(sync_request(parent, children=children, related=[RTE]), NOW)
    assert kinds(out) == kept("nb")
    status = out["status"]
    assert status["phase"] == C.PHASE_SUSPENDED and "podName" not in status and "startTime" not in status
    assert status["restarts"] == 2  # counted replacements survive the suspension
    assert cond(out, "Ready")["reason"] == "Suspended" and cond(out, "ChildrenCreated")["status"] == "True"


def test_suspended_mid_creation_creates_no_pod_and_keeps_the_volume() -> None:
    # The first sync, and the one after the account appeared (where a Running sandbox gets its Pod).
    parent = sandbox("early", spec={**PERSISTENT, "operatingMode": "Suspended"})
    first = sandbox_sync.sync(sync_request(parent, related=[RTE]), NOW)
    assert kinds(first) == kept("early") and first["status"]["phase"] == C.PHASE_SUSPENDED
    later = sandbox_sync.sync(cases.creating(parent), NOW)
    assert kinds(later) == kept("early")


def test_a_volume_the_spec_no_longer_asks_for_is_kept_while_suspended() -> None:
    # storage.persistent turned off behind the CRD's back: the observed claim is still desired.
    parent = sandbox("nb", spec={**PERSISTENT, "operatingMode": "Suspended"})
    children = running(parent)
    parent["spec"]["storage"] = {"persistent": False}
    out = sandbox_sync.sync(sync_request(parent, children=children, related=[RTE]), NOW)
    assert ("PersistentVolumeClaim", "sandbox-nb-data") in kinds(out)


def test_lifetime_keeps_counting_while_suspended() -> None:
    parent = sandbox("short", spec={"lifetimeSeconds": 5, "operatingMode": "Suspended"})
    out = sandbox_sync.sync(sync_request(parent, related=[RTE]), NOW)
    assert out["status"]["phase"] == C.PHASE_TERMINATED
    live = sandbox("short", spec={"lifetimeSeconds": 3600, "operatingMode": "Suspended"})
    children = [c for c in running(live) if c["kind"] != "Pod"]
    out = sandbox_sync.sync(sync_request(live, children=children, related=[RTE]), NOW)
    assert out["status"]["phase"] == C.PHASE_SUSPENDED and out["resyncAfterSeconds"] == 3590  # woken at expiry


def test_deleting_a_suspended_sandbox_finalizes_as_usual() -> None:
    parent = sandbox("nb", spec={**PERSISTENT, "operatingMode": "Suspended"}, deleting=True, status={"phase": "Suspended"})
    children = [c for c in running(parent) if c["kind"] != "Pod"]
    out = sandbox_sync.sync(sync_request(parent, children=children, related=[RTE], finalizing=True), NOW)
    assert out["status"]["phase"] == C.PHASE_TERMINATING and out["children"] == [] and out["finalized"] is False


# ---------------------------------------------------------------------------------------------
# Resume


def test_resuming_brings_a_cold_pod_back_on_the_same_volume() -> None:
    parent = sandbox("nb", spec=PERSISTENT, status={"phase": "Suspended", "conditions": [suspended_cond(suspend.REASON_OPERATING_MODE)]})
    children = [c for c in running(parent) if c["kind"] != "Pod"]
    out = sandbox_sync.sync(sync_request(parent, children=children, related=[RTE]), NOW)
    pods = [c for c in out["children"] if c["kind"] == "Pod"]
    assert len(pods) == 1 and out["status"]["phase"] == C.PHASE_CREATING
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pods[0]["spec"]["volumes"] if "persistentVolumeClaim" in v]
    assert claims == ["sandbox-nb-data"]
    resumed = cond(out, "Suspended")
    assert resumed["status"] == "False" and resumed["lastTransitionTime"] == fmt_time(NOW)  # the resume, remembered


def test_a_resumed_warm_sandbox_never_goes_back_to_its_released_warm_pod() -> None:
    # Its pool has not deleted the warm pod yet: still Assigned, bound to the sandbox's UID.
    parent = sandbox("quick", annotations={C.ANNOTATION_USE_WARM_POD: "true"}, status={
        "phase": "Suspended", "warmPool": "python-pool", "warmPodUsed": False,
        "conditions": [suspended_cond(suspend.REASON_OPERATING_MODE),
                       {"type": "WarmPod", "status": "False", "reason": warm.REASON_SUSPENDED, "message": warm.SUSPENDED_MESSAGE}]})
    pool = cases.warm_offer()
    out = sandbox_sync.sync(sync_request(parent, related=[RTE, pool, cases._warm_pod(parent, pool, "Assigned")]), NOW)
    assert out["status"]["warmPodUsed"] is False and "warmPodRef" not in out["status"]
    assert cond(out, "WarmPod")["reason"] == warm.REASON_SUSPENDED
    assert ("ServiceAccount", "sandbox-quick") in kinds(out)  # the cold start begins


# ---------------------------------------------------------------------------------------------
# Warm-served sandboxes


def warm_served(spec: dict[str, Any], phase: str = "Assigned") -> tuple[dict[str, Any], dict[str, Any]]:
    parent = sandbox("quick", annotations={C.ANNOTATION_USE_WARM_POD: "true"}, spec=spec, status={
        "phase": "Running", "warmPool": "python-pool", "warmPodUsed": True, "warmPodRef": {"name": "python-pool-0", "namespace": "demo"}})
    pool = cases.warm_offer()
    return parent, sync_request(parent, related=[RTE, pool, cases._warm_pod(parent, pool, phase)])


def test_a_warm_served_sandbox_suspends_by_releasing_its_warm_pod() -> None:
    parent, request = warm_served({"operatingMode": "Suspended"})
    out = sandbox_sync.sync(request, NOW)
    status = out["status"]
    assert status["warmPodUsed"] is False and status["warmPool"] == "python-pool"  # its pool drops the pod
    assert status["phase"] == C.PHASE_SUSPENDING and "warm pod python-pool-0" in cond(out, "Ready")["message"]
    assert cond(out, "WarmPod")["reason"] == warm.REASON_SUSPENDED
    assert not any(c["kind"] == "Pod" for c in out["children"])
    # The pool: a sandbox whose status says it is suspended uses no warm pod and waits for none.
    for phase in (C.PHASE_SUSPENDING, C.PHASE_SUSPENDED):
        held = {**parent, "status": {**parent["status"], "phase": phase}}
        assert not warmpool_sync._still_used(held, "python-pool")
    gone = copy.deepcopy(request)
    gone["related"][C.GVK_WARMPOD] = {}
    assert sandbox_sync.sync(gone, NOW)["status"]["phase"] == C.PHASE_SUSPENDED


def test_a_sandbox_asked_to_suspend_is_not_waiting_for_a_warm_pod() -> None:
    waiting = sandbox("quick", annotations={C.ANNOTATION_USE_WARM_POD: "true"}, status={"phase": "Pending", "warmPool": "python-pool"})
    assert warmpool_sync._undecided(waiting)
    asked = {**waiting, "spec": {**waiting["spec"], "operatingMode": "Suspended"}}
    assert not warmpool_sync._undecided(asked)  # its status still says Pending


def test_suspended_while_waiting_for_a_warm_pod() -> None:
    parent = sandbox("quick", annotations={C.ANNOTATION_USE_WARM_POD: "true"}, spec={"operatingMode": "Suspended"},
                     status={"phase": "Pending", "warmPool": "python-pool"})
    out = sandbox_sync.sync(sync_request(parent, related=[RTE, cases.warm_offer()]), NOW)
    assert out["status"]["warmPodUsed"] is False and out["status"]["phase"] == C.PHASE_SUSPENDED


# ---------------------------------------------------------------------------------------------
# Idle suspension


def idle(annotation: Optional[str], conditions: list[dict[str, Any]], mode: str = "Running") -> dict[str, Any]:
    parent = sandbox("idle", spec={"idleTimeoutSeconds": 600, "operatingMode": mode}, created="2026-11-22T10:00:00Z",
                     annotations={C.ANNOTATION_LAST_ACTIVITY: annotation} if annotation is not None else None,
                     status={"phase": "Running", "conditions": conditions})
    return sync_request(parent, children=running(parent), related=[RTE])


def test_the_idle_deadline_wakes_the_hook() -> None:
    # Resumed (or first seen) at 11:00, last activity at 11:55: suspended at 12:05, 300 s from now.
    out = sandbox_sync.sync(idle("2026-11-22T11:55:00Z", [suspended_cond(suspend.REASON_ACTIVE, "False")]), NOW)
    assert out["status"]["phase"] == C.PHASE_RUNNING and ("Pod", "sandbox-idle") in kinds(out)
    assert out["resyncAfterSeconds"] == 300.0
    assert "2026-11-22T12:05:00Z" in cond(out, "Suspended")["message"]


def test_idle_for_the_timeout_suspends() -> None:
    out = sandbox_sync.sync(idle("2026-11-22T11:50:00Z", [suspended_cond(suspend.REASON_ACTIVE, "False")]), NOW)
    assert ("Pod", "sandbox-idle") not in kinds(out) and out["status"]["phase"] == C.PHASE_SUSPENDING
    assert cond(out, "Suspended")["reason"] == suspend.REASON_IDLE and "2026-11-22T11:50:00Z" in cond(out, "Suspended")["message"]


def test_no_annotation_counts_from_the_last_resume() -> None:
    out = sandbox_sync.sync(idle(None, [suspended_cond(suspend.REASON_ACTIVE, "False", "2026-11-22T11:49:59Z")]), NOW)
    assert cond(out, "Suspended")["reason"] == suspend.REASON_IDLE
    out = sandbox_sync.sync(idle(None, [suspended_cond(suspend.REASON_ACTIVE, "False", "2026-11-22T11:50:01Z")]), NOW)
    assert cond(out, "Suspended")["status"] == "False" and out["resyncAfterSeconds"] == 1.0


def test_a_newly_seen_idle_timeout_starts_the_clock() -> None:
    # Created two hours ago, no activity recorded, no Suspended condition yet: not suspended at once.
    out = sandbox_sync.sync(idle(None, []), NOW)
    assert out["status"]["phase"] == C.PHASE_RUNNING and out["resyncAfterSeconds"] == 600.0


def test_activity_resumes_an_idle_suspended_sandbox() -> None:
    stale = [suspended_cond(suspend.REASON_IDLE)]
    out = sandbox_sync.sync(idle("2026-11-22T11:00:00Z", stale), NOW)
    assert cond(out, "Suspended")["status"] == "True"  # idle-suspended stays so until activity
    out = sandbox_sync.sync(idle(fmt_time(NOW - timedelta(seconds=1)), stale), NOW)
    assert cond(out, "Suspended")["status"] == "False" and ("Pod", "sandbox-idle") in kinds(out)


def test_a_manual_resume_counts_as_activity() -> None:
    # Suspended by operatingMode for hours; its last recorded activity is old: resuming must not
    # idle-suspend it again at once.
    out = sandbox_sync.sync(idle("2026-11-22T08:00:00Z", [suspended_cond(suspend.REASON_OPERATING_MODE)]), NOW)
    assert cond(out, "Suspended")["status"] == "False" and out["resyncAfterSeconds"] == 600.0


def test_an_unreadable_annotation_is_ignored_and_said() -> None:
    out = sandbox_sync.sync(idle("yesterday", [suspended_cond(suspend.REASON_ACTIVE, "False", "2026-11-22T11:55:00Z")]), NOW)
    assert cond(out, "Suspended")["status"] == "False" and "not an RFC 3339 time" in cond(out, "Suspended")["message"]


def test_no_suspended_condition_for_sandboxes_suspension_never_concerned() -> None:
    out = sandbox_sync.sync(cases.observed_running(), NOW)
    assert cond(out, "Suspended") is None


def test_an_invalid_spec_never_suspends() -> None:
    # A suspension is part of a usable spec: an unusable one keeps the pod as it is.
    parent = sandbox("nb", spec={**PERSISTENT, "operatingMode": "Suspended"})
    children = running(parent)
    parent["spec"]["runtime"] = "cobol:85"
    out = sandbox_sync.sync(sync_request(parent, children=children, related=[RTE]), NOW)
    assert ("Pod", "sandbox-nb") in kinds(out)


def test_a_suspension_deletes_nothing_but_the_pod() -> None:
    """Metacontroller deletes what is not desired: in every suspended answer, every observed
    child but the pod is still desired (nothing else is ever deleted by a suspension)."""
    for spec in ({**PERSISTENT, "operatingMode": "Suspended"}, {"operatingMode": "Suspended"},
                 {"storage": {"persistent": True, "retentionPolicy": "Retain", "storageClassName": "keep"}, "operatingMode": "Suspended"}):
        parent = sandbox("nb", spec=spec)
        children = running(parent)
        out = sandbox_sync.sync(sync_request(parent, children=children, related=[RTE]), NOW)
        observed_ids = {(c["kind"], c["metadata"]["name"]) for c in children}
        assert observed_ids - kinds(out) == {("Pod", "sandbox-nb")}, spec
