"""Fuzzing every hook route through the HTTP layer (Flask test client), with hypothesis.

Properties:
  1. Arbitrary bodies and mutated requests never get a 5xx: a request that is not a well-formed
     Metacontroller request gets a 4xx with a JSON message; everything else gets 200.
  2. Well-formed requests (schema-valid parents with extreme values, observed children in any
     state, related objects present or not) get 200, the same bytes when sent twice, children
     that validate against the Kubernetes 1.33 schemas (strict) or our CRDs, child names and
     labels within Kubernetes' limits, and a status the parent CRD accepts.
  3. A sandbox whose spec became unusable keeps every child it had (pod and volume included).
  4. hooks.meta.dns_label / label_value give valid, deterministic, collision-free names for any
     input.

Routes come from hooks.server.routes.ROUTES, request shapes from metacontroller/*.yaml and crds/, so a
new hook is fuzzed as soon as its route and manifest exist (tests/strategies.py). Example counts:
hypothesis profile llmss-ci by default (whole file well under a minute); LLMSS_LONG=1 selects
llmss-long for a long run."""
from __future__ import annotations

import copy
import json
import re
from typing import Any

import kubernetes_validate
import orjson
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from hooks import constants as C
from hooks import sandbox_sync
from hooks.server.app import create_app
from hooks.config import Config
from hooks.meta import dns_label, is_dns_subdomain, label_value, qualified_name_problem
from hooks.quantity import parse_quantity
from hooks.server.routes import ROUTES
from tests import strategies as S
from tests.crdutil import crd_schema, schema_errors, unknown_fields, validate_cr
from tests.factory import NOW, observed, runtime, sandbox, settle, sync_request
from tests.sandbox_cases import minimal, observed_running

K8S_VERSION = "1.33"
CLIENT = create_app(Config(), clock=lambda: NOW, env={}).test_client()
PATHS = sorted(ROUTES)
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
# Kinds whose names end up as DNS labels (Service: a DNS name; Pod: its hostname; ServiceAccount).
LABEL_NAMED = {"Service": DNS_1035, "Pod": DNS_1123_LABEL}


def post(path: str, body: Any) -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return CLIENT.post(path, data=data, content_type="application/json")


def assert_not_5xx(response: Any) -> None:
    assert response.status_code < 500, response.data[:2000]
    assert response.mimetype == "application/json"
    body = orjson.loads(response.data)
    if response.status_code != 200:
        assert 400 <= response.status_code < 500
        assert isinstance(body.get("error"), str) and len(body["error"]) > 10, body
        assert "children" not in body and "attachments" not in body


def is_label_key(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not DNS_1123_SUBDOMAIN.match(prefix)):
        return False
    return len(name) <= 63 and bool(LABEL_NAME.match(name))


def check_child(child: dict[str, Any]) -> None:
    """What the API server would check on a child, beyond the hook's own tests."""
    meta = child["metadata"]
    name = meta["name"]
    assert len(name) <= C.MAX_DNS_SUBDOMAIN and DNS_1123_SUBDOMAIN.match(name), (child["kind"], name)
    if child["kind"] in LABEL_NAMED:
        assert len(name) <= C.MAX_DNS_LABEL and LABEL_NAMED[child["kind"]].match(name), (child["kind"], name)
    for key, value in (meta.get("labels") or {}).items():
        assert is_label_key(key), (name, key)
        assert isinstance(value, str) and len(value) <= C.MAX_LABEL_VALUE and LABEL_VALUE.match(value), (name, key, value)
    for key in meta.get("annotations") or {}:
        assert is_label_key(key), (name, key)
    if child["apiVersion"].split("/")[0] == C.GROUP:
        validate_cr(child)
    else:
        kubernetes_validate.validate(child, K8S_VERSION, strict=True)
    if child["kind"] == "PersistentVolumeClaim" and "storageClassName" in child["spec"]:
        assert DNS_1123_SUBDOMAIN.match(child["spec"]["storageClassName"]), child["spec"]["storageClassName"]


