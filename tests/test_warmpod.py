"""WarmPod hook: golden desired state, every child validated against the Kubernetes 1.33 schemas,
every pod against the security bar, and table tests of labelling, phases and teardown."""
from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest

from hooks import constants as C
from hooks.server import jsonio
from hooks import warmpod_sync
from hooks.config import Config
from tests import warm_cases as cases
from tests.crdutil import assert_status_fits
from tests.factory import NOW
from tests.golden import check_golden
from tests.security import assert_pod_hardened

K8S_VERSION = "1.33"
CASES = cases.WARMPOD_CASES


def run(case: str) -> dict[str, Any]:
    build, hook = CASES[case]
    return hook(build(), NOW)


def child(response: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in response["children"] if c["kind"] == kind)


def cond(response: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in response["status"]["conditions"] if c["type"] == type_)


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    build, hook = CASES[case]
    request = build()
    check_golden(f"warmpod/{case}.json", request, hook(request, NOW))


@pytest.mark.parametrize("case", sorted(CASES))
def test_children_validate_strictly_and_pods_are_hardened(case: str) -> None:
    for obj in run(case)["children"]:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        if obj["kind"] == "Pod":
            assert_pod_hardened(obj)
            assert "serviceAccountName" not in obj["spec"]
            assert len(obj["metadata"]["name"]) <= C.MAX_DNS_LABEL


@pytest.mark.parametrize("case", sorted(CASES))
def test_status_fits_the_crd(case: str) -> None:
    build, hook = CASES[case]
    request = build()
    assert_status_fits(C.KIND_WARMPOD, hook(request, NOW)["status"])


@pytest.mark.parametrize("case", sorted(CASES))
def test_deterministic(case: str) -> None:
    build, hook = CASES[case]
    assert jsonio.dumps(hook(build(), NOW)) == jsonio.dumps(hook(build(), NOW))


@pytest.mark.parametrize("case", sorted(set(CASES) - {"invalid-spec"}))
def test_pod_spec_never_depends_on_assignment_or_pod_state(case: str) -> None:
    """The Pod's spec is a function of the WarmPod's spec only: the InPlace update the WarmPod
    controller makes can only ever change labels and annotations (Pods are otherwise immutable)."""
    build, hook = CASES[case]
    request = build()
    pods = [c for c in hook(request, NOW)["children"] if c["kind"] == "Pod"]
    if not pods:
        return
    parent = copy.deepcopy(request["parent"])
    parent["spec"].pop("assignment", None)
    parent["metadata"].pop("deletionTimestamp", None)
    idle = warmpod_sync.sync(cases.warmpod_request(parent), NOW)
    assert pods[0]["spec"] == child(idle, "Pod")["spec"]


def test_new_warm_pod_gets_pod_and_default_deny() -> None:
    out = run("new")
    pod, policy = child(out, "Pod"), child(out, "NetworkPolicy")
    assert pod["metadata"]["name"] == "warm-python-0"  # never a sandbox child's name (sandbox-...)
    assert policy["metadata"]["name"] == "warm-python-0-default-deny"
    assert pod["metadata"]["labels"][C.LABEL_WARMPOD] == "python-0"
    assert pod["metadata"]["labels"][C.LABEL_WARMPOOL] == "python"
    assert C.LABEL_SANDBOX_UID not in pod["metadata"]["labels"]
    assert policy["spec"] == {"podSelector": {"matchLabels": {C.LABEL_APP: C.APP_NAME, C.LABEL_WARMPOD: "python-0"}},
                              "policyTypes": ["Ingress", "Egress"]}
    assert out["status"]["phase"] == "Pending" and out["status"]["podName"] == "warm-python-0"


