"""The CRD schemas in crds/ and the pydantic models in hooks/validators.py describe the same specs:
same property names, types, required fields, defaults, enums, bounds and patterns. A default or
a bound lives in two places, so it only stays in step under this test."""
from __future__ import annotations

import copy
import typing
from typing import Any, Optional

import pytest
import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from hooks import validators as V

from crdutil import ROOT, apply_defaults, crd_schema

PAIRS: dict[str, type[V.Model]] = {
    "Sandbox": V.SandboxSpec,
    "SandboxProfile": V.SandboxProfileSpec,
    "RuntimeEnvironment": V.RuntimeEnvironmentSpec,
    "WarmPool": V.WarmPoolSpec,
    "WarmPod": V.WarmPodSpec,
}
# Keywords whose values must be identical on both sides.
COMPARED = (
    "type", "enum", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "pattern", "minLength", "maxLength", "minItems", "maxItems",
)
# Checks a model makes in a field validator (invisible in its JSON schema) that the CRD states as
# a schema keyword: (model class, wire name) -> extra JSON-schema keywords.
VALIDATOR_KEYWORDS: dict[tuple[str, str], dict[str, Any]] = {
    ("NetworkRule", "domain"): {"pattern": V.DOMAIN_PATTERN},
}
_MISSING = object()