def parent_of(request: dict[str, Any]) -> dict[str, Any]:
    return request.get("parent") or request.get("object") or {}


def check_response(path: str, request: dict[str, Any], body: dict[str, Any]) -> None:
    route = ROUTES[path]
    if route.hook == "customize":
        assert isinstance(body.get("relatedResources"), list)
        return
    kind, _, _ = S.manifest_for(path)
    key = "attachments" if kind == "DecoratorController" else "children"
    assert isinstance(body.get(key), list), f"{path}: no {key} list: Metacontroller would delete every child"
    seen = set()
    for child in body[key]:
        ident = (child["apiVersion"], child["kind"], child["metadata"].get("namespace"), child["metadata"]["name"])
        assert ident not in seen, f"{path}: child {ident} emitted twice"
        seen.add(ident)
        check_child(child)
    parent = parent_of(request)
    status = body.get("status") if isinstance(body.get("status"), dict) else {}
    validated = [c for c in status.get("conditions") or [] if c.get("type") == "Validated"]
    deleting = request.get("finalizing") or parent.get("metadata", {}).get("deletionTimestamp")
    if validated and validated[0]["status"] != "True" and not deleting:
        # An unusable spec (or input) never deletes what exists, for every controller.
        had = {(o["kind"], o["metadata"]["name"]) for g in (request.get(key) or {}).values() for o in (g or {}).values()}
        assert had <= {(c["kind"], c["metadata"]["name"]) for c in body[key]}, f"{path}: {validated[0]} deleted children"
    if kind == "CompositeController" and parent.get("apiVersion", "").startswith(C.GROUP + "/"):
        schema = crd_schema(parent["kind"])["properties"]["status"]
        assert isinstance(body.get("status"), dict), f"{path}: status missing: Metacontroller would wipe it"
        assert not schema_errors(schema, body["status"]), schema_errors(schema, body["status"])
        assert not unknown_fields(schema, body["status"]), unknown_fields(schema, body["status"])


# ---------------------------------------------------------------------------------------------
# 1. Never a 5xx


@pytest.mark.parametrize("path", PATHS)
@S.fuzz_settings(30)
@given(body=st.one_of(S.arbitrary_json().map(lambda v: json.dumps(v).encode()), st.binary(max_size=200)))
@example(body=b"")
@example(body=b"null")
@example(body=b'{"parent": null}')
@example(body=b'{"parent": {"metadata": null}}')
@example(body=b'{"object": {"metadata": {"name": 1}}, "attachments": []}')
def test_arbitrary_bodies_get_200_or_4xx(path: str, body: bytes) -> None:
    assert_not_5xx(post(path, body))


@pytest.mark.parametrize("path", PATHS)
@S.fuzz_settings(40)
@given(data=st.data())
def test_mutated_requests_never_get_5xx(path: str, data: Any) -> None:
    route = ROUTES[path]
    request = data.draw(S.mutated(S.valid_request(path, route.hook, route.controller)))
    assert_not_5xx(post(path, request))


# ---------------------------------------------------------------------------------------------
# 2. Well-formed requests


@pytest.mark.parametrize("path", PATHS)
@S.fuzz_settings(25)
@given(data=st.data())
def test_well_formed_requests(path: str, data: Any) -> None:
    route = ROUTES[path]
    request = data.draw(S.valid_request(path, route.hook, route.controller))
    first = post(path, request)
    assert first.status_code == 200, first.data[:3000]
    second = post(path, copy.deepcopy(request))
    assert first.data == second.data, "same request, different bytes"
    check_response(path, request, orjson.loads(first.data))


@S.fuzz_settings(400)
@given(key=S.label_key(), name=S.dns_subdomain(max_size=60))
def test_generated_keys_and_names_are_what_the_api_server_accepts(key: str, name: str) -> None:
    """The well-formed strategies must generate only metadata the API server would accept: the
    hooks answer anything else 400 (hooks/server/wire.py), so a strategy slip would show up as a rare,
    misleading failure of a property test (CI, 2026-12: a 63-character label cut to 60 ended in
    '-') instead of here."""
    assert is_dns_subdomain(name), name
    assert qualified_name_problem(key) is None, key


