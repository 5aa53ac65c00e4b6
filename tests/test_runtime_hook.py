"""The RuntimeEnvironment hook: every validation failure with its reason, success, goldens and
determinism (lastValidated moves only when the verdict does)."""
from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any, Callable, Optional

import pytest

from hooks import image_reference, runtime_sync
from hooks.server import jsonio
from hooks.config import Config
from hooks.meta import fmt_time
from tests.factory import NOW, runtime
from tests.golden import check_golden

EARLIER = "2026-11-20T08:00:00Z"


def node(name: str, user_namespaces: Optional[bool] = True, *, taint: Optional[str] = None, cordoned: bool = False) -> dict[str, Any]:
    """A Node as the kubelet reports it: runtimeHandlers from its container runtime (containerd
    1.x reports no userNamespaces feature: `user_namespaces=None`)."""
    features = {"recursiveReadOnlyMounts": True, **({"userNamespaces": user_namespaces} if user_namespaces is not None else {})}
    spec: dict[str, Any] = {**({"unschedulable": True} if cordoned else {}),
                            **({"taints": [{"key": "k", "value": "v", "effect": taint}]} if taint else {})}
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "uid": f"uid-{name}"}, "spec": spec,
            "status": {"runtimeHandlers": [{"name": "", "features": features}, {"name": "runc", "features": features}]}}


ONE_NODE = (node("node-a"),)


def request(spec: Optional[dict[str, Any]] = None, status: Optional[dict[str, Any]] = None, *,
            name: str = "python-3.11", replace: Optional[dict[str, Any]] = None,
            nodes: tuple[dict[str, Any], ...] = ONE_NODE) -> dict[str, Any]:
    parent = runtime(name, available=None)
    parent["spec"]["image"] = "ghcr.io/llmsafespace/runtime-python:3.11"
    for key, value in (spec or {}).items():  # None removes a field
        if value is None:
            parent["spec"].pop(key, None)
        else:
            parent["spec"][key] = value
    if replace is not None:
        parent["spec"] = replace
    if status is not None:
        parent["status"] = status
    return {
        "controller": {"apiVersion": "metacontroller.k8s.io/v1alpha1", "kind": "CompositeController",
                       "metadata": {"name": "llmsafespace-runtimeenvironment"}},
        "parent": parent, "children": {}, "related": {"Node.v1": {n["metadata"]["name"]: n for n in nodes}}, "finalizing": False,
    }


def condition(response: dict[str, Any], type_: str = "Available") -> dict[str, Any]:
    (cond,) = [c for c in response["status"]["conditions"] if c["type"] == type_]
    return cond


FULL = {
    "packageManager": "pip",
    "securityFeatures": ["gvisor", "seccomp", "non-root", "readonly-rootfs"],
    "preInstalledPackages": ["numpy", "pandas==2.2.0", "scikit-learn>=1.4"],
    "resourceRequirements": {"minCpu": "100m", "minMemory": "128Mi", "recommendedCpu": "500m", "recommendedMemory": "512Mi"},
}
DIGEST = "sha256:" + "0123456789abcdef" * 4
ALLOW = Config(image_registry_allowlist=("ghcr.io", "docker.io"))