def model_classes(model: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Every model class reachable from `model`, by name (the names pydantic uses in $defs)."""
    found: dict[str, type[BaseModel]] = {}

    def visit(tp: Any) -> None:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if tp.__name__ not in found:
                found[tp.__name__] = tp
                for field in tp.model_fields.values():
                    visit(field.annotation)
        for arg in typing.get_args(tp):
            visit(arg)

    visit(model)
    return found


def resolve(node: dict[str, Any], defs: dict[str, Any]) -> tuple[dict[str, Any], Optional[str]]:
    """Follow $ref and unwrap Optional (anyOf [X, null]); returns the node and the model name it
    came from, if any."""
    ref_name: Optional[str] = None
    while True:
        if "$ref" in node:
            ref_name = node["$ref"].rsplit("/", 1)[-1]
            node = {**defs[ref_name], **{k: v for k, v in node.items() if k != "$ref"}}
        elif "anyOf" in node:
            branches = [b for b in node["anyOf"] if b.get("type") != "null"]
            assert len(branches) == 1, f"cannot mirror a union: {node['anyOf']}"
            node = {**{k: v for k, v in node.items() if k != "anyOf"}, **branches[0]}
        else:
            break
    if "const" in node:
        node = {**node, "enum": [node["const"]]}
    return node, ref_name


def wire_value(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(by_alias=True, exclude_none=True)
    if isinstance(value, (list, tuple)):
        return [wire_value(v) for v in value]
    return value


def model_default(cls: type[BaseModel], wire_name: str) -> Any:
    """What the model fills in when the field is absent (_MISSING for required or None): plain
    defaults come from the JSON schema too, but default_factory ones only from here."""
    for name, field in cls.model_fields.items():
        if (field.alias or name) == wire_name:
            if field.default_factory is not None:
                value = field.default_factory()  # type: ignore[call-arg]
            elif field.default is PydanticUndefined or field.default is None:
                return _MISSING
            else:
                value = field.default
            return wire_value(value)
    raise KeyError(f"{cls.__name__} has no field {wire_name}")


def crd_default(node: dict[str, Any]) -> Any:
    """What the API server stores when the field is absent: the default, itself defaulted."""
    return apply_defaults(node, node["default"]) if "default" in node else _MISSING


def show(value: Any) -> str:
    return "(none)" if value is _MISSING else repr(value)


def disagreements(
    crd_node: dict[str, Any],
    model_node: dict[str, Any],
    defs: dict[str, Any],
    classes: dict[str, type[BaseModel]],
    cls: Optional[type[BaseModel]],
    path: str,
    counter: list[int],
) -> list[str]:
    out: list[str] = []
    counter[0] += 1
    for key in COMPARED:
        if crd_node.get(key) != model_node.get(key):
            out.append(f"{path}: {key} CRD={crd_node.get(key)!r} model={model_node.get(key)!r}")
    if model_node.get("type") == "object" or crd_node.get("type") == "object":
        crd_props = crd_node.get("properties", {})
        model_props = model_node.get("properties", {})
        for name in sorted(set(crd_props) - set(model_props)):
            out.append(f"{path}.{name}: only in the CRD")
        for name in sorted(set(model_props) - set(crd_props)):
            out.append(f"{path}.{name}: only in the model")
        if sorted(crd_node.get("required", [])) != sorted(model_node.get("required", [])):
            out.append(f"{path}: required CRD={sorted(crd_node.get('required', []))} model={sorted(model_node.get('required', []))}")
        for name in sorted(set(crd_props) & set(model_props)):
            sub, ref = resolve(model_props[name], defs)
            if cls is not None:
                sub = {**sub, **VALIDATOR_KEYWORDS.get((cls.__name__, name), {})}
                want, got = model_default(cls, name), crd_default(crd_props[name])
                if want != got:
                    out.append(f"{path}.{name}: default CRD={show(got)} model={show(want)}")
            out += disagreements(crd_props[name], sub, defs, classes, classes.get(ref or ""), f"{path}.{name}", counter)
    if model_node.get("type") == "array" and crd_node.get("type") == "array":
        item, ref = resolve(model_node.get("items", {}), defs)
        out += disagreements(crd_node.get("items", {}), item, defs, classes, classes.get(ref or ""), f"{path}[*]", counter)
    return out


def compare(kind: str, spec_schema: Optional[dict[str, Any]] = None) -> tuple[list[str], int]:
    model = PAIRS[kind]
    schema = model.model_json_schema(by_alias=True)
    defs = schema.get("$defs", {})
    crd_spec = spec_schema if spec_schema is not None else crd_schema(kind)["properties"]["spec"]
    counter = [0]
    out = disagreements(crd_spec, schema, defs, model_classes(model), model, ".spec", counter)
    return out, counter[0]


@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_crd_and_model_agree(kind: str) -> None:
    problems, visited = compare(kind)
    assert not problems, f"{kind}: CRD and {PAIRS[kind].__name__} disagree:\n  " + "\n  ".join(problems)
    assert visited >= 10, "the walk visited suspiciously few fields"


def test_comparison_catches_disagreements() -> None:
    # The walker must see every kind of difference it claims to check.
    spec = copy.deepcopy(crd_schema("Sandbox")["properties"]["spec"])
    props = spec["properties"]
    props["timeout"]["default"] = 301
    props["timeout"]["maximum"] = 7200
    props["securityLevel"]["enum"] = ["standard", "high"]
    props["resources"]["properties"]["cpu"]["pattern"] = "^.*$"
    del props["storage"]["properties"]["retentionPolicy"]
    props["filesystem"]["properties"]["writablePaths"]["default"] = ["/tmp"]
    props["networkAccess"]["properties"]["egress"]["items"]["properties"]["domain"].pop("pattern")
    props["profileRef"]["required"] = []
    props["extra"] = {"type": "string"}
    del props["resources"]["default"]
    problems, _ = compare("Sandbox", spec)
    text = "\n".join(problems)
    for expected in (
        ".spec.timeout: default CRD=301 model=300",
        ".spec.timeout: maximum CRD=7200 model=3600",
        ".spec.securityLevel: enum",
        ".spec.resources.cpu: pattern",
        ".spec.storage.retentionPolicy: only in the model",
        ".spec.filesystem.writablePaths: default CRD=['/tmp'] model=(none)",
        ".spec.networkAccess.egress[*].domain: pattern",
        ".spec.profileRef: required",
        ".spec.extra: only in the CRD",
        ".spec.resources: default CRD=(none)",
        # A nested default changes what the API server stores for the parent too.
        ".spec.filesystem: default CRD={'readOnlyRoot': True, 'writablePaths': ['/tmp']}",
        ".spec.storage: default CRD={'persistent': False, 'volumeSize': '5Gi'}",
    ):
        assert expected in text, f"missing {expected!r} in:\n{text}"
    assert len(problems) == 12, text


def _spec_of_every_example() -> list[tuple[str, str, dict[str, Any]]]:
    out = []
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        if isinstance(doc, dict) and doc.get("kind") in PAIRS and str(doc.get("apiVersion", "")).startswith("llmsafespace.dev/"):
            out.append((path.name, doc["kind"], doc["spec"]))
    return out


MINIMAL = {
    "Sandbox": {"runtime": "python-3.11"},
    "SandboxProfile": {"language": "python"},
    "RuntimeEnvironment": {"image": "ghcr.io/x/y:1", "language": "python"},
    "WarmPool": {"runtime": "python-3.11"},
    "WarmPod": {"poolRef": {"name": "p"}, "runtime": "python-3.11", "image": "ghcr.io/x/y:1",
                "preloadScripts": [{"name": "a", "script": "true"}], "assignment": {"sandboxName": "s", "sandboxUid": "u"}},
}
SPECS = [(f"minimal-{k}", k, s) for k, s in MINIMAL.items()] + _spec_of_every_example()


@pytest.mark.parametrize("name,kind,spec", SPECS, ids=[s[0] for s in SPECS])
def test_stored_spec_is_what_the_model_sees(name: str, kind: str, spec: dict[str, Any]) -> None:
    # End to end: the spec the API server stores after defaulting is exactly the model's view of
    # the spec as written, so hooks behave the same on a fresh object and on a stored one.
    stored = apply_defaults(crd_schema(kind)["properties"]["spec"], spec)
    assert stored == PAIRS[kind].model_validate(spec).wire()
