"""The hook benchmark measures what it names: each case of bench/payloads.py is in the state its
label says (issue 25, item 4: "Sandbox running" had no Pod among its observed children and was
`Creating`, so its <= 2x target was checked on the wrong call)."""
from __future__ import annotations

from typing import Any

import pytest

from bench import payloads
from hooks import constants as C
from hooks import sandbox_sync, warmpool_sync
from tests.factory import NOW


def _observed(request: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for group in request["children"].values() for o in group.values()}


def _condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status.get("conditions") or [] if c["type"] == type_)


def _ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])


def _running(request: dict[str, Any]) -> None:
    """Running and Ready, its Pod observed Running and Ready, every child it desires observed in the
    API server's form (as bench.payloads.realistic makes them), and settled: the answer changes
    neither the children nor the status."""
    answer = sandbox_sync.sync(request, NOW)
    status, observed = request["parent"]["status"], _observed(request)
    assert status["phase"] == C.PHASE_RUNNING and _condition(status, "Ready")["status"] == "True", status
    pods = [o for (kind, _), o in observed.items() if kind == "Pod"]
    assert len(pods) == 1 and pods[0]["status"]["phase"] == "Running" and _ready(pods[0])
    assert {(c["kind"], c["metadata"]["name"]) for c in answer["children"]} == set(observed)
    assert {"ServiceAccount", "Service", "NetworkPolicy", "Pod"} <= {kind for kind, _ in observed}
    for obj in observed.values():
        meta = obj["metadata"]
        assert meta.get("managedFields") and meta.get("resourceVersion") and meta.get("ownerReferences"), (obj["kind"], meta["name"])
    assert answer["status"] == status, "not settled: the next sync would still write status"


def _new(request: dict[str, Any]) -> None:
    """The first sync of a sandbox: nothing but what creation needs first (its ServiceAccount and
    default deny, which its Pod waits for) is observed, and no status yet."""
    assert not request["parent"].get("status")
    assert {kind for kind, _ in _observed(request)} <= {"ServiceAccount", "NetworkPolicy"}
    assert sandbox_sync.sync(request, NOW)["status"]["phase"] in (C.PHASE_CREATING, C.PHASE_PENDING)


def _warm_bound(request: dict[str, Any]) -> None:
    """A WarmPod of the sandbox's pool is assigned to its UID, its pod ready and selectable (status
    as written before the assignment, which the sandbox need not wait for): the sync adopts it."""
    uid = request["parent"]["metadata"]["uid"]
    warm_pods = list(request["related"][C.GVK_WARMPOD].values())
    assert [wp["spec"]["assignment"]["sandboxUid"] for wp in warm_pods] == [uid]
    assert warm_pods[0]["status"]["phase"] in ("Ready", "Assigned") and warm_pods[0]["status"]["servingSelector"]
    answer = sandbox_sync.sync(request, NOW)
    assert answer["status"]["warmPodUsed"] is True and answer["status"]["warmPodRef"]["name"] == warm_pods[0]["metadata"]["name"]
    assert not any(c["kind"] == "Pod" for c in answer["children"]), "served warm: no pod of its own"


def _invalid_edit(request: dict[str, Any]) -> None:
    """A running sandbox whose spec no longer resolves: the answer keeps every observed child."""
    answer = sandbox_sync.sync(request, NOW)
    assert _condition(answer["status"], "Validated")["status"] != "True"
    assert {(c["kind"], c["metadata"]["name"]) for c in answer["children"]} == set(_observed(request))
    assert any(kind == "Pod" for kind, _ in _observed(request)) and answer["status"]["phase"] == C.PHASE_RUNNING


STATES = {
    "running (all children observed)": _running,
    "new (no children)": _new,
    "warm pod bound": _warm_bound,
    "invalid edit (children kept)": _invalid_edit,
}


def test_every_sandbox_case_has_a_state_check() -> None:
    assert set(STATES) == set(payloads.SANDBOX_CASES)


@pytest.mark.parametrize("label", sorted(payloads.SANDBOX_CASES))
def test_sandbox_case_is_in_the_state_its_name_says(label: str) -> None:
    STATES[label](payloads.SANDBOX_CASES[label]())


@pytest.mark.parametrize("n", [10, 100])
def test_warm_pool_case_is_what_its_docstring_says(n: int) -> None:
    """N WarmPods (half assigned to sandboxes running on them, half Ready and idle) and N
    sandboxes: N/2 on the assigned pods, N/4 waiting (each assigned a pod in this call), N/4 cold."""
    request = payloads.warm_pool_request(n)
    members = list(request["children"][C.GVK_WARMPOD].values())
    sandboxes = list(request["related"][C.GVK_SANDBOX].values())
    assert len(members) == len(sandboxes) == n
    assert sum("assignment" in m["spec"] for m in members) == n // 2
    assert sum(m["status"]["phase"] == "Ready" and "assignment" not in m["spec"] for m in members) == n - n // 2
    answer = warmpool_sync.sync(request, NOW)
    assigned = [c for c in answer["children"] if c["kind"] == C.KIND_WARMPOD and "assignment" in c["spec"]]
    assert len(assigned) == n // 2 + (n - n // 2) // 2, "every waiting sandbox is assigned a pod in this call"
