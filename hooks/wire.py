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
fields), so a null there is refused like any other wrong type."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

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
            found = _object(payload[key], f"request.{key}")
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
            for item_key, obj in group.items():
                found = _object(obj, f"request.{key}[{kind!r}][{item_key!r}]")
                if found:
                    return found
    return None


def _object(obj: Any, where: str) -> Optional[str]:
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
    for key in ("labels", "annotations"):
        value = meta.get(key, {})
        if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
            return f"{where}.metadata.{key} must map strings to strings"
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
