"""The CRDs in crds/: valid Kubernetes objects, structural schemas, status and printer columns
that the hooks and kubectl rely on, example CRs that a cluster would accept, and CEL rules that
behave like the pydantic model validators they mirror."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any, Optional

import celpy
import kubernetes_validate
import pytest
import yaml
from pydantic import ValidationError

from hooks import validators as V

from crdutil import (
    CRValidationError,
    ROOT,
    apply_defaults,
    cel_program,
    cel_rules,
    crd,
    crd_schema,
    eval_rule,
    load_crds,
    nodes,
    schema_errors,
    unknown_fields,
    validate_cr,
)

KINDS = ["Sandbox", "SandboxProfile", "RuntimeEnvironment", "WarmPool", "WarmPod", "WarmPoolOffer"]
# Kinds a controller reconciles (a WarmPoolOffer is only ever a child: no status).
PARENT_KINDS = [k for k in KINDS if k != "WarmPoolOffer"]
MODELS: dict[str, type[V.Model]] = {
    "Sandbox": V.SandboxSpec,
    "SandboxProfile": V.SandboxProfileSpec,
    "RuntimeEnvironment": V.RuntimeEnvironmentSpec,
    "WarmPool": V.WarmPoolSpec,
    "WarmPod": V.WarmPodSpec,
    "WarmPoolOffer": V.WarmPoolOfferSpec,
}
NAMES = {  # kind: (file, plural, short name, scope)
    "Sandbox": ("sandboxes.yaml", "sandboxes", "sb", "Namespaced"),
    "SandboxProfile": ("sandboxprofiles.yaml", "sandboxprofiles", "sbp", "Namespaced"),
    "RuntimeEnvironment": ("runtimeenvironments.yaml", "runtimeenvironments", "rte", "Cluster"),
    "WarmPool": ("warmpools.yaml", "warmpools", "wp", "Namespaced"),
    "WarmPod": ("warmpods.yaml", "warmpods", "wpod", "Namespaced"),
    "WarmPoolOffer": ("warmpooloffers.yaml", "warmpooloffers", "wpo", "Namespaced"),
}
EXAMPLES = {
    "runtimeenvironment-python.yaml": "RuntimeEnvironment",
    "sandboxprofile-data-science.yaml": "SandboxProfile",
    "sandbox-minimal.yaml": "Sandbox",
    "sandbox-high-security.yaml": "Sandbox",
    "sandbox-with-egress.yaml": "Sandbox",
    "sandbox-persistent.yaml": "Sandbox",
    "sandbox-agent-workspace.yaml": "Sandbox",
    "sandbox-with-profile.yaml": "Sandbox",
    "warmpool-python.yaml": "WarmPool",
    "sandbox-warm.yaml": "Sandbox",
}


def load_example(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "examples" / name).read_text())


def our_examples() -> list[Path]:
    """Every example of our API group, including ones added after this test was written."""
    out = []
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        if isinstance(doc, dict) and str(doc.get("apiVersion", "")).startswith("llmsafespace.dev/"):
            out.append(path)
    return out


def node_at(schema: dict[str, Any], json_path: str) -> Optional[dict[str, Any]]:
    node: Optional[dict[str, Any]] = schema
    for part in json_path.strip(".").split("."):
        node = (node or {}).get("properties", {}).get(part)
    return node


# ---------------------------------------------------------------------------------------------
# The CRD objects


def test_one_crd_per_kind() -> None:
    crds = load_crds()
    assert sorted(crds) == sorted(KINDS)
    for kind, (file, *_rest) in NAMES.items():
        docs = list(yaml.safe_load_all((ROOT / "crds" / file).read_text()))
        assert [d["spec"]["names"]["kind"] for d in docs] == [kind], file


@pytest.mark.parametrize("kind", KINDS)
def test_names_scope_and_versions(kind: str) -> None:
    obj = crd(kind)
    _file, plural, short, scope = NAMES[kind]
    assert obj["apiVersion"] == "apiextensions.k8s.io/v1"
    assert obj["metadata"]["name"] == f"{plural}.llmsafespace.dev"
    assert obj["spec"]["group"] == "llmsafespace.dev"
    assert obj["spec"]["scope"] == scope
    names = obj["spec"]["names"]
    assert names["plural"] == plural and names["singular"] == kind.lower()
    assert names["shortNames"] == [short]
    assert names["categories"] == ["llmsafespace"]
    versions = obj["spec"]["versions"]
    assert [(v["name"], v["served"], v["storage"]) for v in versions] == [("v1", True, True)]


@pytest.mark.parametrize("kind", KINDS)
def test_crd_is_a_valid_kubernetes_object(kind: str) -> None:
    # Strict mode rejects fields unknown to apiextensions.k8s.io/v1 (a typo such as
    # x-kubernetes-validation would otherwise be ignored by the API server).
    kubernetes_validate.validate(crd(kind), "1.33", strict=True)


def structural_problems(schema: dict[str, Any], path: str = "", root: bool = True) -> list[str]:
    """What the API server's structural-schema check would reject (the parts that apply to us)."""
    out: list[str] = []
    if not (schema.get("type") or schema.get("x-kubernetes-int-or-string") or schema.get("x-kubernetes-preserve-unknown-fields")):
        out.append(f"{path or '.'}: no type")
    for key in ("$ref", "allOf", "anyOf", "oneOf", "not", "definitions", "dependencies", "additionalItems", "patternProperties", "uniqueItems"):
        if key in schema:
            out.append(f"{path or '.'}: {key} is not allowed (or not used by us) in a structural schema")
    if "properties" in schema and "additionalProperties" in schema:
        out.append(f"{path}: properties and additionalProperties are mutually exclusive")
    if schema.get("type") == "array" and not isinstance(schema.get("items"), dict):
        out.append(f"{path}: array without items")
    if schema.get("x-kubernetes-list-type") == "map":
        items = schema.get("items", {})
        for key in schema.get("x-kubernetes-list-map-keys", []):
            sub = items.get("properties", {}).get(key, {})
            if key not in items.get("required", []) and "default" not in sub:
                out.append(f"{path}: list map key {key} must be required or defaulted")
            if sub.get("type") not in ("string", "integer", "boolean"):
                out.append(f"{path}: list map key {key} must be a scalar")
        if not schema.get("x-kubernetes-list-map-keys"):
            out.append(f"{path}: list-type map needs x-kubernetes-list-map-keys")
    if schema.get("x-kubernetes-list-type") == "set" and schema.get("items", {}).get("type") not in ("string", "integer", "boolean"):
        out.append(f"{path}: list-type set needs scalar items")
    for name, sub in schema.get("properties", {}).items():
        if root and name == "metadata":
            # Only name/generateName restrictions are allowed on metadata; we declare none.
            if sub != {"type": "object"}:
                out.append(".metadata: must be just {type: object}")
            continue
        out += structural_problems(sub, f"{path}.{name}", root=False)
    if isinstance(schema.get("items"), dict):
        out += structural_problems(schema["items"], f"{path}[*]", root=False)
    if isinstance(schema.get("additionalProperties"), dict):
        out += structural_problems(schema["additionalProperties"], f"{path}.*", root=False)
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_schema_is_structural(kind: str) -> None:
    assert structural_problems(crd_schema(kind)) == []


