"""A spec edit the running pod lacks, and its requested replacement, through the simulated
Metacontroller (tests/harness.py: stale caches per kind, conflicts, OnDelete pods, a kubelet).

The edit never touches the pod (Pods are OnDelete children) and is reported; the annotation
llmsafespace.dev/replace-pod replaces the pod exactly once per token however stale the caches
are, the volume kept; a warm-served sandbox moves to exactly one cold pod."""
from __future__ import annotations

import copy
from typing import Any

import pytest

from hooks import constants as C
from hooks.config import Config
from tests.factory import NOW, runtime
from tests.harness import Harness, Key, load_controllers

CONTROLLERS = load_controllers([C.KIND_SANDBOX, C.KIND_WARMPOOL, C.KIND_WARMPOD])
SEEDS = range(12)
STALE = 0.3
SANDBOX: Key = (C.KIND_SANDBOX, "demo", "edited")
POD: Key = ("Pod", "demo", "sandbox-edited")


def _cond(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


def _edit(h: Harness, change: Any) -> None:
    """A user's edit of the sandbox, as the API server stores it (generation moves with the spec)."""
    obj = copy.deepcopy(h.objects[SANDBOX])
    spec_before = copy.deepcopy(obj["spec"])
    change(obj)
    if obj["spec"] != spec_before:
        obj["metadata"]["generation"] += 1
    h._replace(SANDBOX, obj)


def _settle(h: Harness, pods: set[str]) -> None:
    """Rounds until quiet, recording every pod UID the sandbox ever had."""
    def record(harness: Harness) -> None:
        pod = harness.objects.get(POD)
        if pod is not None:
            pods.add(pod["metadata"]["uid"])
    if record not in h.observers:
        h.observers.append(record)
    h.run_until_quiet()


def _annotate(token: str) -> Any:
    return lambda obj: obj["metadata"].setdefault("annotations", {}).__setitem__(C.ANNOTATION_REPLACE_POD, token)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_requested_replacement_happens_exactly_once(seed: int) -> None:
    h = Harness(CONTROLLERS, Config(), NOW, seed, stale=STALE)
    h.create(runtime())
    h.create({"apiVersion": C.API_VERSION, "kind": C.KIND_SANDBOX, "metadata": {"name": "edited", "namespace": "demo"},
              "spec": {"runtime": "python-3.11", "storage": {"persistent": True}}})
    pods: set[str] = set()
    _settle(h, pods)
    claim = h.objects[("PersistentVolumeClaim", "demo", "sandbox-edited-data")]["metadata"]["uid"]
    assert len(pods) == 1 and h.objects[SANDBOX]["status"]["phase"] == C.PHASE_RUNNING

    # The edit: reported, the pod untouched.
    _edit(h, lambda obj: obj["spec"].__setitem__("securityLevel", "high"))
    _settle(h, pods)
    status = h.objects[SANDBOX]["status"]
    assert len(pods) == 1 and "runtimeClassName" not in h.objects[POD]["spec"]
    assert status["securityLevel"] == "standard" and status["phase"] == C.PHASE_RUNNING
    assert _cond(h.objects[SANDBOX], "SpecApplied")["reason"] == "PodOutdated"

    # The request: one new pod, with the new level, on the same claim; then nothing more, however
    # many rounds with stale caches follow, and whatever else is edited meanwhile.
    _edit(h, _annotate(f"t-{seed}"))
    _settle(h, pods)
    for _ in range(20):
        h.run_round()
    assert len(pods) == 2, f"seed {seed}: {len(pods)} pods"
    pod = h.objects[POD]
    assert pod["spec"]["runtimeClassName"] == "gvisor" and pod["metadata"]["annotations"][C.ANNOTATION_REPLACE_POD] == f"t-{seed}"
    assert h.objects[("PersistentVolumeClaim", "demo", "sandbox-edited-data")]["metadata"]["uid"] == claim
    status = h.objects[SANDBOX]["status"]
    assert status["securityLevel"] == "high" and status["phase"] == C.PHASE_RUNNING and status.get("restarts", 0) == 0
    assert _cond(h.objects[SANDBOX], "SpecApplied")["status"] == "True"
    assert not h.violations

    # The same token again changes nothing; a new token is a new request.
    _edit(h, _annotate(f"t-{seed}"))
    _settle(h, pods)
    assert len(pods) == 2
    _edit(h, _annotate(f"u-{seed}"))
    _settle(h, pods)
    assert len(pods) == 3 and not h.violations


@pytest.mark.parametrize("seed", SEEDS)
def test_a_warm_served_sandbox_moves_to_one_cold_pod(seed: int) -> None:
    h = Harness(CONTROLLERS, Config(warm_pod_wait_seconds=20), NOW, seed, stale=STALE)
    h.create(runtime())
    h.create({"apiVersion": C.API_VERSION, "kind": C.KIND_WARMPOOL, "metadata": {"name": "python", "namespace": "demo"},
              "spec": {"runtime": "python:3.11", "minSize": 1}})
    h.run_until_quiet()
    h.create({"apiVersion": C.API_VERSION, "kind": C.KIND_SANDBOX,
              "metadata": {"name": "edited", "namespace": "demo", "annotations": {C.ANNOTATION_USE_WARM_POD: "true"}},
              "spec": {"runtime": "python-3.11"}})
    pods: set[str] = set()
    _settle(h, pods)
    status = h.objects[SANDBOX]["status"]
    assert status["warmPodUsed"] is True and not pods, "served warm"
    _edit(h, lambda obj: obj["spec"].__setitem__("resources", {"memory": "1Gi"}))
    _settle(h, pods)
    assert _cond(h.objects[SANDBOX], "SpecApplied")["reason"] == "PodOutdated" and not pods
    _edit(h, _annotate("t1"))
    _settle(h, pods)
    for _ in range(20):
        h.run_round()
    status = h.objects[SANDBOX]["status"]
    assert len(pods) == 1 and status["warmPodUsed"] is False and status["phase"] == C.PHASE_RUNNING, status
    assert status.get("restarts", 0) == 0, "a requested replacement is no failure"
    assert h.objects[POD]["spec"]["containers"][0]["resources"]["limits"]["memory"] == "1Gi"
    assert _cond(h.objects[SANDBOX], "SpecApplied")["status"] == "True"
    sandbox_uid = h.objects[SANDBOX]["metadata"]["uid"]
    bound = [o for k, o in h.objects.items() if k[0] == C.KIND_WARMPOD
             and ((o.get("spec") or {}).get("assignment") or {}).get("sandboxUid") == sandbox_uid]
    assert not bound, "the pool released the warm pod"
    assert not h.violations