def test_every_route_has_a_request_strategy() -> None:
    """Each route is fuzzed with well-formed requests: its manifest, its parent's Kind and the
    Kinds of its children are all found (else the generic strategy could not build a request)."""
    for path in ROUTES:
        kind, spec, _ = S.manifest_for(path)
        if kind == "DecoratorController":
            resources = spec["resources"] + (spec.get("attachments") or [])
        else:
            resources = [spec["parentResource"]] + (spec.get("childResources") or [])
        for resource in resources:
            assert S.kind_of(resource["apiVersion"], resource["resource"])


def test_generically_fuzzed_routes_are_listed() -> None:
    """Routes without a kind-specific strategy (tests/strategies.KIND_REQUESTS) are fuzzed only
    from their CRD schema; this test names them so the gap stays visible."""
    generic_only = sorted({r.controller for r in ROUTES.values()} - set(S.KIND_REQUESTS))
    print("fuzzed generically only:", generic_only)
    assert "sandbox" in S.KIND_REQUESTS


# ---------------------------------------------------------------------------------------------
# 3. Sandbox: children survive an unusable spec


def _names(objs: Any) -> set[tuple[str, str]]:
    return {(o["kind"], o["metadata"]["name"]) for o in objs}


def _observed(request: dict[str, Any]) -> list[dict[str, Any]]:
    return [o for g in request["children"].values() for o in g.values()]


BREAK_SPEC = st.sampled_from([
    {"runtime": "cobol:85"},
    {"resources": {"cpu": "0"}},
    {"networkAccess": {"egress": [{"cidr": "10.0.0.0/8"}]}},
    {"networkAccess": {"egress": [{"cidr": "not-a-cidr"}]}},
    {"networkAccess": {"egress": [{"domain": "a.example.com", "cidr": "203.0.113.0/24"}]}},
    {"filesystem": {"writablePaths": ["relative"]}},
    {"profileRef": {"name": "missing"}},
    {"storage": {"persistent": True, "retentionPolicy": "Retain"}},
    {"timeout": 0},
    {"networkAccess": {"egress": [{"domain": "x.example.com"}] * 129}},
])


@S.fuzz_settings(30)
@given(request=S.sandbox_request("sync"), broken=BREAK_SPEC)
def test_sandbox_with_children_never_loses_them_when_its_spec_becomes_unusable(request: dict[str, Any], broken: dict[str, Any]) -> None:
    parent = request["parent"]
    parent["metadata"].pop("deletionTimestamp", None)
    request["finalizing"] = False
    parent["spec"] = {**parent["spec"], **broken}
    observed_children = _observed(request)
    assume(any(o["kind"] in ("Pod", "PersistentVolumeClaim") for o in observed_children))
    response = post("/sandbox/sync", request)
    assert response.status_code == 200
    body = orjson.loads(response.data)
    validated = next(c for c in body["status"]["conditions"] if c["type"] == "Validated")
    assert validated["status"] != "True"
    assert _names(observed_children) <= _names(body["children"]), "an unusable spec deleted children"


@S.fuzz_settings(30)
@given(request=S.sandbox_request("sync"))
def test_sandbox_keeps_its_observed_pod_while_alive(request: dict[str, Any]) -> None:
    """Whatever the spec (valid or not), a live sandbox's own pod stays in the desired state
    until the sandbox is deleted or its lifetime ends."""
    parent = request["parent"]
    assume(not parent["metadata"].get("deletionTimestamp"))
    pods = [o for o in _observed(request) if o["kind"] == "Pod"]
    assume(pods)
    body = orjson.loads(post("/sandbox/sync", request).data)
    assume(body["status"]["phase"] != C.PHASE_TERMINATED)  # lifetime over: teardown is the point
    assert {p["metadata"]["name"] for p in pods if p["metadata"]["name"].startswith("sandbox-")} & {
        c["metadata"]["name"] for c in body["children"] if c["kind"] == "Pod"}


# ---------------------------------------------------------------------------------------------
# 4. Names