def test_structural_check_catches_problems() -> None:
    bad = {"type": "object", "properties": {"a": {"description": "no type"}, "b": {"type": "array"}}}
    assert len(structural_problems(bad)) == 2


@pytest.mark.parametrize("kind", KINDS)
def test_defaults_are_valid(kind: str) -> None:
    # The API server rejects a CRD whose defaults (after their own defaulting) fail the schema
    # or carry fields pruning would drop.
    problems = []
    for path, node in nodes(crd_schema(kind)):
        if "default" in node:
            value = apply_defaults(node, node["default"])
            problems += [f"{path} default: {e}" for e in schema_errors(node, value)]
            problems += [f"{path} default: unknown {p}" for p in unknown_fields(node, value)]
    assert problems == []


@pytest.mark.parametrize("kind", KINDS)
def test_defaults_satisfy_the_cel_rules(kind: str) -> None:
    # kube-apiserver (1.36) refuses a CRD whose default fails a CEL rule of its node, and it
    # evaluates the default as written, without filling in nested defaults first; transition
    # rules run with oldSelf = the default too. Found on the real API server: `default: {}` on
    # storage with `self.persistent == oldSelf.persistent` ("no such key: persistent").
    problems = []
    for path, node in nodes(crd_schema(kind)):
        if "default" not in node:
            continue
        for value in (node["default"], apply_defaults(node, node["default"])):
            for rule in node.get("x-kubernetes-validations", []):
                if not eval_rule(rule["rule"], value, value):
                    problems.append(f"{path} default {value!r}: {rule['rule']}")
    assert problems == []


def test_default_check_catches_a_rule_the_bare_default_breaks() -> None:
    node = {"type": "object", "default": {}, "properties": {"a": {"type": "boolean", "default": False}},
            "x-kubernetes-validations": [{"rule": "self.a == oldSelf.a", "message": "m"}]}
    assert not eval_rule(node["x-kubernetes-validations"][0]["rule"], node["default"], node["default"])
    assert eval_rule(node["x-kubernetes-validations"][0]["rule"], apply_defaults(node, {}), apply_defaults(node, {}))


