"""Failure semantics (docs/failure-semantics.md): what happens when a hook fails or is slow, when a
related object is missing or stale, when a pod will not die on finalize, and on an upgrade of the
hooks. Metacontroller's side (retry with backoff, nothing applied on a non-200 answer, children
deleted when missing from a 200 answer) is modelled by `apply`, a few lines that follow
/work/shared/notes/metacontroller.md sections 3.4 and 5.2."""
from __future__ import annotations

import copy
import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any, Optional

import pytest
import yaml

from hooks import constants as C
from hooks.server import jsonio
from hooks.server.app import create_app
from hooks.config import Config
from hooks.server.routes import ROUTES, Route
from hooks.response import BadRequest
from tests import sandbox_cases as cases
from tests import strategies as S
from tests.factory import NOW, observed, profile, running_pod_status, runtime, sandbox, settle, sync_request

ROOT = Path(__file__).resolve().parent.parent
# Golden files to upgrade from: this tree's by default; before a release, point LLMSS_UPGRADE_FROM
# at the previous release's tests/golden (git archive <tag> tests/golden | tar -x -C /tmp/prev)
# to check that today's hooks leave that release's running pods alone.
GOLDEN = Path(os.environ.get("LLMSS_UPGRADE_FROM") or ROOT / "tests" / "golden")
RTE = runtime()


def client() -> Any:
    return create_app(Config(), clock=lambda: NOW, env={}).test_client()


def post(c: Any, path: str, body: Any) -> Any:
    return c.post(path, data=json.dumps(body), content_type="application/json")


def kinds_and_names(children: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(c["kind"], c["metadata"]["name"]) for c in children}


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


# ---------------------------------------------------------------------------------------------
# Metacontroller's side, modelled


def apply(world: dict[tuple[str, str], dict[str, Any]], http_status: int, body: Optional[dict[str, Any]],
          key: str = "children") -> dict[tuple[str, str], dict[str, Any]]:
    """One sync round as Metacontroller does it: a non-200 answer changes nothing (and is retried
    with backoff); a 200 answer creates what is missing, deletes what is not listed (an absent
    `children` means none), and leaves existing Pods alone (updateStrategy OnDelete)."""
    if http_status != 200 or body is None:
        return dict(world)
    desired = {(c["kind"], c["metadata"]["name"]): c for c in body.get(key) or []}
    out = {}
    for ident, obj in desired.items():
        out[ident] = world[ident] if ident in world and ident[0] == "Pod" else obj
    return out


def failing_route(route: Route, exc: BaseException) -> Route:
    def boom(request: Any, now: Any, config: Any) -> Any:
        raise exc
    return Route(route.controller, route.hook, boom)


