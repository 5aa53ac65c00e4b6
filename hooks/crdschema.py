"""Load the CRDs in crds/ and check custom resources against them the way the API server would:
apply the schema defaults, validate with jsonschema, report fields that pruning would drop, and
evaluate the CEL x-kubernetes-validations rules with cel-python.

Used by `llmsafespace validate` / `render` (hooks/offline/cli.py) and by every test that needs to know
whether an object (an example, or a status a hook returns) would be accepted by a real cluster.
Needs jsonschema and cel-python, which the hook server does not install (requirements-dev.txt,
or the `cli` extra of pyproject.toml): only the command-line tool and the tests import it."""
from __future__ import annotations

import copy
import functools
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Optional

import celpy
import jsonschema
import yaml

ROOT = Path(__file__).resolve().parent.parent
CRD_DIR = ROOT / "crds"
GROUP = "llmsafespace.dev"


@functools.lru_cache(maxsize=None)
def _load() -> dict[str, dict[str, Any]]:
    crds: dict[str, dict[str, Any]] = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                crds[doc["spec"]["names"]["kind"]] = doc
    return crds


def load_crds() -> dict[str, dict[str, Any]]:
    """Every CRD of crds/, by kind. Deep-copied so a test cannot corrupt the cache."""
    return copy.deepcopy(_load())


def crd(kind: str) -> dict[str, Any]:
    return copy.deepcopy(_load()[kind])


def _storage_version(kind: str) -> dict[str, Any]:
    versions = [v for v in _load()[kind]["spec"]["versions"] if v.get("storage")]
    assert len(versions) == 1, f"{kind}: expected exactly one storage version"
    return versions[0]


def crd_schema(kind: str) -> dict[str, Any]:
    """The openAPIV3Schema of the storage version of `kind`."""
    return copy.deepcopy(_storage_version(kind)["schema"]["openAPIV3Schema"])