@pytest.mark.parametrize("kind", KINDS)
def test_every_field_has_a_description(kind: str) -> None:
    missing = [
        path for path, node in nodes(crd_schema(kind))
        if path and not path.startswith(".metadata") and not node.get("description", "").strip()
        # Scalar list items are described by their list.
        and not (path.endswith("[*]") and node.get("type") != "object")
    ]
    assert missing == []


# ---------------------------------------------------------------------------------------------
# Status subresource, status schema, printer columns

PRINTER_COLUMNS: dict[str, list[tuple[str, str, str, int]]] = {  # name, type, jsonPath, priority
    "Sandbox": [
        ("Runtime", "string", ".spec.runtime", 0),
        ("Security", "string", ".status.securityLevel", 0),
        ("Status", "string", ".status.phase", 0),
        ("Mode", "string", ".spec.operatingMode", 1),
        ("Pod", "string", ".status.podName", 1),
        ("Warm", "boolean", ".status.warmPodUsed", 1),
        ("Restarts", "integer", ".status.restarts", 1),
        ("Age", "date", ".metadata.creationTimestamp", 0),
    ],
    "SandboxProfile": [
        ("Language", "string", ".spec.language", 0),
        ("SecurityLevel", "string", ".spec.securityLevel", 0),
        ("Validated", "boolean", ".status.validated", 0),
        ("Age", "date", ".metadata.creationTimestamp", 0),
    ],
    "RuntimeEnvironment": [
        ("Language", "string", ".spec.language", 0),
        ("Version", "string", ".spec.version", 0),
        ("Available", "boolean", ".status.available", 0),
        ("Age", "date", ".metadata.creationTimestamp", 0),
    ],
    "WarmPool": [
        ("Runtime", "string", ".spec.runtime", 0),
        ("Min", "integer", ".spec.minSize", 0),
        ("Max", "integer", ".spec.maxSize", 0),
        ("Available", "integer", ".status.availablePods", 0),
        ("Assigned", "integer", ".status.assignedPods", 0),
        ("Pending", "integer", ".status.pendingPods", 0),
        ("Age", "date", ".metadata.creationTimestamp", 0),
    ],
    "WarmPod": [
        ("Pool", "string", ".spec.poolRef.name", 0),
        ("Phase", "string", ".status.phase", 0),
        ("Sandbox", "string", ".spec.assignment.sandboxName", 0),
        ("Age", "date", ".metadata.creationTimestamp", 0),
    ],
    "WarmPoolOffer": [
        ("Pool", "string", ".spec.poolRef.name", 0),
        ("Runtime", "string", ".spec.runtime", 0),
        ("Security", "string", ".spec.securityLevel", 0),
        ("Age", "date", ".metadata.creationTimestamp", 0),
    ],
}

STATUS_FIELDS: dict[str, dict[str, tuple[str, Optional[str]]]] = {  # field: (type, format)
    "Sandbox": {
        "phase": ("string", None), "podName": ("string", None), "podNamespace": ("string", None),
        "startTime": ("string", "date-time"), "endpoint": ("string", None), "serviceName": ("string", None),
        "expiresAt": ("string", "date-time"), "runtimeEnvironment": ("string", None), "securityLevel": ("string", None), "profile": ("string", None),
        "warmPool": ("string", None), "warmPodRef": ("object", None), "warmPodUsed": ("boolean", None),
        "restarts": ("integer", None), "replacePodToken": ("string", None), "egress": ("array", None),
        "containerRestarts": ("integer", "int32"), "lastTermination": ("object", None),
    },
    "SandboxProfile": {"validated": ("boolean", None), "language": ("string", None)},
    "RuntimeEnvironment": {"available": ("boolean", None), "lastValidated": ("string", "date-time"), "userNamespaces": ("object", None)},
    "WarmPool": {
        "availablePods": ("integer", "int32"), "assignedPods": ("integer", "int32"), "pendingPods": ("integer", "int32"),
        "lastScaleTime": ("string", "date-time"), "runtimeEnvironment": ("string", None), "image": ("string", None),
    },
    "WarmPod": {
        "phase": ("string", None), "podName": ("string", None), "podNamespace": ("string", None),
        "lastHeartbeat": ("string", "date-time"), "servingSelector": ("object", None),
    },
}
PHASES = {
    "Sandbox": ["Pending", "Creating", "Running", "Terminating", "Terminated", "Failed", "Suspending", "Suspended"],
    "WarmPod": ["Pending", "Ready", "Assigned", "Terminating", "Failed"],
}


@pytest.mark.parametrize("kind", PARENT_KINDS)
def test_status_subresource(kind: str) -> None:
    # Without it Metacontroller does not start a CompositeController for the kind.
    assert "subresources" not in crd("WarmPoolOffer")["spec"]["versions"][0], "an offer has no status"
    (version,) = crd(kind)["spec"]["versions"]
    assert version["subresources"] == {"status": {}}


