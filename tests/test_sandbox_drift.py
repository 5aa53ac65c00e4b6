"""Table tests of a spec edit the running pod does not have (issue 12, item 5). Pods are immutable
and Metacontroller never updates the sandbox's pod (OnDelete): status describes the pod that runs,
read from the pod itself, the condition SpecApplied names every difference and how to apply it,
and the annotation llmsafespace.dev/replace-pod replaces the pod once per token, its volume kept."""
from __future__ import annotations

import copy
from typing import Any, Optional

import pytest

from hooks import constants as C
from hooks import sandbox_sync
from tests import sandbox_cases as cases
from tests.factory import NOW, observed, running_pod_status, runtime, sandbox, sync_request

RTE = cases.RTE
RTE_312 = runtime("python-3.12", version="3.12")


def cond(response: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in response["status"]["conditions"] if c["type"] == type_)


def pod_of(response: dict[str, Any]) -> Optional[dict[str, Any]]:
    return next((c for c in response["children"] if c["kind"] == "Pod"), None)


def edited(spec: dict[str, Any], edit: dict[str, Any], *, annotations: Optional[dict[str, str]] = None,
           pod_annotations: Optional[dict[str, str]] = None, status: Optional[dict[str, Any]] = None,
           pod_status: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """A sync of a sandbox whose children were made from `spec` (its pod running and ready) and
    whose spec is now `spec` updated with `edit`."""
    before = sandbox("edited", spec=copy.deepcopy(spec) or None)
    children = cases._children_of(before, **(pod_status or running_pod_status()))
    for child in children:
        if child["kind"] == "Pod" and pod_annotations:
            child["metadata"]["annotations"].update(pod_annotations)
    after = sandbox("edited", spec={**copy.deepcopy(spec), **edit} or None, annotations=annotations,
                    status=status or {"phase": "Running", "securityLevel": spec.get("securityLevel", "standard")}, generation=2)
    return sync_request(after, children=children, related=[RTE, RTE_312])


# ---------------------------------------------------------------------------------------------
# Status says what runs, SpecApplied says what differs


def test_a_level_edit_is_reported_as_not_applied_and_status_keeps_the_running_level() -> None:
    out = sandbox_sync.sync(edited({}, {"securityLevel": "high"}), NOW)
    status = out["status"]
    assert status["securityLevel"] == "standard", "the pod that runs has no gVisor"
    assert status["phase"] == "Running" and cond(out, "Ready")["status"] == "True", "the old pod still serves"
    applied = cond(out, "SpecApplied")
    assert (applied["status"], applied["reason"]) == ("False", "PodOutdated"), applied
    for words in ("securityLevel", "standard", "high", f"{C.ANNOTATION_REPLACE_POD}=", "kubectl annotate sandbox edited -n demo",
                  "volume"):
        assert words in applied["message"], applied["message"]
    assert "security level high" in cond(out, "Validated")["message"], "Validated describes the spec"
    pod = pod_of(out)
    assert pod is not None and pod["metadata"]["name"] == "sandbox-edited", "the pod is kept (OnDelete: never updated)"


@pytest.mark.parametrize("spec, edit, field, running, wanted", [
    ({}, {"resources": {"cpu": "1"}}, "resources.cpu", "500m", "1"),
    ({}, {"resources": {"memory": "1Gi"}}, "resources.memory", "512Mi", "1Gi"),
    ({}, {"resources": {"ephemeralStorage": "2Gi"}}, "resources.ephemeralStorage", "1Gi", "2Gi"),
    ({"resources": {"cpu": "1"}}, {"resources": {"cpu": "1", "cpuPinning": True}}, "resources.cpuPinning", "false", "true"),
    ({}, {"runtime": "python:3.12"}, "runtime", "python-3.11", "python-3.12"),
    ({}, {"timeout": 60}, "timeout", "300", "60"),
    ({}, {"filesystem": {"writablePaths": ["/tmp"]}}, "filesystem.writablePaths", "/tmp, /workspace", "/tmp"),
    ({}, {"securityContext": {"runAsUser": 2000}}, "securityContext.runAsUser", "1000", "2000"),
    ({"securityLevel": "high"}, {"securityLevel": "standard"}, "securityLevel", "high", "standard"),
    ({}, {"securityLevel": "custom", "securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}}},
     "securityContext.seccompProfile", "RuntimeDefault", "Localhost p.json"),
], ids=["cpu", "memory", "ephemeral", "cpu-pinning", "runtime", "timeout", "writable-paths", "run-as-user", "level-down", "seccomp"])
def test_each_pod_setting_edit_is_named(spec: dict[str, Any], edit: dict[str, Any], field: str, running: str, wanted: str) -> None:
    out = sandbox_sync.sync(edited(spec, edit), NOW)
    applied = cond(out, "SpecApplied")
    assert applied["status"] == "False", applied
    assert f"{field}: runs {running}, spec asks {wanted}" in applied["message"], applied["message"]


def test_a_runtime_edit_reports_the_running_runtime() -> None:
    out = sandbox_sync.sync(edited({}, {"runtime": "python:3.12"}), NOW)
    assert out["status"]["runtimeEnvironment"] == "python-3.11"
    assert "ghcr.io/llmsafespace/runtime-python:3.11" in cond(out, "SpecApplied")["message"], "the image names the difference"


@pytest.mark.parametrize("spec, edit", [
    ({}, {}),
    ({}, {"resources": {"cpu": "0.5"}}),  # the same quantity, spelled otherwise
    ({}, {"networkAccess": {"ingress": True}}),  # network policies are updated in place: no pod setting
    ({"securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}}}, {"securityLevel": "custom"}),
], ids=["unchanged", "same-quantity", "network-only", "standard-localhost-to-custom-same-pod"])
def test_edits_that_change_no_pod_setting_are_applied(spec: dict[str, Any], edit: dict[str, Any]) -> None:
    out = sandbox_sync.sync(edited(spec, edit), NOW)
    applied = cond(out, "SpecApplied")
    assert (applied["status"], applied["reason"]) == ("True", "PodUpToDate"), applied
    assert out["status"]["securityLevel"] == {**spec, **edit}.get("securityLevel", "standard")


def test_a_pod_as_the_api_server_stores_it_is_up_to_date() -> None:
    # The API server canonicalises quantities and adds defaults: neither is a difference.
    request = edited({"resources": {"cpu": "1000m", "memory": "1024Mi"}}, {})
    pod = next(iter(request["children"][C.GVK_POD].values()))
    pod["spec"].update({"dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler", "tolerations": [{"key": "x"}]})
    container = pod["spec"]["containers"][0]
    container["resources"] = {"limits": {"cpu": "1", "memory": "1Gi", "ephemeral-storage": "1Gi"},
                              "requests": {"cpu": "1", "memory": "1Gi", "ephemeral-storage": "1Gi"}}
    container["terminationMessagePath"] = "/dev/termination-log"
    assert cond(sandbox_sync.sync(request, NOW), "SpecApplied")["status"] == "True"


def test_no_condition_before_a_pod_runs() -> None:
    out = sandbox_sync.sync(cases.minimal(), NOW)
    assert all(c["type"] != "SpecApplied" for c in out["status"]["conditions"])


# ---------------------------------------------------------------------------------------------
# Replacement on request, once per token


def test_a_requested_replacement_deletes_the_old_pod_once_and_keeps_the_volume() -> None:
    spec = {"storage": {"persistent": True}}
    request = edited(spec, {"securityLevel": "high"}, annotations={C.ANNOTATION_REPLACE_POD: "t1"},
                     status={"phase": "Running", "restarts": 1}, pod_annotations={C.ANNOTATION_POD_RESTARTS: "1"})
    out = sandbox_sync.sync(request, NOW)
    assert pod_of(out) is None, "left out: Metacontroller deletes it"
    assert any(c["kind"] == "PersistentVolumeClaim" for c in out["children"]), "the volume stays"
    assert out["status"]["phase"] == "Creating" and out["status"]["restarts"] == 1, "a requested replacement is no failure"
    ready = cond(out, "Ready")
    assert ready["reason"] == "PodReplacing" and "t1" in ready["message"], ready
    assert cond(out, "SpecApplied")["reason"] == "PodReplacing"
    # Next sync: no pod observed; the new one has the new level, carries the token and its number.
    request["children"][C.GVK_POD] = {}
    request["parent"]["status"] = out["status"]
    new = pod_of(sandbox_sync.sync(request, NOW))
    assert new is not None and new["spec"]["runtimeClassName"] == "gvisor"
    assert new["metadata"]["annotations"][C.ANNOTATION_REPLACE_POD] == "t1"
    assert new["metadata"]["annotations"][C.ANNOTATION_POD_RESTARTS] == "1"


def test_a_pod_that_carries_the_token_is_never_replaced_again() -> None:
    # Seen with any status, however stale: the pod made for this token stays.
    for status in ({"phase": "Running"}, {"phase": "Creating", "restarts": 0}, {}):
        request = edited({}, {}, annotations={C.ANNOTATION_REPLACE_POD: "t1"}, pod_annotations={C.ANNOTATION_REPLACE_POD: "t1"},
                         status=status)
        out = sandbox_sync.sync(request, NOW)
        assert pod_of(out) is not None and out["status"]["phase"] == "Running", status
        assert cond(out, "SpecApplied")["status"] == "True"


def test_a_new_token_replaces_again_and_an_empty_one_is_no_request() -> None:
    again = sandbox_sync.sync(edited({}, {}, annotations={C.ANNOTATION_REPLACE_POD: "t2"},
                                     pod_annotations={C.ANNOTATION_REPLACE_POD: "t1"}), NOW)
    assert pod_of(again) is None
    empty = sandbox_sync.sync(edited({}, {"securityLevel": "high"}, annotations={C.ANNOTATION_REPLACE_POD: ""}), NOW)
    assert pod_of(empty) is not None and cond(empty, "SpecApplied")["reason"] == "PodOutdated"


def test_a_sandbox_created_with_a_token_gets_its_first_pod_with_it() -> None:
    parent = sandbox("fresh", annotations={C.ANNOTATION_REPLACE_POD: "t1"})
    pod = pod_of(sandbox_sync.sync(sync_request(parent, children=cases.account(parent), related=[RTE]), NOW))
    assert pod is not None and pod["metadata"]["annotations"][C.ANNOTATION_REPLACE_POD] == "t1"


def test_the_old_pod_goes_only_once_status_counts_its_restarts() -> None:
    # The new pod takes its restart number from status: a stale status that does not count the
    # old pod's replacements yet keeps the old pod one sync longer, never loses the count.
    request = edited({}, {}, annotations={C.ANNOTATION_REPLACE_POD: "t1"}, pod_annotations={C.ANNOTATION_POD_RESTARTS: "2"},
                     status={"phase": "Running"})
    out = sandbox_sync.sync(request, NOW)
    assert pod_of(out) is not None and out["status"]["restarts"] == 2
    assert out["resyncAfterSeconds"] == sandbox_sync.CREATE_POLL_SECONDS


def test_a_failed_pod_is_replaced_as_a_failure_not_as_a_request() -> None:
    request = edited({}, {}, annotations={C.ANNOTATION_REPLACE_POD: "t1"}, status={"phase": "Running", "restarts": 1},
                     pod_status={"phase": "Failed", "reason": "Evicted", "message": "low on memory"})
    out = sandbox_sync.sync(request, NOW)
    assert out["status"]["restarts"] == 1 and cond(out, "Ready")["reason"] == "PodReplacing" and "Evicted" in cond(out, "Ready")["message"]


def test_an_invalid_spec_never_replaces_the_pod() -> None:
    request = edited({}, {"runtime": "cobol-85"}, annotations={C.ANNOTATION_REPLACE_POD: "t1"})
    out = sandbox_sync.sync(request, NOW)
    assert pod_of(out) is not None and cond(out, "Validated")["reason"] == "RuntimeNotFound"


# ---------------------------------------------------------------------------------------------
# Warm-served sandboxes: drift reported; a replacement is a cold pod


def _warm(edit: dict[str, Any], annotations: Optional[dict[str, str]] = None, status: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """A sandbox running on its warm pod (status from a first sync), its spec then edited."""
    request = cases.warm_bound()
    first = sandbox_sync.sync(request, NOW)
    parent = copy.deepcopy(request["parent"])
    parent["status"] = status if status is not None else first["status"]
    parent["spec"].update(edit)
    parent["metadata"]["annotations"].update(annotations or {})
    related = [o for group in request["related"].values() for o in group.values()] + [RTE_312]
    return sync_request(parent, children=[observed(c, parent) for c in first["children"]], related=related)


def test_a_warm_served_sandbox_reports_what_its_warm_pod_runs() -> None:
    out = sandbox_sync.sync(_warm({"securityLevel": "high", "resources": {"memory": "1Gi"}}), NOW)
    assert out["status"]["phase"] == "Running" and out["status"]["warmPodUsed"] is True
    assert out["status"]["securityLevel"] == "standard"
    applied = cond(out, "SpecApplied")
    assert applied["reason"] == "PodOutdated", applied
    assert "securityLevel: runs standard, spec asks high" in applied["message"], applied["message"]
    assert "resources.memory: runs 512Mi, spec asks 1Gi" in applied["message"]
    assert "cold" in applied["message"], "what a replacement of a warm pod means"
    assert cond(sandbox_sync.sync(_warm({}), NOW), "SpecApplied")["status"] == "True"


def test_a_replacement_requested_for_a_warm_served_sandbox_starts_cold_once() -> None:
    out = sandbox_sync.sync(_warm({"securityLevel": "high"}, {C.ANNOTATION_REPLACE_POD: "t1"}), NOW)
    assert out["status"]["warmPodUsed"] is False, "the pool releases the warm pod"
    assert cond(out, "WarmPod")["reason"] == "PodReplaceRequested"
    assert any(c["kind"] == "ServiceAccount" for c in out["children"]), "the cold start begins"


def test_a_warm_pod_bound_under_the_token_is_kept() -> None:
    # Created with the annotation: the warm pod it was given is the pod of that token.
    request = cases.warm_bound()
    request["parent"]["metadata"]["annotations"][C.ANNOTATION_REPLACE_POD] = "t1"
    first = sandbox_sync.sync(request, NOW)
    assert first["status"]["warmPodUsed"] is True and first["status"]["replacePodToken"] == "t1"
    later = sandbox_sync.sync(_warm({}, {C.ANNOTATION_REPLACE_POD: "t1"}, status=first["status"]), NOW)
    assert later["status"]["warmPodUsed"] is True
    # A status that does not say yet which token the warm pod was bound under (stale): kept too.
    stale = sandbox_sync.sync(_warm({}, {C.ANNOTATION_REPLACE_POD: "t1"}, status={"warmPool": "python-pool"}), NOW)
    assert stale["status"]["warmPodUsed"] is True


def test_a_warm_pod_not_yet_released_is_not_taken_back() -> None:
    # Found by the convergence harness: the sync after the request sees status "cold, requested"
    # but neither the ServiceAccount nor the pool's release yet; the warm pod is still Assigned.
    went_cold = sandbox_sync.sync(_warm({}, {C.ANNOTATION_REPLACE_POD: "t1"}), NOW)
    out = sandbox_sync.sync(_warm({}, {C.ANNOTATION_REPLACE_POD: "t1"}, status=went_cold["status"]), NOW)
    assert out["status"]["warmPodUsed"] is False and cond(out, "WarmPod")["reason"] == "PodReplaceRequested"
    assert "restarts" not in out["status"]


def test_the_runtimes_own_variables_are_not_the_users_environment() -> None:
    """A pod made with the runtime's env (keys, pod UID, writable paths) reads as the user's env
    alone: a fresh sandbox with no env must not report its environment as differing (the real
    control plane showed SpecApplied=False 'environment differs' on every new cold pod)."""
    from hooks import drift
    from hooks import constants as C

    runtime = [{"name": C.ENV_GATEWAY_PUBLIC_KEYS, "value": ""},
               {"name": C.ENV_POD_UID, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.uid"}}},
               {"name": C.ENV_RUNTIME_WRITABLE, "value": "/tmp"}]
    user = [{"name": "MODE", "value": "fast"}]
    pod = {"spec": {"containers": [{"name": "sandbox", "env": user + runtime}]}}
    assert drift.read_pod(pod).environment == drift.environment(user, None)
    bare = {"spec": {"containers": [{"name": "sandbox", "env": runtime}]}}
    assert drift.read_pod(bare).environment == drift.environment(None, None)