def test_policy_selects_the_pod() -> None:
    out = run("assigned")
    labels = child(out, "Pod")["metadata"]["labels"]
    selector = child(out, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"]
    assert all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("case,phase", [
    ("new", "Pending"), ("starting", "Pending"), ("ready", "Ready"), ("relabel", "Assigned"), ("relabel-old-pod", "Pending"),
    ("assigned", "Assigned"), ("label-conflict", "Failed"), ("pod-failed", "Failed"),
    ("invalid-spec", "Failed"), ("finalize-pod", "Terminating"), ("finalize-policy", "Terminating"), ("finalize-done", "Terminating"),
])
def test_phase(case: str, phase: str) -> None:
    assert run(case)["status"]["phase"] == phase


def test_ready_heartbeat_is_the_pods_ready_time() -> None:
    assert run("ready")["status"]["lastHeartbeat"] == "2026-11-22T11:59:58Z"
    assert "lastHeartbeat" not in run("starting")["status"]


def test_assignment_labels_the_pod_with_the_sandbox_identity() -> None:
    out = run("relabel")
    labels = child(out, "Pod")["metadata"]["labels"]
    assert labels[C.LABEL_SANDBOX_UID] == cases.SANDBOX["metadata"]["uid"]
    assert labels[C.LABEL_SANDBOX_ID] == "user"
    assert labels[C.LABEL_APP] == C.APP_NAME
    # Serving already: the sandbox selects the pod by its serving selector, not by these labels.
    assert cond(out, "Assigned")["reason"] == "PodSelectable" and cond(out, "Assigned")["status"] == "True"
    old = run("relabel-old-pod")
    assert child(old, "Pod")["metadata"]["labels"][C.LABEL_SANDBOX_UID] == cases.SANDBOX["metadata"]["uid"]
    assert cond(old, "Assigned")["reason"] == "Relabelling" and "servingSelector" not in old["status"]


def test_the_pod_carries_its_serving_selector_from_creation() -> None:
    """The WarmPod's UID label is on the Pod from the first sync, and fixed: a sandbox served by it
    points its Service and policies at it without waiting for a relabel. servingSelector reports
    it once the observed Pod carries it."""
    parent = cases.warmpod_parent()
    wanted = {C.LABEL_APP: C.APP_NAME, C.LABEL_WARMPOD_UID: parent["metadata"]["uid"]}
    for case in ("new", "ready", "relabel", "assigned"):
        labels = child(run(case), "Pod")["metadata"]["labels"]
        assert {k: labels.get(k) for k in wanted} == wanted, case
    assert "servingSelector" not in run("new")["status"]  # no pod observed yet
    for case in ("ready", "relabel", "assigned", "pod-failed"):
        assert run(case)["status"]["servingSelector"] == wanted, case


def test_a_pod_labelled_for_another_sandbox_is_never_relabelled() -> None:
    out = run("label-conflict")
    labels = child(out, "Pod")["metadata"]["labels"]
    assert labels[C.LABEL_SANDBOX_UID] == cases.OTHER["metadata"]["uid"]
    assert labels[C.LABEL_SANDBOX_ID] == "someone-else"
    assert cond(out, "Assigned")["reason"] == "PodLabelConflict"


def test_preload_scripts_run_as_hardened_init_containers() -> None:
    out = run("preload-high")
    pod = child(out, "Pod")
    inits = pod["spec"]["initContainers"]
    assert [c["name"] for c in inits] == ["preload-import-numpy", "preload-compile"]
    assert inits[0]["command"] == ["/bin/sh", "-c", "python -c 'import numpy'"]
    assert pod["spec"]["runtimeClassName"] == Config().high_security_runtime_class
    assert pod["metadata"]["annotations"][C.ANNOTATION_PRELOAD_HASH].startswith("sha256:")


def test_pod_uses_the_defaults_a_sandbox_must_match() -> None:
    pod = child(run("new"), "Pod")
    sc = pod["spec"]["securityContext"]
    assert (sc["runAsUser"], sc["runAsGroup"], sc["seccompProfile"]) == (1000, 1000, {"type": "RuntimeDefault"})
    mounts = sorted(m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"])
    assert mounts == sorted(C.DEFAULT_WRITABLE_PATHS)
    assert pod["spec"]["containers"][0]["resources"]["limits"] == {"cpu": "500m", "memory": "512Mi", "ephemeral-storage": "1Gi"}


def test_invalid_spec_keeps_the_pod() -> None:
    request = cases.wpod_invalid_spec()
    out = warmpod_sync.sync(request, NOW)
    assert {c["kind"] for c in out["children"]} == {"Pod", "NetworkPolicy"}
    assert cond(out, "Validated")["status"] == "False"


def test_finalize_drops_the_pod_first_then_the_policy() -> None:
    first = run("finalize-pod")
    assert [c["kind"] for c in first["children"]] == ["NetworkPolicy"] and first["finalized"] is False
    policy = run("finalize-policy")
    assert policy["children"] == [] and policy["finalized"] is False and policy["resyncAfterSeconds"] > 0
    done = run("finalize-done")
    assert done["children"] == [] and done["finalized"] is True


def test_sync_of_a_deleting_warm_pod_finalizes() -> None:
    request = cases.wpod_finalize_done()
    request["finalizing"] = False
    assert warmpod_sync.sync(request, NOW)["finalized"] is True


def test_warm_pod_grace_is_bounded_by_the_operators_maximum() -> None:
    # A warm pod runs a sandbox's code once assigned: the same bound as a cold pod applies.
    build, hook = CASES[sorted(CASES)[0]]
    default = child(hook(build(), NOW), "Pod")
    assert default["spec"]["terminationGracePeriodSeconds"] == 300
    bounded = child(hook(build(), NOW, Config(max_termination_grace_seconds=20)), "Pod")
    assert bounded["spec"]["terminationGracePeriodSeconds"] == 20