@pytest.mark.parametrize("kind", KINDS)
def test_printer_columns(kind: str) -> None:
    (version,) = crd(kind)["spec"]["versions"]
    got = [(c["name"], c["type"], c["jsonPath"], c.get("priority", 0)) for c in version["additionalPrinterColumns"]]
    assert got == PRINTER_COLUMNS[kind]
    schema = crd_schema(kind)
    for name, type_, path, _prio in got:
        if path == ".metadata.creationTimestamp":
            continue
        node = node_at(schema, path)
        assert node is not None, f"column {name}: {path} is not in the schema"
        assert node["type"] == type_, f"column {name}: schema type {node['type']} != column type {type_}"


@pytest.mark.parametrize("kind", PARENT_KINDS)
def test_status_schema(kind: str) -> None:
    status = crd_schema(kind)["properties"]["status"]
    props = status["properties"]
    assert props["observedGeneration"] == {
        "type": "integer", "format": "int64", "description": props["observedGeneration"]["description"],
    }
    cond = props["conditions"]
    assert cond["type"] == "array"
    assert cond["x-kubernetes-list-type"] == "map" and cond["x-kubernetes-list-map-keys"] == ["type"]
    item = cond["items"]
    # Metacontroller's own `Updated` condition carries only type, status, reason and message,
    # so nothing else may be required.
    assert item["required"] == ["type", "status"]
    cprops = item["properties"]
    assert set(cprops) == {"type", "status", "reason", "message", "lastTransitionTime", "observedGeneration"}
    assert cprops["status"]["enum"] == ["True", "False", "Unknown"]
    assert cprops["lastTransitionTime"]["format"] == "date-time"
    assert (cprops["observedGeneration"]["type"], cprops["observedGeneration"]["format"]) == ("integer", "int64")
    expected = STATUS_FIELDS[kind]
    assert set(props) == set(expected) | {"observedGeneration", "conditions"}
    for name, (type_, fmt) in expected.items():
        assert (props[name]["type"], props[name].get("format")) == (type_, fmt), name
    if kind in PHASES:
        assert props["phase"]["enum"] == PHASES[kind]
    if kind == "Sandbox":
        assert set(props["warmPodRef"]["properties"]) == {"name", "namespace", "uid"}


GOLDEN_DIRS = {"Sandbox": "sandbox", "SandboxProfile": "sandboxprofile", "RuntimeEnvironment": "runtimeenvironment",
               "WarmPool": "warmpool", "WarmPod": "warmpod"}


@pytest.mark.parametrize("kind", sorted(GOLDEN_DIRS))
def test_every_status_field_is_written(kind: str) -> None:
    # A status field no hook writes promises what nobody delivers (Sandbox status.resources
    # cpuUsage/memoryUsage did: the hooks are pure and see no metrics). observedGeneration is
    # Metacontroller's, set after each sync.
    written: set[str] = set()
    for path in sorted((ROOT / "tests" / "golden" / GOLDEN_DIRS[kind]).glob("*.json")):
        written |= set((json.loads(path.read_text()).get("response") or {}).get("status") or {})
    declared = set(crd_schema(kind)["properties"]["status"]["properties"]) - {"observedGeneration"}
    assert declared - written == set()


def test_a_full_status_is_accepted_and_undeclared_fields_are_reported() -> None:
    sandbox = load_example("sandbox-minimal.yaml")
    sandbox["status"] = {
        "observedGeneration": 3,
        "phase": "Running",
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "PodReady", "message": "ok",
             "lastTransitionTime": "2026-01-02T03:04:05Z", "observedGeneration": 3},
            {"type": "Updated", "status": "True", "reason": "OnLatestRevision"},  # as Metacontroller writes it
        ],
        "podName": "sandbox-minimal", "podNamespace": "demo", "startTime": "2026-01-02T03:04:05Z",
        "endpoint": "http://sandbox-minimal.demo.svc:8080", "serviceName": "sandbox-minimal",
        "expiresAt": "2026-01-02T04:04:05Z", "runtimeEnvironment": "python-3.11", "profile": "",
        "warmPool": "python", "warmPodRef": {"name": "python-abc", "namespace": "demo"}, "warmPodUsed": True,
        "restarts": 1,
    }
    validate_cr(sandbox)
    sandbox["status"]["conditions"][0]["status"] = "Yes"
    sandbox["status"]["startTime"] = "yesterday"
    sandbox["status"]["podIP"] = "10.0.0.1"
    with pytest.raises(CRValidationError) as err:
        validate_cr(sandbox)
    text = str(err.value)
    assert "'Yes' is not one of" in text and "'yesterday' is not a 'date-time'" in text
    assert ".status.podIP: unknown field" in text


# ---------------------------------------------------------------------------------------------
# Examples