# (id, spec overrides, config, expected reason, fragment of the message)
CASES: list[tuple[str, dict[str, Any], Config, str, str]] = [
    ("valid full", FULL, Config(), "ValidationSucceeded", "valid and available"),
    ("valid minimal", {}, Config(), "ValidationSucceeded", "valid and available"),
    ("valid digest pinned", {"image": f"ghcr.io/llmsafespace/runtime-python@{DIGEST}"}, ALLOW, "ValidationSucceeded", "available"),
    ("valid tag and digest", {"image": f"ghcr.io/llmsafespace/runtime-python:3.11@{DIGEST}"}, ALLOW, "ValidationSucceeded", "available"),
    ("valid bare name is docker.io", {"image": "python:3.11-slim"}, Config(image_registry_allowlist=("docker.io",)), "ValidationSucceeded", "available"),
    ("valid legacy docker hub name", {"image": "index.docker.io/library/python:3.11"}, Config(image_registry_allowlist=("docker.io",)), "ValidationSucceeded", "available"),
    ("valid registry with port", {"image": "registry.local:5000/rt/python:3.11"}, Config(image_registry_allowlist=("registry.local:5000",)), "ValidationSucceeded", "available"),
    ("valid unknown language any manager", {"language": "elixir", "version": "1.17", "packageManager": "mix"}, Config(), "ValidationSucceeded", "available"),
    ("valid nodejs pnpm", {"language": "nodejs", "version": "20", "packageManager": "pnpm"}, Config(), "ValidationSucceeded", "available"),
    ("valid no version", {"version": None}, Config(), "ValidationSucceeded", "available"),
    # Image
    ("image upper case repository", {"image": "ghcr.io/LLMSafeSpace/python:3.11"}, Config(), "ImageValidationFailed", "LLMSafeSpace"),
    ("image bad tag", {"image": "ghcr.io/x/python:-bad"}, Config(), "ImageValidationFailed", "tag '-bad'"),
    ("image short digest", {"image": "ghcr.io/x/python@sha256:abc"}, Config(), "ImageValidationFailed", "64 lower-case hex"),
    ("image unknown digest algorithm", {"image": "ghcr.io/x/python@md5:" + "a" * 32}, Config(), "ImageValidationFailed", "sha256"),
    ("image empty path component", {"image": "ghcr.io//python"}, Config(), "ImageValidationFailed", "component ''"),
    ("image whitespace", {"image": " python:3.11"}, Config(), "ImageValidationFailed", "whitespace"),
    ("image empty", {"image": ""}, Config(), "ImageValidationFailed", "spec.image is required"),
    ("image registry not allowed", {"image": "quay.io/x/python:3.11"}, ALLOW, "ImageValidationFailed", "'quay.io' of spec.image is not in the allowlist"),
    ("image bare name not allowed", {"image": "python:3.11"}, Config(image_registry_allowlist=("ghcr.io",)), "ImageValidationFailed", "'docker.io'"),
    # Compatibility
    ("language syntax", {"language": "Python 3"}, Config(), "CompatibilityCheckFailed", "spec.language"),
    ("version syntax", {"version": "3.11:slim"}, Config(), "CompatibilityCheckFailed", "spec.version"),
    ("package manager of another language", {"packageManager": "npm"}, Config(), "CompatibilityCheckFailed", "not a python package manager"),
    ("package manager malformed for unknown language", {"language": "elixir", "packageManager": "Mix Tool"}, Config(), "CompatibilityCheckFailed", "spec.packageManager"),
    ("resource does not parse", {"resourceRequirements": {"minCpu": "lots"}}, Config(), "CompatibilityCheckFailed", "minCpu"),
    ("resource zero", {"resourceRequirements": {"minMemory": "0"}}, Config(), "CompatibilityCheckFailed", "greater than zero"),
    ("resource exponent overflows", {"resourceRequirements": {"minCpu": "1e1000000"}}, Config(), "CompatibilityCheckFailed", "not a Kubernetes quantity"),
    ("min cpu above recommended", {"resourceRequirements": {"minCpu": "2", "recommendedCpu": "500m"}}, Config(), "CompatibilityCheckFailed", "minCpu '2' exceeds recommendedCpu '500m'"),
    ("min memory above recommended", {"resourceRequirements": {"minMemory": "1Gi", "recommendedMemory": "512Mi"}}, Config(), "CompatibilityCheckFailed", "minMemory"),
    ("package syntax", {"preInstalledPackages": ["numpy", "rm -rf /"]}, Config(), "CompatibilityCheckFailed", "rm -rf /"),
    ("spec shape", {"tags": "python"}, Config(), "CompatibilityCheckFailed", "spec.tags"),
    # Security
    ("unknown security feature", {"securityFeatures": ["gvisor", "magic-shield"]}, Config(), "SecurityValidationFailed", "magic-shield"),
    ("security feature case matters", {"securityFeatures": ["GVISOR"]}, Config(), "SecurityValidationFailed", "GVISOR"),
    # Order: the first failing step decides.
    ("image before compatibility", {"image": "Bad Image", "language": "Python 3"}, Config(), "ImageValidationFailed", "Bad Image"),
    ("compatibility before security", {"packageManager": "npm", "securityFeatures": ["x"]}, Config(), "CompatibilityCheckFailed", "npm"),
]