@S.fuzz_settings(300, 20_000)
@given(name=st.one_of(st.text(max_size=300), S.dns_subdomain()), prefix=st.sampled_from(["sandbox", "warmpod", "x"]),
       max_len=st.sampled_from([C.MAX_DNS_LABEL, 40, 20]))
@example(name="a.b", prefix="sandbox", max_len=63)
@example(name="x" * 253, prefix="sandbox", max_len=63)
@example(name="", prefix="sandbox", max_len=63)
@example(name="İ" * 40, prefix="sandbox", max_len=63)
@example(name="-.-", prefix="sandbox", max_len=20)
def test_dns_label_is_always_a_valid_deterministic_label(name: str, prefix: str, max_len: int) -> None:
    out = dns_label(prefix, name, max_len=max_len)
    assert len(out) <= max_len and DNS_1035.match(out), out
    assert dns_label(prefix, name, max_len=max_len) == out


@S.fuzz_settings(300, 20_000)
@given(a=st.one_of(st.text(max_size=80), S.dns_subdomain()), b=st.one_of(st.text(max_size=80), S.dns_subdomain()))
def test_dns_label_never_maps_two_names_to_one(a: str, b: str) -> None:
    assume(a != b)
    assert dns_label("sandbox", a) != dns_label("sandbox", b)
    # The other way round too: a valid short name that looks like another's hashed name.
    hashed = dns_label("sandbox", a)
    squatter = hashed.removeprefix("sandbox-")
    if squatter != a:
        assert dns_label("sandbox", squatter) != hashed, f"sandbox {squatter!r} would take the children of {a!r}"


def test_dns_label_regression_a_name_cannot_squat_a_hashed_name() -> None:
    # Regression: "a.b" hashes to sandbox-a-b-<digest>; a sandbox named a-b-<digest> used to keep
    # its name as is and so claimed the very same Service, Pod and policies.
    hashed = dns_label("sandbox", "a.b")
    assert hashed != "sandbox-a.b" and DNS_1035.match(hashed)
    assert dns_label("sandbox", hashed.removeprefix("sandbox-")) != hashed
    assert dns_label("sandbox", "plain-name") == "sandbox-plain-name"  # ordinary names unchanged


@S.fuzz_settings(200, 10_000)
@given(value=st.one_of(st.text(max_size=300), S.dns_subdomain()))
def test_label_value_is_always_valid(value: str) -> None:
    out = label_value(value)
    assert len(out) <= C.MAX_LABEL_VALUE and LABEL_VALUE.match(out), out
    assert label_value(value) == out


@S.fuzz_settings(60, 2_000)
@given(name=st.one_of(S.dns_subdomain(), st.sampled_from(["a", "a.b", "x" * 253, "a" * 63 + "." + "b" * 63])))
def test_child_names_fit_for_any_parent_name(name: str) -> None:
    request = sync_request(sandbox(name, spec={"storage": {"persistent": True}, "networkAccess": {
        "ingress": True, "egress": [{"domain": "pypi.org"}]}}), related=[runtime()])
    _, body = settle(lambda r, now: orjson.loads(post("/sandbox/sync", r).data), request)
    assert len(body["children"]) == 9  # pod, service, account, volume, five policies
    for child in body["children"]:
        name_ = child["metadata"]["name"]
        assert len(name_) <= C.MAX_DNS_SUBDOMAIN and DNS_1123_SUBDOMAIN.match(name_)
        if child["kind"] in LABEL_NAMED:
            assert len(name_) <= C.MAX_DNS_LABEL and LABEL_NAMED[child["kind"]].match(name_)
        for value in child["metadata"]["labels"].values():
            assert len(value) <= C.MAX_LABEL_VALUE and LABEL_VALUE.match(value)


# ---------------------------------------------------------------------------------------------
# Regressions for what the fuzzing found (each was a 500, so Metacontroller retried forever)


def _with_runtime_minimum(min_cpu: str) -> dict[str, Any]:
    return sync_request(sandbox(), related=[runtime(resourceRequirements={"minCpu": min_cpu})])