def test_every_example_is_listed() -> None:
    assert {p.name for p in our_examples()} == set(EXAMPLES)
    assert set(EXAMPLES.values()) == set(KINDS) - {"WarmPod", "WarmPoolOffer"}  # made by pools only


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_is_accepted(name: str) -> None:
    obj = load_example(name)
    kind = EXAMPLES[name]
    assert obj["kind"] == kind and obj["apiVersion"] == "llmsafespace.dev/v1"
    if NAMES[kind][3] == "Cluster":
        assert "namespace" not in obj["metadata"]
    else:
        assert obj["metadata"]["namespace"] == "demo"
    # Plain jsonschema on the object as written (no defaulting) ...
    assert schema_errors(crd_schema(kind), obj) == []
    # ... and the API server's view: defaults, pruning, CEL.
    validate_cr(obj)
    # The hooks parse the same spec.
    MODELS[kind].model_validate(obj["spec"])
    # Comment line, as promised to readers.
    assert (ROOT / "examples" / name).read_text().startswith("# ")


def test_examples_named_in_the_brief() -> None:
    assert load_example("runtimeenvironment-python.yaml")["metadata"]["name"] == "python-3.11"
    rte = load_example("runtimeenvironment-python.yaml")["spec"]
    assert rte["securityFeatures"] == ["gvisor", "seccomp"] and rte["packageManager"] == "pip"
    warm = load_example("sandbox-warm.yaml")
    assert warm["metadata"]["annotations"]["llmsafespace.dev/use-warm-pod"] == "true"
    domains = [r.get("domain") for r in load_example("sandbox-with-egress.yaml")["spec"]["networkAccess"]["egress"]]
    assert "pypi.org" in domains


# ---------------------------------------------------------------------------------------------
# CEL rules

ALL_RULES = [(kind, path, rule) for kind in KINDS for path, _node, rule in cel_rules(crd_schema(kind))]
CEL_MACROS = {"all", "exists", "exists_one", "map", "filter", "size", "contains", "startsWith", "endsWith", "matches"}


@pytest.mark.parametrize("kind,path,rule", ALL_RULES, ids=[f"{k}{p}:{r['rule'][:30]}" for k, p, r in ALL_RULES])
def test_cel_rule_compiles_and_has_a_message(kind: str, path: str, rule: dict[str, Any]) -> None:
    cel_program(rule["rule"])
    assert rule.get("message", "").strip(), "every rule needs a clear message"
    assert set(rule) <= {"rule", "message", "messageExpression", "reason", "fieldPath", "optionalOldSelf"}


def _bounded(node: dict[str, Any]) -> list[str]:
    """Strings and lists under `node` that lack maxLength/maxItems (enums are bounded)."""
    out = []
    for path, sub in nodes(node):
        if sub.get("type") == "array" and "maxItems" not in sub:
            out.append(f"{path or '.'} (array without maxItems)")
        if sub.get("type") == "string" and "maxLength" not in sub and "enum" not in sub:
            out.append(f"{path or '.'} (string without maxLength)")
    return out


@pytest.mark.parametrize("kind,path,rule", ALL_RULES, ids=[f"{k}{p}:{r['rule'][:30]}" for k, p, r in ALL_RULES])
def test_cel_rule_cost_is_bounded(kind: str, path: str, rule: dict[str, Any]) -> None:
    # The API server estimates a rule's cost from maxItems/maxLength and rejects the CRD when it
    # is unbounded. has() costs the same whatever the field holds, so fields only tested with
    # has() need no bound.
    node = next(n for p, n, r in cel_rules(crd_schema(kind)) if p == path and r == rule)
    text = re.sub(r"has\([^()]*\)", "", rule["rule"])
    touched = set(re.findall(r"\.([A-Za-z_]\w*)", text)) - CEL_MACROS
    problems = []
    if re.search(r"\bself\b(?!\.)", text) or node.get("type") == "array":
        problems += [p for p in _bounded({k: v for k, v in node.items() if k != "properties" and k != "items"})]
    for name in touched:
        targets = [sub for p, sub in nodes(node) if p.split(".")[-1] == name]
        assert targets, f"rule names {name}, which is not in the schema under {path}"
        for sub in targets:
            problems += [f"{name}{p}" for p in _bounded(sub)]
    assert problems == []


def _sandbox(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "llmsafespace.dev/v1", "kind": "Sandbox", "metadata": {"name": "s", "namespace": "demo"},
            "spec": {"runtime": "python-3.11", **spec}}


def _profile(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "llmsafespace.dev/v1", "kind": "SandboxProfile", "metadata": {"name": "p", "namespace": "demo"},
            "spec": {"language": "python", **spec}}


def _pool(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "llmsafespace.dev/v1", "kind": "WarmPool", "metadata": {"name": "w", "namespace": "demo"},
            "spec": {"runtime": "python-3.11", **spec}}


