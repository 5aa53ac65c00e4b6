"""The tenant-namespace decorator: attachments validated against Kubernetes 1.33 schemas, Pod
Security labels, annotation-driven sizes with defaults, error reporting, goldens, determinism."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable, Optional

import kubernetes_validate
import pytest
import yaml

from hooks import constants as C
from hooks.server import jsonio
from hooks import namespace_sync
from hooks.server.app import create_app
from hooks.config import Config
from hooks.quantity import parse_quantity
from hooks.response import BadRequest
from tests.factory import NOW, fake_uid
from tests.golden import check_golden

K8S_VERSION = "1.33"
ROOT = Path(__file__).parent.parent
Q = C.ANNOTATION_QUOTA_PREFIX
L = C.ANNOTATION_LIMIT_PREFIX


def namespace(name: str = "team-a", annotations: Optional[dict[str, str]] = None,
              labels: Optional[dict[str, str]] = None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name, "uid": fake_uid("ns", name), "resourceVersion": "1",
        "creationTimestamp": "2026-11-01T00:00:00Z",
        "labels": {"kubernetes.io/metadata.name": name, C.LABEL_TENANT_NAMESPACE: "true", **(labels or {})},
    }
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta, "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"}}


def request(obj: dict[str, Any], attachments: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    return {
        "controller": {"apiVersion": "metacontroller.k8s.io/v1alpha1", "kind": "DecoratorController",
                       "metadata": {"name": "llmsafespace-tenantnamespace"}},
        "object": obj,
        "attachments": attachments if attachments is not None else {C.GVK_NETWORK_POLICY: {}, C.GVK_RESOURCE_QUOTA: {}, C.GVK_LIMIT_RANGE: {}},
        "related": {},
        "finalizing": False,
    }


def observed(response: dict[str, Any], ns: str = "team-a") -> dict[str, Any]:
    """The attachments of an answer as the next request's observed attachments."""
    out: dict[str, Any] = {C.GVK_NETWORK_POLICY: {}, C.GVK_RESOURCE_QUOTA: {}, C.GVK_LIMIT_RANGE: {}}
    for attachment in response["attachments"]:
        out[C.gvk_key(attachment["kind"], attachment["apiVersion"])][f"{ns}/{attachment['metadata']['name']}"] = {**attachment, "status": {}}
    return out


def by_kind(response: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["kind"]: a for a in response["attachments"]}


def container_limits(response: dict[str, Any]) -> dict[str, Any]:
    return next(item for item in by_kind(response)["LimitRange"]["spec"]["limits"] if item["type"] == "Container")


EXAMPLE = next(d for d in yaml.safe_load_all((ROOT / "examples" / "namespace-tenant.yaml").read_text()) if d)

def hardened(req: dict[str, Any]) -> dict[str, Any]:
    """The request once the first answer's attachments exist (the cases' usual state)."""
    first = namespace_sync.sync(req, NOW)
    return {**req, "attachments": observed(first, req["object"]["metadata"]["name"])}