# ---------------------------------------------------------------------------------------------
# Defaulting and pruning, as the API server does them for structural schemas


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Return `value` with the schema's defaults filled in (missing properties only, recursively,
    defaults themselves defaulted) — what the API server stores."""
    value = copy.deepcopy(value)
    _default_in_place(schema, value)
    return value


def _default_in_place(schema: dict[str, Any], value: Any) -> None:
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                _default_in_place(sub, value[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name, item in value.items():
                if name not in schema.get("properties", {}):
                    _default_in_place(extra, item)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _default_in_place(schema["items"], item)


def unknown_fields(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """Paths of fields the API server would silently prune (not declared in the schema)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    out: list[str] = []
    if isinstance(value, dict) and schema.get("type") == "object":
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for name, item in value.items():
            if path == "" and name == "metadata":
                continue  # ObjectMeta is validated by the API server itself, never pruned here
            if name in props:
                out += unknown_fields(props[name], item, f"{path}.{name}")
            elif isinstance(extra, dict):
                out += unknown_fields(extra, item, f"{path}.{name}")
            elif not extra:
                out.append(f"{path}.{name}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            out += unknown_fields(schema["items"], item, f"{path}[{i}]")
    return out


# ---------------------------------------------------------------------------------------------
# jsonschema with the formats Kubernetes checks

_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
FORMAT_CHECKER = jsonschema.FormatChecker(formats=())


@FORMAT_CHECKER.checks("date-time")
def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not _DATE_TIME.match(value):
        return False
    datetime.fromisoformat(value.upper().replace("Z", "+00:00"))  # raises on impossible dates
    return True


@FORMAT_CHECKER.checks("int64")
def _is_int64(value: object) -> bool:
    return not isinstance(value, int) or -(2**63) <= value < 2**63


@FORMAT_CHECKER.checks("int32")
def _is_int32(value: object) -> bool:
    return not isinstance(value, int) or -(2**31) <= value < 2**31


def schema_errors(schema: dict[str, Any], value: Any) -> list[str]:
    """Every jsonschema error of `value` (no defaulting: jsonschema ignores `default`)."""
    validator = jsonschema.Draft7Validator(schema, format_checker=FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    return [f"{_json_path(e.absolute_path)}: {e.message}" for e in errors]


def _json_path(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out or "."


# ---------------------------------------------------------------------------------------------
# CEL rules

_ENV = celpy.Environment()


@functools.lru_cache(maxsize=None)
def cel_program(rule: str) -> celpy.Runner:
    """Compile a rule once (raises celpy.CELParseError on syntax errors)."""
    return _ENV.program(_ENV.compile(rule))


def is_transition_rule(rule: str) -> bool:
    return re.search(r"\boldSelf\b", rule) is not None


def eval_rule(rule: str, value: Any, old: Any = None) -> bool:
    """True when the rule holds; an evaluation error counts as a failure, as in the API server."""
    activation = {"self": celpy.json_to_cel(value)}
    if is_transition_rule(rule):
        activation["oldSelf"] = celpy.json_to_cel(old)
    try:
        result = cel_program(rule).evaluate(activation)
    except celpy.CELEvalError:
        return False
    return result is True or (isinstance(result, celpy.celtypes.BoolType) and bool(result))


def nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path (properties by name, list items as [*], map values as .*)."""
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from nodes(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from nodes(schema["items"], f"{path}[*]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from nodes(schema["additionalProperties"], f"{path}.*")


def cel_rules(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(path, schema node, rule) for every x-kubernetes-validations rule under `schema`."""
    for node_path, node in nodes(schema, path):
        for rule in node.get("x-kubernetes-validations", []):
            yield node_path, node, rule


_MISSING = object()


def cel_errors(schema: dict[str, Any], value: Any, old: Any = _MISSING, path: str = "") -> list[str]:
    """Messages of the CEL rules `value` breaks. Transition rules (those naming oldSelf) run only
    when an old value is given, and, like in the API server, only where old and new correlate:
    through object properties, not through list items."""
    out: list[str] = []
    for rule in schema.get("x-kubernetes-validations", []):
        if is_transition_rule(rule["rule"]) and old is _MISSING:
            continue
        if not eval_rule(rule["rule"], value, None if old is _MISSING else old):
            out.append(f"{path or '.'}: {rule.get('message') or 'failed rule: ' + rule['rule']}")
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                sub_old = old.get(name, _MISSING) if isinstance(old, dict) else _MISSING
                out += cel_errors(sub, value[name], sub_old, f"{path}.{name}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            out += cel_errors(schema["items"], item, _MISSING, f"{path}[{i}]")
    return out


# ---------------------------------------------------------------------------------------------
# The whole admission check


class CRValidationError(ValueError):
    """A custom resource the API server would reject (or silently change); lists every problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def kind_of(obj: dict[str, Any]) -> str:
    api_version = obj.get("apiVersion", "")
    if api_version.split("/")[0] != GROUP or obj.get("kind") not in _load():
        raise CRValidationError([f"not a kind of {GROUP}: {api_version} {obj.get('kind')}"])
    return obj["kind"]


def validate_cr(obj: dict[str, Any], old: Optional[dict[str, Any]] = None, *, allow_unknown: bool = False) -> dict[str, Any]:
    """Check `obj` (a whole custom resource) like the API server: defaults, schema, pruning (an
    undeclared field would be dropped, which is an error here unless `allow_unknown`), CEL rules
    (transition rules too when `old` is given). Raises CRValidationError listing every problem;
    returns the defaulted object."""
    kind = kind_of(obj)
    schema = crd_schema(kind)
    served = {v["name"] for v in _load()[kind]["spec"]["versions"] if v.get("served")}
    problems: list[str] = []
    if obj["apiVersion"].split("/", 1)[-1] not in served:
        problems.append(f"apiVersion {obj['apiVersion']} is not served")
    defaulted = apply_defaults(schema, obj)
    problems += schema_errors(schema, defaulted)
    if not allow_unknown:
        problems += [f"{p}: unknown field (the API server would prune it)" for p in unknown_fields(schema, defaulted)]
    old_defaulted = apply_defaults(schema, old) if old is not None else _MISSING
    problems += cel_errors(schema, defaulted, old_defaulted)
    if problems:
        raise CRValidationError([f"{kind} {obj.get('metadata', {}).get('name', '?')}: {p}" for p in problems])
    return defaulted