@pytest.mark.parametrize("spec,config,reason,fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_validation(spec: dict[str, Any], config: Config, reason: str, fragment: str) -> None:
    out = runtime_sync.sync(request(spec), NOW, config)
    cond = condition(out)
    assert cond["reason"] == reason
    assert fragment in cond["message"], cond["message"]
    ok = reason == "ValidationSucceeded"
    assert out["status"]["available"] is ok
    assert cond["status"] == ("True" if ok else "False")
    assert out["children"] == []
    assert out["status"]["lastValidated"] == fmt_time(NOW)


@pytest.mark.parametrize("reason,prefix", [
    ("ImageValidationFailed", "Runtime image validation failed: "),
    ("CompatibilityCheckFailed", "Runtime compatibility check failed: "),
    ("SecurityValidationFailed", "Runtime security validation failed: "),
])
def test_messages_keep_the_original_wording(reason: str, prefix: str) -> None:
    for _, spec, config, want, _ in CASES:
        if want == reason:
            assert condition(runtime_sync.sync(request(spec), NOW, config))["message"].startswith(prefix)


def test_missing_spec_is_an_image_failure_not_a_crash() -> None:
    out = runtime_sync.sync(request(replace={}), NOW)
    assert condition(out)["reason"] == "ImageValidationFailed"
    out = runtime_sync.sync(request(replace="nonsense"), NOW)  # type: ignore[arg-type]
    assert condition(out)["reason"] == "ImageValidationFailed"


def test_bad_request() -> None:
    from hooks.response import BadRequest
    with pytest.raises(BadRequest):
        runtime_sync.sync({"parent": "x"}, NOW)


# ---------------------------------------------------------------------------------------------
# Determinism


def previous(available: bool, reason: str, stamp: str = EARLIER) -> dict[str, Any]:
    return {
        "available": available, "lastValidated": stamp, "observedGeneration": 1,
        "conditions": [{"type": "Available", "status": "True" if available else "False", "reason": reason,
                        "message": "old", "lastTransitionTime": stamp, "observedGeneration": 1}],
    }


def test_same_request_same_bytes() -> None:
    for _, spec, config, _, _ in CASES:
        req = request(spec)
        assert jsonio.dumps(runtime_sync.sync(req, NOW, config)) == jsonio.dumps(runtime_sync.sync(copy.deepcopy(req), NOW, config))


def test_last_validated_carried_when_verdict_unchanged() -> None:
    later = NOW + timedelta(hours=3)
    out = runtime_sync.sync(request(FULL, previous(True, "ValidationSucceeded")), later)
    assert out["status"]["lastValidated"] == EARLIER
    assert condition(out)["lastTransitionTime"] == EARLIER
    # A re-sync of our own answer (Metacontroller writes it, then syncs again) is a fixed point.
    again = request(FULL, {**out["status"], "observedGeneration": 1})
    assert runtime_sync.sync(again, later + timedelta(minutes=1)) == out


def test_last_validated_carried_for_an_unchanged_failure() -> None:
    out = runtime_sync.sync(request({"securityFeatures": ["x"]}, previous(False, "SecurityValidationFailed")), NOW)
    assert out["status"]["lastValidated"] == EARLIER


@pytest.mark.parametrize("old_available,old_reason,spec", [
    (False, "ImageValidationFailed", FULL),  # fixed: becomes available
    (True, "ValidationSucceeded", {"securityFeatures": ["x"]}),  # broken: becomes unavailable
    (False, "ImageValidationFailed", {"securityFeatures": ["x"]}),  # still unavailable, other reason
])
def test_last_validated_moves_when_verdict_changes(old_available: bool, old_reason: str, spec: dict[str, Any]) -> None:
    out = runtime_sync.sync(request(spec, previous(old_available, old_reason)), NOW)
    assert out["status"]["lastValidated"] == fmt_time(NOW)


def test_last_validated_set_without_previous_condition() -> None:
    out = runtime_sync.sync(request(FULL, {"available": True, "lastValidated": EARLIER}), NOW)
    assert out["status"]["lastValidated"] == fmt_time(NOW)


def test_updated_condition_of_metacontroller_is_kept() -> None:
    status = previous(True, "ValidationSucceeded")
    status["conditions"].append({"type": "Updated", "status": "True", "reason": "OnLatestRevision", "lastTransitionTime": EARLIER})
    out = runtime_sync.sync(request(FULL, status), NOW)
    assert [c["type"] for c in out["status"]["conditions"]] == ["Available", "Updated", "UserNamespaces"]


# ---------------------------------------------------------------------------------------------
# User namespaces: what the nodes report decides hostUsers (docs/install.md, "User namespaces")


@pytest.mark.parametrize("nodes,supported,reason", [
    (ONE_NODE, True, "SupportedByNodes"),
    ((node("a"), node("b")), True, "SupportedByNodes"),
    ((node("a"), node("b", None)), False, "NotSupportedByNodes"),  # containerd 1.x reports nothing
    ((node("a"), node("b", False)), False, "NotSupportedByNodes"),
    # Nodes no sandbox pod can land on do not count, either way.
    ((node("a"), node("b", None, cordoned=True)), True, "SupportedByNodes"),
    ((node("a"), node("b", None, taint="NoSchedule")), True, "SupportedByNodes"),
    ((node("a"), node("b", None, taint="NoExecute")), True, "SupportedByNodes"),
    ((node("a"), node("b", None, taint="PreferNoSchedule")), False, "NotSupportedByNodes"),
    ((node("a", taint="NoSchedule"),), False, "NoSchedulableNodes"),
    ((), False, "NoSchedulableNodes"),
])
def test_user_namespaces_follow_the_schedulable_nodes(nodes: tuple[dict[str, Any], ...], supported: bool, reason: str) -> None:
    out = runtime_sync.sync(request(FULL, nodes=nodes), NOW)
    assert out["status"]["userNamespaces"] == {"supported": supported}
    cond = condition(out, "UserNamespaces")
    assert (cond["status"], cond["reason"]) == ("True" if supported else "False", reason)
    assert condition(out)["reason"] == "ValidationSucceeded"  # availability is another question


def test_nodes_lacking_support_are_named() -> None:
    nodes = (node("a"),) + tuple(node(f"old-{i}", None) for i in range(7))
    message = condition(runtime_sync.sync(request(FULL, nodes=nodes), NOW), "UserNamespaces")["message"]
    assert "7 of 8 schedulable nodes" in message and "old-0, old-1, old-2, old-3, old-4 and 2 more" in message
    assert "containerd >= 2.0" in message


def test_a_handler_without_the_default_name_does_not_count() -> None:
    only_runc = node("a")
    only_runc["status"]["runtimeHandlers"] = [h for h in only_runc["status"]["runtimeHandlers"] if h["name"] == "runc"]
    assert runtime_sync.sync(request(FULL, nodes=(only_runc,)), NOW)["status"]["userNamespaces"] == {"supported": False}


def test_customize_relates_every_node() -> None:
    assert runtime_sync.customize(request(FULL)) == {"relatedResources": [{"apiVersion": "v1", "resource": "nodes"}]}


# ---------------------------------------------------------------------------------------------
# Image references beyond the hook


@pytest.mark.parametrize("reference,registry,repository,tag", [
    ("python", "docker.io", "library/python", None),
    ("docker.io/python:3.11", "docker.io", "library/python", "3.11"),
    ("bitnami/python:3.11", "docker.io", "bitnami/python", "3.11"),
    ("localhost/python", "localhost", "python", None),
    ("localhost:5000/python", "localhost:5000", "python", None),
    ("Registry.Example.com/a/b_c__d.e--f:v1.2", "registry.example.com", "a/b_c__d.e--f", "v1.2"),
    ("[2001:db8::1]:5000/rt/python:3", "[2001:db8::1]:5000", "rt/python", "3"),
])
def test_image_reference_normalisation(reference: str, registry: str, repository: str, tag: Optional[str]) -> None:
    ref = image_reference.parse(reference)
    assert (ref.registry, ref.repository, ref.tag) == (registry, repository, tag)


@pytest.mark.parametrize("reference", [
    "a" * 64,  # looks like an image ID
    "ghcr.io/x/" + "a" * 250,  # name longer than 255
    "ghcr.io/x:" + "t" * 129,  # tag longer than 128
    "ghcr.io/x/-y", "ghcr.io/x/y-", "ghcr.io/x/y._z", "bad_host.com/x", "ghcr.io/x@sha256:" + "A" * 64,
])
def test_image_reference_rejects(reference: str) -> None:
    with pytest.raises(image_reference.InvalidReference):
        image_reference.parse(reference)


# ---------------------------------------------------------------------------------------------
# Goldens

GOLDEN: dict[str, tuple[Callable[[], dict[str, Any]], Config]] = {
    "available": (lambda: request(FULL), Config()),
    "available-carried": (lambda: request(FULL, previous(True, "ValidationSucceeded")), Config()),
    "image-invalid": (lambda: request({"image": "ghcr.io/x/python:-bad"}), Config()),
    "image-registry-not-allowed": (lambda: request({"image": "quay.io/x/python:3.11"}), ALLOW),
    "compatibility-failed": (lambda: request({"packageManager": "npm", "resourceRequirements": {"minCpu": "2", "recommendedCpu": "1"}}), Config()),
    "security-failed": (lambda: request({"securityFeatures": ["gvisor", "magic-shield"]}), Config()),
    "became-unavailable": (lambda: request({"securityFeatures": ["magic-shield"]}, previous(True, "ValidationSucceeded")), Config()),
    "userns-unsupported": (lambda: request(FULL, nodes=(node("node-a"), node("node-b", None))), Config()),
}


@pytest.mark.parametrize("case", sorted(GOLDEN))
def test_golden(case: str) -> None:
    build, config = GOLDEN[case]
    req = build()
    check_golden(f"runtimeenvironment/{case}.json", req, runtime_sync.sync(req, NOW, config))