@pytest.mark.parametrize("quantity", ["1e999999999", "1e-999999999", "9e99999999999999999999"])
def test_regression_runtime_minimum_with_huge_exponent_is_ignored_not_a_500(quantity: str) -> None:
    response = post("/sandbox/sync", _with_runtime_minimum(quantity))
    assert response.status_code == 200
    with pytest.raises(ValueError):
        parse_quantity("1e999999999")


@pytest.mark.parametrize("quantity, value", [("1E", 10**18), ("1Ei", 2**60), ("2e3", 2000), ("1.5Gi", 1.5 * 2**30)])
def test_regression_exa_suffixes_parse(quantity: str, value: float) -> None:
    # "1E" and "1Ei" used to fail (read as an exponent with no digits), so a runtime minimum of
    # 1Ei was silently ignored.
    assert parse_quantity(quantity) == value


def test_regression_far_future_creation_time_is_not_a_500() -> None:
    for spec, annotations in (({"lifetimeSeconds": 10}, None), ({}, {C.ANNOTATION_USE_WARM_POD: "true"})):
        parent = sandbox("future", spec=spec, annotations=annotations, created="9999-12-31T23:59:59Z")
        response = post("/sandbox/sync", sync_request(parent, related=[runtime(), S.warm_offer()]))
        assert response.status_code == 200, response.data


@pytest.mark.parametrize("mutate, fragment", [
    (lambda r: r["parent"].__setitem__("status", {"conditions": 5}), "status.conditions"),
    (lambda r: r["parent"].__setitem__("status", [1]), "status"),
    (lambda r: r["children"]["Pod.v1"]["demo/sandbox-live"].__setitem__("status", [1]), "status"),
    (lambda r: r["children"]["Pod.v1"]["demo/sandbox-live"]["metadata"].pop("name"), "metadata.name"),
    (lambda r: r["children"]["Service.v1"]["demo/sandbox-live"]["metadata"].__setitem__("name", ["x"]), "metadata.name"),
    (lambda r: r["children"].__setitem__("Pod.v1", [1]), "children"),
    (lambda r: r["related"].__setitem__("RuntimeEnvironment.llmsafespace.dev/v1", {"x": {"metadata": {"name": "x"}, "spec": []}}), "spec"),
    (lambda r: r["parent"]["metadata"].__setitem__("labels", {"a": 1}), "labels"),
    (lambda r: r.__setitem__("finalizing", "yes"), "finalizing"),
])
def test_regression_malformed_objects_get_400_with_the_place_named(mutate: Any, fragment: str) -> None:
    request = copy.deepcopy(observed_running())
    mutate(request)
    for path in ("/sandbox/sync", "/sandbox/finalize"):
        response = post(path, request)
        assert response.status_code == 400, (path, response.data)
        assert fragment in orjson.loads(response.data)["error"]


def test_metacontroller_nulls_are_accepted() -> None:
    # A Go nil map marshals as null: accepted as empty, never a 400.
    request = minimal()
    request["children"] = {"Pod.v1": None}
    request["related"]["WarmPool.llmsafespace.dev/v1"] = None
    assert post("/sandbox/sync", request).status_code == 200
    request["children"] = None
    assert post("/sandbox/sync", request).status_code == 200


def test_duplicate_children_are_emitted_once() -> None:
    request = copy.deepcopy(observed_running())
    request["parent"]["spec"]["runtime"] = "cobol:85"  # unusable: children kept as observed
    pod = request["children"]["Pod.v1"]["demo/sandbox-live"]
    request["children"]["Pod.v1"]["sandbox-live"] = copy.deepcopy(pod)
    body = orjson.loads(post("/sandbox/sync", request).data)
    pods = [c for c in body["children"] if c["kind"] == "Pod"]
    assert len(pods) == 1


def test_observed_helper_is_what_the_api_server_holds() -> None:
    # Sanity check of the fixture the fuzzing builds on.
    child = sandbox_sync.sync(minimal(), NOW)["children"][0]
    assert observed(child, minimal()["parent"])["metadata"]["ownerReferences"][0]["controller"] is True
