"""The shape of a Metacontroller hook request, checked before any hook runs.

Metacontroller sends Kubernetes objects read from its informer caches: every object is a JSON
object with `metadata.name` a string, labels and annotations maps of strings, `spec` and `status`
objects, `status.conditions` a list of objects. A body that breaks this is not a Metacontroller
request (a bug or a stranger), and the hooks, written for real objects, could only fail on it
with a 500 somewhere deep inside. `problem()` names the first thing wrong so the HTTP layer
answers 400 with that message (tests/test_fuzz.py fuzzes every route with such bodies).

Only the envelope and object metadata are checked here; what a spec means is each hook's
business (an unusable spec is reported in the parent's status, never refused). Go nil maps and
pointers arrive as null and are accepted where Metacontroller may send them (the sections of the
request, an object's spec and status); object metadata never holds a null (Go omits empty
fields), so a null there is refused like any other wrong type.

Metadata is held to Kubernetes' own limits (apimachinery's ValidateObjectMeta): the hooks copy the
parent's labels into every child and its name into theirs, so a stranger's request with 1.5 M
labels or a 1 MB name would otherwise cost seconds and answer 100+ MB. The parent (what gets
copied) is checked in full: name, namespace, label and annotation keys, label values, and their
total sizes; every other object only by the length of its name and namespace (two len() calls:
a 200-pod request must not pay a full validation per child). An object that passed the API
server's validation never breaks them."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

from .. import constants as C
from ..meta import DNS_LABEL, DNS_SUBDOMAIN, label_value_problem, qualified_name_problem

# Kinds whose names are DNS-1123 labels (63) rather than subdomains (253); Metacontroller names
# the kinds of children groups `Kind.version` or `Kind.group/version`.
_LABEL_NAMED_KINDS = frozenset({"Service", "Namespace"})
_SHOWN = 64  # characters of an offending key or name quoted back: never a 1 MB echo

_STRING_FIELDS = ("name", "namespace", "uid", "resourceVersion", "creationTimestamp", "deletionTimestamp", "generateName")
_MAP_SECTIONS = ("children", "attachments", "related")


def problem(payload: Mapping[str, Any]) -> Optional[str]:
    """The first reason `payload` is not a well-formed hook request, or None."""
    controller = payload.get("controller")
    if controller is not None and not isinstance(controller, Mapping):
        return "request.controller must be an object"
    finalizing = payload.get("finalizing")
    if finalizing is not None and not isinstance(finalizing, bool):
        return "request.finalizing must be true or false"
    for key in ("parent", "object"):
        if isinstance(payload.get(key), Mapping):  # absent or not an object: the hook names it
            found = _object(payload[key], f"request.{key}", copied=True)
            if found:
                return found
    for key in _MAP_SECTIONS:
        section = payload.get(key)
        if section is None:
            continue
        if not isinstance(section, Mapping):
            return f"request.{key} must be an object (kind -> {{key -> object}}), got {type(section).__name__}"
        for kind, group in section.items():
            if group is None:
                continue
            if not isinstance(group, Mapping):
                return f"request.{key}[{kind!r}] must be an object (key -> object), got {type(group).__name__}"
            kind_name = str(kind).split(".", 1)[0]
            for item_key, obj in group.items():
                found = _object(obj, f"request.{key}[{kind!r}][{_short(item_key)!r}]", kind_name)
                if found:
                    return found
    return None


def _object(obj: Any, where: str, kind: Optional[str] = None, copied: bool = False) -> Optional[str]:
    """`copied`: the parent, whose name and labels the hooks copy into children: checked in full."""
    if not isinstance(obj, Mapping):
        return f"{where} must be a Kubernetes object, got {type(obj).__name__}"
    for key in ("apiVersion", "kind"):
        if key in obj and not isinstance(obj[key], str):
            return f"{where}.{key} must be a string"
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping):
        return f"{where}.metadata must be an object"
    if not isinstance(meta.get("name"), str) or not meta["name"]:
        return f"{where}.metadata.name must be a non-empty string"
    for key in _STRING_FIELDS:
        if key in meta and not isinstance(meta[key], str):
            return f"{where}.metadata.{key} must be a string"
    generation = meta.get("generation", 0)
    if not isinstance(generation, int) or isinstance(generation, bool):
        return f"{where}.metadata.generation must be an integer"
    for key, limit in (("labels", C.MAX_LABELS_TOTAL_BYTES), ("annotations", C.MAX_ANNOTATIONS_TOTAL_BYTES)):
        value = meta.get(key, {})
        if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
            return f"{where}.metadata.{key} must map strings to strings"
        if copied:
            found = _size_problem(value, f"{where}.metadata.{key}", limit)
            if found:
                return found
    # Names of 63 characters or fewer pass every length rule: only the parent pays for the rest.
    if copied or len(meta["name"]) > C.MAX_DNS_LABEL or len(meta.get("namespace", "")) > C.MAX_DNS_LABEL:
        found = _names(meta, where, obj.get("kind") if kind is None else kind, copied)
        if found:
            return found
    if copied:
        found = _keys_and_values(meta, where)
        if found:
            return found
    for key, item_type in (("ownerReferences", Mapping), ("finalizers", str)):
        value = meta.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, item_type) for v in value):
            return f"{where}.metadata.{key} must be a list of {'objects' if item_type is Mapping else 'strings'}"
    for key in ("spec", "status"):
        if obj.get(key) is not None and not isinstance(obj[key], Mapping):
            return f"{where}.{key} must be an object"
    conditions = (obj.get("status") or {}).get("conditions")
    if conditions is not None and (not isinstance(conditions, list) or not all(isinstance(c, Mapping) for c in conditions)):
        return f"{where}.status.conditions must be a list of objects"
    return None


def _short(text: Any) -> str:
    text = str(text)
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN]}...({len(text)} characters)"


def _size_problem(value: Mapping[str, str], where: str, limit: int) -> Optional[str]:
    """Keys and values add up to at most `limit` bytes. Summed in C (map(len)); bytes are counted
    only when characters alone cannot decide (apimachinery counts bytes, a character is up to 4)."""
    size = sum(map(len, value)) + sum(map(len, value.values()))
    if limit < size * 4 and size <= limit:
        size = sum(len(k.encode()) for k in value) + sum(len(v.encode()) for v in value.values())
    if size > limit:
        return f"{where} exceed the Kubernetes limit of {limit} bytes in total (keys and values; {len(value)} entries)"
    return None


def _names(meta: Mapping[str, Any], where: str, kind: Any, copied: bool) -> Optional[str]:
    name = meta["name"]
    label_named = kind in _LABEL_NAMED_KINDS
    limit = C.MAX_DNS_LABEL if label_named else C.MAX_DNS_SUBDOMAIN
    rule = "DNS-1123 label" if label_named else "DNS-1123 subdomain"
    if len(name) > limit:
        return f"{where}.metadata.name is {len(name)} characters, over the {limit} of a {rule}"
    if copied and not (DNS_LABEL if label_named else DNS_SUBDOMAIN).fullmatch(name):
        return f"{where}.metadata.name {_short(name)!r} is not a {rule} (lower-case letters, digits, '-'{'' if label_named else ', .'})"
    ns = meta.get("namespace", "")
    if len(ns) > C.MAX_DNS_LABEL:
        return f"{where}.metadata.namespace is {len(ns)} characters, over the {C.MAX_DNS_LABEL} of a DNS-1123 label"
    if copied and ns and not DNS_LABEL.fullmatch(ns):
        return f"{where}.metadata.namespace {_short(ns)!r} is not a DNS-1123 label"
    return None


def _keys_and_values(meta: Mapping[str, Any], where: str) -> Optional[str]:
    labels = meta.get("labels") or {}
    for key, value in labels.items():
        found = qualified_name_problem(key)
        if found:
            return f"{where}.metadata.labels key {_short(key)!r} is not a qualified name: {found}"
        found = label_value_problem(value)
        if found:
            return f"{where}.metadata.labels[{key!r}] {_short(value)!r} is not a label value: {found}"
    for key in meta.get("annotations") or {}:
        found = qualified_name_problem(key.lower())
        if found:
            return f"{where}.metadata.annotations key {_short(key)!r} is not a qualified name: {found}"
    return None