def _warmpod(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "llmsafespace.dev/v1", "kind": "WarmPod", "metadata": {"name": "w-1", "namespace": "demo"},
            "spec": {"poolRef": {"name": "w"}, "runtime": "python-3.11", "image": "ghcr.io/x/y:1", **spec}}


P443 = [{"port": 443}]
# (case id, object, substring of the expected CEL message or None when it must be accepted)
CEL_CASES: list[tuple[str, dict[str, Any], Optional[str]]] = [
    ("egress-domain", _sandbox(networkAccess={"egress": [{"domain": "pypi.org", "ports": P443}]}), None),
    ("egress-cidr", _sandbox(networkAccess={"egress": [{"cidr": "203.0.113.0/24"}]}), None),
    ("egress-both", _sandbox(networkAccess={"egress": [{"domain": "pypi.org", "cidr": "203.0.113.0/24"}]}), "exactly one of domain or cidr"),
    ("egress-neither", _sandbox(networkAccess={"egress": [{"ports": P443}]}), "exactly one of domain or cidr"),
    ("profile-rule-both", _profile(networkPolicies=[{"type": "egress", "rules": [{"domain": "a.io", "cidr": "10.0.0.0/8"}]}]), "exactly one of domain or cidr"),
    ("profile-rule-neither", _profile(networkPolicies=[{"type": "ingress", "rules": [{}]}]), "exactly one of domain or cidr"),
    ("profile-rule-cidr", _profile(networkPolicies=[{"type": "ingress", "rules": [{"cidr": "10.0.0.0/8"}]}]), None),
    ("seccomp-localhost", _sandbox(securityContext={"seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/py.json"}}), None),
    ("seccomp-localhost-no-path", _sandbox(securityContext={"seccompProfile": {"type": "Localhost"}}), "Localhost needs localhostProfile"),
    ("seccomp-path-runtimedefault", _sandbox(securityContext={"seccompProfile": {"type": "RuntimeDefault", "localhostProfile": "p.json"}}), "only allowed with type Localhost"),
    ("seccomp-path-defaulted-type", _sandbox(securityContext={"seccompProfile": {"localhostProfile": "p.json"}}), "only allowed with type Localhost"),
    ("seccomp-default", _sandbox(securityContext={}), None),
    ("read-only-root", _sandbox(filesystem={"readOnlyRoot": True}), None),
    ("writable-root", _sandbox(filesystem={"readOnlyRoot": False}), "writablePaths"),
    ("pool-min-le-max", _pool(minSize=2, maxSize=2), None),
    ("pool-unbounded", _pool(minSize=50, maxSize=0), None),
    ("pool-defaults", _pool(), None),
    ("pool-min-gt-max", _pool(minSize=3, maxSize=2), "minSize must not exceed maxSize"),
    ("pool-default-min-gt-max", _pool(minSize=5), None),
    ("pool-scripts-unique", _pool(preloadScripts=[{"name": "a", "script": "x"}, {"name": "b", "script": "x"}]), None),
    # cpuPinning needs whole CPUs (the static CPU manager pins nothing else); an unset cpu may
    # still come from a profile, which the hook checks.
    ("pinning-integer", _sandbox(resources={"cpu": "2", "cpuPinning": True}), None),
    ("pinning-integer-millis", _sandbox(resources={"cpu": "3000m", "cpuPinning": True}), None),
    ("pinning-integer-decimal", _sandbox(resources={"cpu": "4.0", "cpuPinning": True}), None),
    ("pinning-cpu-unset", _sandbox(resources={"cpuPinning": True}), None),
    ("pinning-fraction-millis", _sandbox(resources={"cpu": "500m", "cpuPinning": True}), "cpuPinning needs a whole number of CPUs"),
    ("pinning-fraction-decimal", _sandbox(resources={"cpu": "1.5", "cpuPinning": True}), "cpuPinning needs a whole number of CPUs"),
    ("fraction-unpinned", _sandbox(resources={"cpu": "500m", "cpuPinning": False}), None),
    ("pool-scripts-duplicate", _pool(preloadScripts=[{"name": "a", "script": "x"}, {"name": "a", "script": "y"}]), "names must be unique"),
    # An idle timeout the lifetime always ends first would never fire; unlimited lifetimes (0, or
    # unset: the operator's default is the hook's to check) accept any.
    ("idle-within-lifetime", _sandbox(idleTimeoutSeconds=600, lifetimeSeconds=3600), None),
    ("idle-unlimited-lifetime", _sandbox(idleTimeoutSeconds=600, lifetimeSeconds=0), None),
    ("idle-lifetime-unset", _sandbox(idleTimeoutSeconds=600), None),
    ("idle-suspended-mode", _sandbox(idleTimeoutSeconds=600, operatingMode="Suspended"), None),
    ("idle-equals-lifetime", _sandbox(idleTimeoutSeconds=3600, lifetimeSeconds=3600), "shorter than lifetimeSeconds"),
    ("idle-beyond-lifetime", _sandbox(idleTimeoutSeconds=7200, lifetimeSeconds=3600), "shorter than lifetimeSeconds"),
    # Environment (docs/environment.md): reserved names, one source per entry, unique names, and
    # no envFrom prefix inside the platform's own prefix; the same rules on pools and warm pods.
    *[(f"{who}-{case}", make(**spec), message) for who, make in (("sandbox", _sandbox), ("pool", _pool), ("warmpod", _warmpod))
      for case, spec, message in (
          ("env", {"env": [{"name": "MODE", "value": "x"}, {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "api", "key": "t"}}}],
                   "envFrom": [{"secretRef": {"name": "creds"}, "prefix": "APP_"}]}, None),
          ("env-empty-value", {"env": [{"name": "EMPTY"}]}, None),
          ("env-proxy", {"env": [{"name": "HTTPS_PROXY", "value": "http://evil:3128"}]}, "are reserved"),
          ("env-proxy-lower", {"env": [{"name": "no_proxy", "value": "*"}]}, "are reserved"),
          ("env-own-prefix", {"env": [{"name": "LLMSS_HOOK_TOKEN", "value": "x"}]}, "are reserved"),
          ("env-both", {"env": [{"name": "A", "value": "1", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}, "not both"),
          ("env-duplicate", {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}, "env names must be unique"),
          ("envfrom-own-prefix", {"envFrom": [{"secretRef": {"name": "s"}, "prefix": "LLMSAFESPACE_"}]}, "prefix may not start with"),
      )],
]