CASES: dict[str, Callable[[], dict[str, Any]]] = {
    "first-sync": lambda: request(namespace()),  # nothing observed yet: Pending
    "defaults": lambda: hardened(request(namespace())),
    "gvisor-baseline": lambda: hardened(request(namespace(annotations={C.ANNOTATION_GVISOR: "true"}))),
    "custom-sizes": lambda: hardened(request(namespace(annotations={
        f"{Q}cpu": "16", f"{Q}memory": "32Gi", f"{Q}pods": "50", f"{Q}storage": "1Ti", f"{Q}pvcs": "5",
        f"{Q}ephemeral-storage": "40Gi", f"{L}default-cpu": "1", f"{L}default-memory": "1Gi",
        f"{L}max-cpu": "8", f"{L}max-memory": "16Gi", f"{L}max-storage": "200Gi",
    }))),
    "invalid-annotations": lambda: hardened(request(namespace(annotations={
        f"{Q}cpu": "lots", f"{Q}pods": "1.5", f"{Q}memory": "-1Gi", f"{Q}gpu": "2",
        f"{L}default-cpu": "0", f"{L}max-memory": "256Mi", f"{L}default-memory": "1Gi",
        C.ANNOTATION_GVISOR: "yes",
    }))),
    "frozen": lambda: hardened(request(namespace(annotations={f"{Q}pods": "0", f"{Q}cpu": "0"}))),
    "example": lambda: hardened(request(EXAMPLE)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_attachments_validate_strictly(case: str) -> None:
    out = namespace_sync.sync(CASES[case](), NOW)
    assert sorted(a["kind"] for a in out["attachments"]) == ["LimitRange", "NetworkPolicy", "ResourceQuota"]
    ns = CASES[case]()["object"]["metadata"]["name"]
    for attachment in out["attachments"]:
        kubernetes_validate.validate(attachment, K8S_VERSION, strict=True)
        assert attachment["metadata"]["namespace"] == ns  # cluster-scoped target: must be explicit
        assert attachment["metadata"]["labels"][C.LABEL_MANAGED_BY] == C.MANAGED_BY


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    req = CASES[case]()
    check_golden(f"tenantnamespace/{case}.json", req, namespace_sync.sync(req, NOW))


@pytest.mark.parametrize("case", sorted(CASES))
def test_deterministic(case: str) -> None:
    assert jsonio.dumps(namespace_sync.sync(CASES[case](), NOW)) == jsonio.dumps(namespace_sync.sync(copy.deepcopy(CASES[case]()), NOW))


@pytest.mark.parametrize("case", sorted(CASES))
def test_limit_range_is_admissible(case: str) -> None:
    """The API server rejects a LimitRange unless defaultRequest <= default <= max."""
    limits = container_limits(namespace_sync.sync(CASES[case](), NOW))
    for resource in namespace_sync.CONTAINER_RESOURCES:
        assert parse_quantity(limits["defaultRequest"][resource]) <= parse_quantity(limits["default"][resource]) <= parse_quantity(limits["max"][resource])


def test_default_deny_selects_every_pod_both_ways() -> None:
    policy = by_kind(namespace_sync.sync(CASES["defaults"](), NOW))["NetworkPolicy"]
    assert policy["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def test_restricted_by_default() -> None:
    out = namespace_sync.sync(CASES["defaults"](), NOW)
    assert out["labels"] == {
        "pod-security.kubernetes.io/audit": "restricted", "pod-security.kubernetes.io/audit-version": "latest",
        "pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest",
        "pod-security.kubernetes.io/warn": "restricted", "pod-security.kubernetes.io/warn-version": "latest",
    }
    assert out["annotations"] == {C.ANNOTATION_HARDENING_STATUS: "Applied", C.ANNOTATION_HARDENING_ERRORS: None}
    assert "status" not in out  # a Namespace's status belongs to the namespace controller


@pytest.mark.parametrize("value,enforce,error", [
    ("true", "baseline", False), ("false", "restricted", False), ("yes", "restricted", True), ("True", "restricted", True),
])
def test_gvisor_opt_in(value: str, enforce: str, error: bool) -> None:
    out = namespace_sync.sync(request(namespace(annotations={C.ANNOTATION_GVISOR: value})), NOW)
    assert out["labels"]["pod-security.kubernetes.io/enforce"] == enforce
    # warn and audit stay restricted: pods that only baseline admits remain visible.
    assert out["labels"]["pod-security.kubernetes.io/warn"] == "restricted"
    assert out["labels"]["pod-security.kubernetes.io/audit"] == "restricted"
    assert (out["annotations"][C.ANNOTATION_HARDENING_ERRORS] is not None) is error


def test_custom_sizes_are_used() -> None:
    out = namespace_sync.sync(CASES["custom-sizes"](), NOW)
    hard = by_kind(out)["ResourceQuota"]["spec"]["hard"]
    assert (hard["limits.cpu"], hard["requests.cpu"], hard["limits.memory"], hard["pods"], hard["requests.storage"]) == ("16", "16", "32Gi", "50", "1Ti")
    assert (hard["persistentvolumeclaims"], hard["requests.ephemeral-storage"]) == ("5", "40Gi")
    assert (hard["services.loadbalancers"], hard["services.nodeports"]) == ("0", "0")
    limits = container_limits(out)
    assert (limits["default"]["cpu"], limits["default"]["memory"], limits["max"]["cpu"], limits["max"]["memory"]) == ("1", "1Gi", "8", "16Gi")
    assert out["annotations"][C.ANNOTATION_HARDENING_STATUS] == "Applied"


@pytest.mark.parametrize("annotations,fragment,field,value", [
    ({f"{Q}cpu": "lots"}, "quota-cpu: 'lots' is not a non-negative quantity", ("quota", "limits.cpu"), "8"),
    ({f"{Q}memory": "-1Gi"}, "quota-memory", ("quota", "limits.memory"), "16Gi"),
    ({f"{Q}pods": "1.5"}, "quota-pods: '1.5' is not a whole number", ("quota", "pods"), "20"),
    ({f"{Q}pvcs": "1e1"}, "quota-pvcs", ("quota", "persistentvolumeclaims"), "10"),
    ({f"{Q}storage": "+5Gi"}, "quota-storage", ("quota", "requests.storage"), "100Gi"),
    ({f"{Q}memory": "1e1000000"}, "quota-memory", ("quota", "limits.memory"), "16Gi"),
    ({f"{L}default-cpu": "0"}, "limit-default-cpu: '0' is not a positive quantity", ("default", "cpu"), C.DEFAULT_CPU),
    ({f"{L}max-memory": "8GB"}, "limit-max-memory", ("max", "memory"), "8Gi"),
    ({f"{Q}gpu": "2"}, "quota-gpu: unknown setting", None, None),
    ({f"{L}min-cpu": "1"}, "limit-min-cpu: unknown setting", None, None),
    ({f"{L}default-cpu": "2", f"{L}max-cpu": "1"}, "limit-default-cpu: 2 exceeds llmsafespace.dev/limit-max-cpu 1; using 1", ("default", "cpu"), "1"),
    ({f"{L}default-request-memory": "1Gi"}, "limit-default-request-memory: 1Gi exceeds llmsafespace.dev/limit-default-memory 512Mi", ("defaultRequest", "memory"), "512Mi"),
])
def test_invalid_annotations_fall_back_and_are_reported(annotations: dict[str, str], fragment: str,
                                                        field: Optional[tuple[str, str]], value: Optional[str]) -> None:
    out = namespace_sync.sync(hardened(request(namespace(annotations=annotations))), NOW)
    assert out["annotations"][C.ANNOTATION_HARDENING_STATUS] == "AppliedWithErrors"
    assert fragment in out["annotations"][C.ANNOTATION_HARDENING_ERRORS]
    if field is not None:
        where, key = field
        actual = by_kind(out)["ResourceQuota"]["spec"]["hard"][key] if where == "quota" else container_limits(out)[where][key]
        assert actual == value
    for attachment in out["attachments"]:
        kubernetes_validate.validate(attachment, K8S_VERSION, strict=True)


def test_lower_max_pulls_implicit_defaults_down_silently() -> None:
    out = namespace_sync.sync(hardened(request(namespace(annotations={f"{L}max-cpu": "250m", f"{L}max-memory": "100Mi"}))), NOW)
    limits = container_limits(out)
    assert (limits["max"]["cpu"], limits["default"]["cpu"], limits["defaultRequest"]["cpu"]) == ("250m", "250m", "100m")
    assert (limits["max"]["memory"], limits["default"]["memory"], limits["defaultRequest"]["memory"]) == ("100Mi", "100Mi", "100Mi")
    assert out["annotations"][C.ANNOTATION_HARDENING_STATUS] == "Applied"


def test_other_annotations_are_ignored() -> None:
    out = namespace_sync.sync(request(namespace(annotations={
        "team": "a", C.ANNOTATION_HARDENING_STATUS: "Applied", C.ANNOTATION_HARDENING_ERRORS: "old",
    })), NOW)
    # The previous error report is removed (null) once nothing is wrong.
    assert out["annotations"][C.ANNOTATION_HARDENING_ERRORS] is None


def test_existing_attachments_change_only_the_hardening_status() -> None:
    # Metacontroller writes the annotations and creates the attachments in no particular order:
    # the namespace says Pending until every attachment exists (seen on a real control plane:
    # "Applied" with no ResourceQuota yet), then Applied; the attachments are the same answer.
    first = namespace_sync.sync(CASES["first-sync"](), NOW)
    assert first["annotations"][C.ANNOTATION_HARDENING_STATUS] == "Pending"
    partial = observed(first)
    partial[C.GVK_RESOURCE_QUOTA] = {}
    assert namespace_sync.sync(request(namespace(), partial), NOW)["annotations"][C.ANNOTATION_HARDENING_STATUS] == "Pending"
    again = namespace_sync.sync(request(namespace(), observed(first)), NOW)
    assert again["annotations"][C.ANNOTATION_HARDENING_STATUS] == "Applied"
    assert again["attachments"] == first["attachments"] and again["labels"] == first["labels"]


@pytest.mark.parametrize("req", [
    {"object": None},
    {"parent": {"metadata": {"name": "x"}}},  # a Composite request sent to the decorator route
    {"object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}}},
    {"object": {"apiVersion": "v1", "kind": "Namespace", "metadata": {}}},
])
def test_bad_requests(req: dict[str, Any]) -> None:
    with pytest.raises(BadRequest):
        namespace_sync.sync(req, NOW)


def test_example_namespace_is_clean() -> None:
    assert EXAMPLE["metadata"]["labels"][C.LABEL_TENANT_NAMESPACE] == "true"
    out = namespace_sync.sync(CASES["example"](), NOW)
    assert out["annotations"][C.ANNOTATION_HARDENING_STATUS] == "Applied", out["annotations"]


def test_manifest_matches_the_hook() -> None:
    doc = yaml.safe_load((ROOT / "metacontroller" / "tenantnamespace-decorator.yaml").read_text())
    assert doc["kind"] == "DecoratorController"
    (resource,) = doc["spec"]["resources"]
    assert (resource["apiVersion"], resource["resource"]) == ("v1", "namespaces")
    assert resource["labelSelector"] == {"matchLabels": {C.LABEL_TENANT_NAMESPACE: "true"}}
    listed = {(a["apiVersion"], a["resource"]) for a in doc["spec"]["attachments"]}
    assert listed == {("networking.k8s.io/v1", "networkpolicies"), ("v1", "resourcequotas"), ("v1", "limitranges")}
    assert {a["updateStrategy"]["method"] for a in doc["spec"]["attachments"]} == {"InPlace"}
    assert "finalize" not in doc["spec"]["hooks"]  # no finalizer on Namespaces (MC #1062)


def test_http_route() -> None:
    client = create_app(Config(), clock=lambda: NOW, env={}).test_client()
    reply = client.post("/tenantnamespace/sync", data=jsonio.dumps(CASES["gvisor-baseline"]()), content_type="application/json")
    assert reply.status_code == 200
    assert reply.get_json() == namespace_sync.sync(CASES["gvisor-baseline"](), NOW)
    assert client.post("/tenantnamespace/sync", data=b'{"object": 1}', content_type="application/json").status_code == 400
    for path in ("/runtimeenvironment/sync", "/sandboxprofile/sync"):
        assert client.post(path, data=b'{"parent": 1}', content_type="application/json").status_code == 400