GENERIC_REQUEST = {
    "controller": {"metadata": {"name": "x"}},
    "parent": {"apiVersion": "llmsafespace.dev/v1", "kind": "Sandbox", "metadata": {"name": "x", "namespace": "demo", "uid": "u"}},
    "object": {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x", "uid": "u"}},
    "children": {}, "attachments": {}, "related": {}, "finalizing": False,
}


@pytest.mark.parametrize("path", sorted(ROUTES))
@pytest.mark.parametrize("exc", [RuntimeError("bug"), KeyError("spec"), TypeError("x"), RecursionError(), ZeroDivisionError()],
                         ids=lambda e: type(e).__name__)
def test_a_failing_hook_answers_5xx_and_no_desired_state(monkeypatch: pytest.MonkeyPatch, path: str, exc: BaseException) -> None:
    monkeypatch.setitem(ROUTES, path, failing_route(ROUTES[path], exc))
    response = post(client(), path, GENERIC_REQUEST)
    assert response.status_code == 500
    body = response.get_json()
    assert set(body) == {"error", "status"}, body  # no children, attachments, finalized, relatedResources
    assert "retry" in body["error"]


@pytest.mark.parametrize("path", sorted(ROUTES))
def test_a_refused_request_is_4xx_and_no_desired_state(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    monkeypatch.setitem(ROUTES, path, failing_route(ROUTES[path], BadRequest("request.parent must be an object")))
    response = post(client(), path, GENERIC_REQUEST)
    assert response.status_code == 400 and set(response.get_json()) == {"error", "status"}


def test_a_failed_round_changes_nothing_and_the_next_one_converges(monkeypatch: pytest.MonkeyPatch) -> None:
    request = cases.observed_running()
    world = {(o["kind"], o["metadata"]["name"]): o for g in request["children"].values() for o in g.values()}
    before = copy.deepcopy(world)
    live_pod = world[("Pod", "sandbox-live")]
    original = ROUTES["/sandbox/sync"]
    monkeypatch.setitem(ROUTES, "/sandbox/sync", failing_route(original, RuntimeError("transient")))
    failed = post(client(), "/sandbox/sync", request)
    world = apply(world, failed.status_code, failed.get_json())
    assert world == before, "a 5xx must leave every child as it was"
    monkeypatch.setitem(ROUTES, "/sandbox/sync", original)
    ok = post(client(), "/sandbox/sync", request)
    world = apply(world, ok.status_code, ok.get_json())
    assert set(world) == set(before) and world[("Pod", "sandbox-live")] is live_pod  # OnDelete: untouched
    # Why the app never answers 200 without children: Metacontroller would delete them all.
    assert apply(world, 200, {"status": {}}) == {}


def test_every_webhook_has_a_timeout_metacontroller_enforces() -> None:
    for file in sorted((ROOT / "metacontroller").glob("*.yaml")):
        for doc in yaml.safe_load_all(file.read_text()):
            for name, hook in ((doc or {}).get("spec", {}).get("hooks") or {}).items():
                timeout = hook["webhook"].get("timeout")
                assert timeout and timeout.endswith("s") and 0 < float(timeout[:-1]) <= 30, (file.name, name, timeout)


def test_the_worst_case_request_is_answered_whole() -> None:
    """The largest valid sandbox (schema maxima everywhere, 200 runtimes) gets a complete answer,
    not an error: a failing hook fails every sync. How long it takes (it must stay far below the
    10 s webhook timeout) is a figure and a target of the benchmark (bench/), not a
    timed assertion here."""
    request = cases.worst_case()
    body = json.dumps(request)
    assert len(body) > 1_000_000  # the request really is big
    response = client().post("/sandbox/sync", data=body, content_type="application/json")
    assert response.status_code == 200, response.data[:500]
    answer = response.get_json()
    assert {c["kind"] for c in answer["children"]} >= {"Pod", "Service", "NetworkPolicy", "PersistentVolumeClaim"}
    assert answer["status"]["phase"] == "Running"
    # The answer is the sandbox's own children: it does not grow with the 200 related runtimes.
    assert len(response.data) < len(body) // 4


# ---------------------------------------------------------------------------------------------
# Related objects missing or stale


def _running(spec: Optional[dict[str, Any]] = None, related: Optional[list[dict[str, Any]]] = None) -> dict[str, Any]:
    """A running sandbox: children as the API server holds them once its syncs were applied, pod
    ready, status as the syncs wrote it."""
    related = related or [RTE]
    parent = sandbox("steady", spec=spec)
    children, first = settle(ROUTES["/sandbox/sync"].function, sync_request(parent, related=related), pod_status=running_pod_status())
    parent["status"] = first["status"]
    again = ROUTES["/sandbox/sync"].function(sync_request(copy.deepcopy(parent), children=children, related=related), NOW, Config())
    parent["status"] = again["status"]
    return sync_request(parent, children=children, related=related)


@pytest.mark.parametrize("change, reason, validated", [
    (lambda r: r["related"][C.GVK_RUNTIME].clear(), "RuntimeNotFound", "False"),
    (lambda r: r["related"][C.GVK_RUNTIME]["python-3.11"].__setitem__("status", {"available": False}), "RuntimeUnavailable", "False"),
    (lambda r: r["related"][C.GVK_RUNTIME]["python-3.11"].pop("status"), "RuntimeNotValidated", "Unknown"),
    (lambda r: r["related"][C.GVK_RUNTIME]["python-3.11"]["spec"].__setitem__("image", ""), "RuntimeNotFound", "False"),
], ids=["runtime-deleted", "runtime-unavailable", "runtime-not-validated", "runtime-invalid"])
def test_runtime_trouble_under_a_running_sandbox_keeps_every_child(change: Any, reason: str, validated: str) -> None:
    request = _running()
    request["related"][C.GVK_RUNTIME] = copy.deepcopy(request["related"][C.GVK_RUNTIME])
    observed_children = [o for g in request["children"].values() for o in g.values()]
    change(request)
    out = ROUTES["/sandbox/sync"].function(request, NOW, Config())
    assert kinds_and_names(out["children"]) == kinds_and_names(observed_children)
    cond = condition(out["status"], "Validated")
    assert (cond["status"], cond["reason"]) == (validated, reason), cond
    assert "python" in cond["message"] or "runtime" in cond["message"].lower()
    assert out["status"]["phase"] == C.PHASE_RUNNING and condition(out["status"], "Ready")["status"] == "True"
    assert out["status"]["endpoint"] == request["parent"]["status"]["endpoint"]


def test_profile_deleted_under_a_running_sandbox_keeps_every_child() -> None:
    prof = profile(securityLevel="high")
    request = _running(spec={"profileRef": {"name": prof["metadata"]["name"]}}, related=[RTE, prof])
    observed_children = [o for g in request["children"].values() for o in g.values()]
    request["related"][C.GVK_PROFILE] = {}
    out = ROUTES["/sandbox/sync"].function(request, NOW, Config())
    assert kinds_and_names(out["children"]) == kinds_and_names(observed_children)
    assert condition(out["status"], "Validated")["reason"] == "ProfileNotFound"
    assert out["status"]["phase"] == C.PHASE_RUNNING


def test_lost_parent_status_is_recomputed_from_the_children() -> None:
    """Status is not memory: a sandbox whose status is missing (stale cache, a restore) gets the
    same children and a status derived from them."""
    request = _running()
    with_status = ROUTES["/sandbox/sync"].function(copy.deepcopy(request), NOW, Config())
    request["parent"].pop("status")
    without = ROUTES["/sandbox/sync"].function(request, NOW, Config())
    assert jsonio.dumps(without["children"]) == jsonio.dumps(with_status["children"])
    assert without["status"]["phase"] == with_status["status"]["phase"] == C.PHASE_RUNNING


def _warm_running() -> dict[str, Any]:
    request = cases.warm_running()
    assert request["parent"]["status"]["warmPodUsed"] is True
    return request


@pytest.mark.parametrize("change", [
    lambda r: r["related"][C.GVK_WARMPOOL_OFFER].__setitem__("demo/a-pool", S.warm_offer("a-pool")),
    lambda r: r["related"][C.GVK_WARMPOOL_OFFER].clear(),
    lambda r: r["parent"]["metadata"].pop("annotations"),
    lambda r: next(iter(r["related"][C.GVK_WARMPOD].values()))["status"].__setitem__("phase", "Pending"),
    lambda r: next(iter(r["related"][C.GVK_WARMPOOL_OFFER].values()))["spec"].__setitem__("securityLevel", "high"),
], ids=["new-pool-sorts-first", "pool-missing-from-cache", "annotation-removed", "warm-pod-readiness-blip", "pool-edited"])
def test_a_warm_served_sandbox_keeps_its_warm_pod(change: Any) -> None:
    """Regression: any of these used to make a running warm-served sandbox start cold (a second
    pod) and report warmPodUsed false, upon which its pool deleted the pod it was running on."""
    request = _warm_running()
    warm_pod = next(iter(request["related"][C.GVK_WARMPOD].values()))
    request = copy.deepcopy(request)
    change(request)
    out = ROUTES["/sandbox/sync"].function(request, NOW, Config())
    assert not any(c["kind"] == "Pod" for c in out["children"]), "started cold next to its warm pod"
    assert out["status"]["warmPodUsed"] is True
    assert out["status"]["warmPodRef"]["name"] == warm_pod["metadata"]["name"]
    assert out["status"]["warmPool"] == "python-pool"  # what the pool checks before keeping the pod
    assert out["status"]["phase"] == C.PHASE_RUNNING


def test_a_failed_warm_pod_is_left_for_a_cold_start() -> None:
    request = _warm_running()
    next(iter(request["related"][C.GVK_WARMPOD].values()))["status"]["phase"] = "Failed"
    request["parent"]["metadata"]["creationTimestamp"] = "2026-11-22T11:00:00Z"  # wait long over
    out = ROUTES["/sandbox/sync"].function(request, NOW, Config())
    assert {c["kind"] for c in out["children"]} >= {"ServiceAccount", "Service"} and out["status"]["warmPodUsed"] is False
    children, out = settle(ROUTES["/sandbox/sync"].function, request)
    assert any(c["kind"] == "Pod" for c in children) and out["status"]["warmPodUsed"] is False


# ---------------------------------------------------------------------------------------------
# Finalize: a pod that will not die


def test_finalize_waits_for_a_pod_that_will_not_die() -> None:
    request = cases.finalize_terminating()
    pod = next(iter(request["children"][C.GVK_POD].values()))
    pod["metadata"]["deletionTimestamp"] = "2026-11-22T11:59:59Z"  # deleted, but the kubelet never confirms
    others = {(o["kind"], o["metadata"]["name"]) for g in request["children"].values() for o in g.values() if o["kind"] != "Pod"}
    assert sum(1 for k, _ in others if k == "NetworkPolicy") >= 3
    c = client()
    for later in (timedelta(0), timedelta(hours=1), timedelta(days=1), timedelta(days=365)):
        app = create_app(Config(), clock=lambda later=later: NOW + later, env={}).test_client()
        body = post(app, "/sandbox/finalize", request).get_json()
        assert body["finalized"] is False
        assert kinds_and_names(body["children"]) == others, "the policies, Service and volume stay while the pod lives"
        assert body["resyncAfterSeconds"] == 10
        assert body["status"]["phase"] == C.PHASE_TERMINATING
        assert pod["metadata"]["name"] in condition(body["status"], "Ready")["message"]
        request["parent"]["status"] = body["status"]
    # The same through sync: Metacontroller calls finalize, but a parent that is deleting is
    # finalized by the sync route too.
    assert post(c, "/sandbox/sync", request).get_json()["finalized"] is False


def test_finalize_removes_the_rest_once_the_pod_is_gone_and_completes_once_all_are() -> None:
    request = cases.finalize_terminating()
    request["children"][C.GVK_POD] = {}
    body = post(client(), "/sandbox/finalize", request).get_json()
    assert body["finalized"] is False and body["children"] == []
    for group in request["children"].values():
        group.clear()
    body = post(client(), "/sandbox/finalize", request).get_json()
    assert body["finalized"] is True and body["children"] == []


def test_finalize_of_a_warm_served_sandbox_waits_for_its_warm_pod() -> None:
    request = _warm_running()
    request["parent"]["metadata"]["deletionTimestamp"] = "2026-11-22T11:59:59Z"
    request["finalizing"] = True
    body = post(client(), "/sandbox/finalize", request).get_json()
    assert body["finalized"] is False and "warm pod" in condition(body["status"], "Ready")["message"]
    request["related"][C.GVK_WARMPOD] = {}
    request["children"] = {k: {} for k in request["children"]}  # its Service and policies are gone too
    assert post(client(), "/sandbox/finalize", request).get_json()["finalized"] is True


def test_warm_pod_finalize_waits_for_its_pod() -> None:
    if "/warmpod/finalize" not in ROUTES:
        return
    from tests.test_isolation import warmpod_parent, warmpod_request
    parent = warmpod_parent("python-5")
    children = ROUTES["/warmpod/sync"].function(warmpod_request(parent), NOW, Config())["children"]
    parent["metadata"]["deletionTimestamp"] = "2026-11-22T11:59:59Z"
    stuck = [observed(c, parent, **(running_pod_status() if c["kind"] == "Pod" else {})) for c in children]
    for c in stuck:
        if c["kind"] == "Pod":
            c["metadata"]["deletionTimestamp"] = "2026-11-22T11:59:59Z"
    request = sync_request(parent, children=stuck, child_keys=(C.GVK_POD, C.GVK_NETWORK_POLICY), related_keys=(), finalizing=True)
    body = post(client(), "/warmpod/finalize", request).get_json()
    assert body["finalized"] is False
    assert {c["kind"] for c in body["children"]} == {"NetworkPolicy"}, "the default-deny policy stays while the pod lives"


# ---------------------------------------------------------------------------------------------
# Upgrades of the hooks


# Controllers whose Pods are updated in place, and why. InPlace never recreates a pod; it fails
# (Forbidden, retried) if the desired pod's immutable spec ever differs from the live one, which
# the golden upgrade test below rules out for every released pod.
IN_PLACE_PODS = {
    "warmpod-controller.yaml": "the pod is relabelled with the sandbox's identity on assignment; only labels change",
}


def test_pods_and_volumes_are_never_recreated_by_metacontroller() -> None:
    """updateStrategy OnDelete for every Pod and PersistentVolumeClaim child of every controller
    (a changed desired pod only applies to pods created later), InPlace only where listed above,
    never Recreate or a rolling method."""
    found = 0
    for file in sorted((ROOT / "metacontroller").glob("*.yaml")):
        for doc in yaml.safe_load_all(file.read_text()):
            rules = (doc or {}).get("spec", {}).get("childResources") or (doc or {}).get("spec", {}).get("attachments") or []
            for rule in rules:
                if rule["resource"] in ("pods", "persistentvolumeclaims"):
                    found += 1
                    method = (rule.get("updateStrategy") or {}).get("method", "OnDelete")
                    allowed = {"OnDelete", "InPlace"} if rule["resource"] == "pods" and file.name in IN_PLACE_PODS else {"OnDelete"}
                    assert method in allowed, (file.name, rule)
    assert found >= 2
    sandbox = yaml.safe_load((ROOT / "metacontroller" / "sandbox-controller.yaml").read_text())
    methods = {r["resource"]: r["updateStrategy"]["method"] for r in sandbox["spec"]["childResources"]}
    assert methods["pods"] == methods["persistentvolumeclaims"] == "OnDelete"


def _golden_with_pods() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(GOLDEN.glob("*/*.json")):
        route = f"/{path.parent.name}/sync"
        stored = json.loads(path.read_text())
        if route in ROUTES and not stored["request"].get("finalizing") and any(
                c.get("kind") == "Pod" for c in stored["response"].get("children", [])):
            out.append((route, path))
    return out


@pytest.mark.parametrize("route, path", _golden_with_pods(), ids=lambda v: v.stem if isinstance(v, Path) else v)
def test_an_upgrade_emits_the_running_pod_byte_for_byte(route: str, path: Path) -> None:
    """The golden file holds what the released hooks emitted. Feed its children back as what the
    API server holds (uid, owner reference, controller-uid label, last-applied annotation, a
    running pod) and sync again with today's hooks: the Pod must come out byte-identical, so
    Metacontroller sees no difference even before OnDelete is considered, and so must every
    other child (InPlace kinds would otherwise be rewritten on every upgrade)."""
    stored = json.loads(path.read_text())
    request, response = stored["request"], stored["response"]
    parent = request["parent"]
    children = [observed(c, parent, **(running_pod_status() if c["kind"] == "Pod" else {})) for c in response["children"]]
    again_request = copy.deepcopy(request)
    keys = list(request.get("children", {}))
    again_request["children"] = {k: {} for k in keys}
    again_request["children"].update(S.group(children))
    again_request["parent"]["status"] = response["status"]
    # Goldens of another egress backend are synced with that backend (tests/sandbox_cases.py).
    from tests.sandbox_cases import BACKEND_CASES
    backend = BACKEND_CASES[path.stem][1] if route == "/sandbox/sync" and path.stem in BACKEND_CASES else None
    again = ROUTES[route].function(again_request, NOW, Config(egress_backend=backend) if backend else Config())
    before = {(c["kind"], c["metadata"]["name"]): jsonio.dumps(c) for c in response["children"]}
    after = {(c["kind"], c["metadata"]["name"]): jsonio.dumps(c) for c in again["children"]}
    for ident, text in before.items():
        if ident[0] == "Pod":
            assert after.get(ident) == text, f"{path.name}: the running pod {ident[1]} would differ after an upgrade"
    assert after == before, f"{path.name}: children differ once observed: {sorted(set(after) ^ set(before))}"