@pytest.mark.parametrize("case,obj,message", CEL_CASES, ids=[c[0] for c in CEL_CASES])
def test_cel_rule_behaviour_matches_the_model(case: str, obj: dict[str, Any], message: Optional[str]) -> None:
    # CEL sees the defaulted object, as in the API server.
    if message is None:
        validate_cr(obj)
    else:
        with pytest.raises(CRValidationError) as err:
            validate_cr(obj)
        assert all(message in p for p in err.value.problems), err.value.problems
    # The model validator the rule mirrors gives the same verdict.
    model = MODELS[obj["kind"]]
    if message is None:
        model.model_validate(obj["spec"])
    else:
        with pytest.raises(ValidationError):
            model.model_validate(obj["spec"])


ASSIGNED = {"sandboxName": "s1", "sandboxUid": "uid-1"}
# (case id, old spec patch or None for a create, new spec patch, accepted?)
TRANSITIONS: list[tuple[str, Optional[dict[str, Any]], dict[str, Any], bool]] = [
    ("create-unassigned", None, {}, True),
    ("create-assigned", None, {"assignment": ASSIGNED}, True),
    ("unassigned-stays", {}, {}, True),
    ("assign", {}, {"assignment": ASSIGNED}, True),
    ("same-assignment", {"assignment": ASSIGNED}, {"assignment": dict(ASSIGNED)}, True),
    ("other-fields-change", {"assignment": ASSIGNED}, {"assignment": ASSIGNED, "image": "ghcr.io/x/y:2"}, True),
    ("reassign-name", {"assignment": ASSIGNED}, {"assignment": {**ASSIGNED, "sandboxName": "s2"}}, False),
    ("reassign-uid", {"assignment": ASSIGNED}, {"assignment": {**ASSIGNED, "sandboxUid": "uid-2"}}, False),
    ("unassign", {"assignment": ASSIGNED}, {}, False),
]


@pytest.mark.parametrize("case,old,new,ok", TRANSITIONS, ids=[t[0] for t in TRANSITIONS])
def test_warmpod_assignment_is_immutable(case: str, old: Optional[dict[str, Any]], new: dict[str, Any], ok: bool) -> None:
    # cel-python has no notion of transition rules; crdutil gives it oldSelf explicitly and, like
    # the API server, runs the rule only on updates. The model cannot check this (it sees one
    # object), so there is no model comparison here.
    old_obj = _warmpod(**old) if old is not None else None
    new_obj = _warmpod(**new)
    if ok:
        validate_cr(new_obj, old_obj)
    else:
        with pytest.raises(CRValidationError) as err:
            validate_cr(new_obj, old_obj)
        assert err.value.problems == [
            "WarmPod w-1: .spec: spec.assignment is immutable once set: a warm pod that was assigned is never reused"
        ]


def test_cel_rules_are_all_exercised() -> None:
    # A rule nobody tests could be dropped or broken silently.
    exercised = {
        ("Sandbox", ".spec.networkAccess.egress[*]"), ("SandboxProfile", ".spec.networkPolicies[*].rules[*]"),
        ("Sandbox", ".spec.securityContext.seccompProfile"), ("Sandbox", ".spec.filesystem.readOnlyRoot"),
        ("WarmPool", ".spec"), ("WarmPool", ".spec.preloadScripts"), ("WarmPod", ".spec"),
        ("Sandbox", ".spec.storage"),  # test_storage_persistence_cannot_be_switched
        ("Sandbox", ".spec.resources"),
        ("Sandbox", ".spec"),  # idle-* cases of CEL_CASES
        # tests/test_egress_backends.py, DOMAIN_CASES
        ("Sandbox", ".spec.networkAccess.egress[*].domain"), ("SandboxProfile", ".spec.networkPolicies[*].rules[*].domain"),
        *((kind, path) for kind in ("Sandbox", "WarmPool", "WarmPod") for path in (".spec.env", ".spec.env[*]", ".spec.envFrom[*]")),
    }
    assert {(k, p) for k, p, _r in ALL_RULES} == exercised


def test_eval_rule_treats_errors_as_failures() -> None:
    # A missing field makes CEL raise "no such key"; the API server reports that as invalid.
    assert eval_rule("self.maxSize == 0", {}) is False
    assert eval_rule("self.maxSize == 0", {"maxSize": 0}) is True
    assert isinstance(celpy.json_to_cel({"a": 1}), celpy.celtypes.MapType)


def test_validate_cr_lists_every_problem() -> None:
    obj = _sandbox(timeout=0, securityLevel="extreme", filesystem={"readOnlyRoot": False}, surprise=1)
    with pytest.raises(CRValidationError) as err:
        validate_cr(obj)
    text = "\n".join(err.value.problems)
    assert "timeout" in text and "'extreme' is not one of" in text and "writablePaths" in text and ".spec.surprise: unknown field" in text
    validate_cr(copy.deepcopy(obj) | {"spec": {"runtime": "x", "surprise": 1}}, allow_unknown=True)
    with pytest.raises(CRValidationError):
        validate_cr({"apiVersion": "v1", "kind": "Pod"})


def test_validate_cr_returns_the_defaulted_object() -> None:
    stored = validate_cr(load_example("sandbox-minimal.yaml"))
    assert stored["spec"]["filesystem"] == {"readOnlyRoot": True}  # writablePaths may come from a profile
    assert stored["spec"]["securityContext"] == {"runAsUser": 1000, "runAsGroup": 1000}
    assert "securityLevel" not in stored["spec"] and stored["spec"]["resources"] == {"cpuPinning": False}



def test_storage_persistence_cannot_be_switched() -> None:
    """Turning persistence off would make the hook drop the claim: the CRD refuses the edit."""
    old = {"apiVersion": "llmsafespace.dev/v1", "kind": "Sandbox", "metadata": {"name": "s", "namespace": "demo"},
           "spec": {"runtime": "python:3.11", "storage": {"persistent": True}}}
    new = copy.deepcopy(old)
    new["spec"]["storage"]["persistent"] = False
    with pytest.raises(CRValidationError, match="storage.persistent cannot change"):
        validate_cr(new, old)
    validate_cr(old, old)  # an unchanged object passes
    grown = copy.deepcopy(old)
    grown["spec"]["storage"]["volumeSize"] = "10Gi"
    validate_cr(grown, old)


# ---------------------------------------------------------------------------------------------
# Descriptions say what the code does (issue 12, item 12: "empty allows every port" while an
# empty list opened 443 and 80).


def _description(kind: str, path: str) -> str:
    return dict(nodes(crd_schema(kind)))[path]["description"]


def test_descriptions_state_the_built_behaviour() -> None:
    from hooks.builders import network_policy as np
    from hooks import constants as C
    defaults = [f"{port}/{proto}" for port, proto in np.DEFAULT_EGRESS_PORTS]
    sandbox_ports = _description("Sandbox", ".spec.networkAccess.egress[*].ports")
    profile_ports = _description("SandboxProfile", ".spec.networkPolicies[*].rules[*].ports")
    for text in (sandbox_ports, profile_ports):
        assert "every port" not in text and all(d in text for d in defaults), text
    assert f"{C.SANDBOX_PORT}/TCP" in profile_ports
    assert "public IPv4" in _description("Sandbox", ".spec.networkAccess.egress[*].domain")
    assert "private" in _description("Sandbox", ".spec.networkAccess.egress[*].cidr")
    assert "creation" in _description("Sandbox", ".spec.lifetimeSeconds")
    assert "ready" not in _description("Sandbox", ".status.startTime")
    assert "mounted" not in _description("SandboxProfile", ".spec.filesystemConfig.readOnlyPaths")
    assert "cidr" in _description("SandboxProfile", ".spec.networkPolicies[*].rules")
    assert "default" in _description("SandboxProfile", ".spec.resourceDefaults")
