"""Builders of Metacontroller requests and observed objects for tests (hook API v2 shapes)."""
from __future__ import annotations

import copy
import hashlib
from datetime import datetime, timezone
from typing import Any, Iterable, Optional

from hooks import constants as C

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=timezone.utc)
CREATED = "2026-11-22T11:59:50Z"
NS = "demo"


def fake_uid(*parts: str) -> str:
    digest = hashlib.sha256("/".join(parts).encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


def runtime(name: str = "python-3.11", language: str = "python", version: str = "3.11",
            available: Optional[bool] = True, **spec: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": C.API_VERSION,
        "kind": C.KIND_RUNTIME,
        "metadata": {"name": name, "uid": fake_uid("rte", name), "generation": 1, "creationTimestamp": "2026-11-01T00:00:00Z"},
        # Made for gVisor, like examples/runtimeenvironment-python.yaml: securityLevel high needs it.
        "spec": {"image": f"ghcr.io/llmsafespace/runtime-{language}:{version}", "language": language, "version": version,
                 "securityFeatures": ["gvisor", "seccomp"], **spec},
    }
    if available is not None:
        obj["status"] = {"available": available}
    return obj


def profile(name: str = "data-science", namespace: str = NS, validated: Optional[bool] = True, **spec: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": C.API_VERSION,
        "kind": C.KIND_PROFILE,
        "metadata": {"name": name, "namespace": namespace, "uid": fake_uid("sbp", namespace, name), "generation": 1},
        "spec": {"language": "python", **spec},
    }
    if validated is not None:
        obj["status"] = {"validated": validated}
    return obj


def sandbox(name: str = "alpha", namespace: str = NS, spec: Optional[dict[str, Any]] = None,
            status: Optional[dict[str, Any]] = None, labels: Optional[dict[str, str]] = None,
            annotations: Optional[dict[str, str]] = None, created: str = CREATED,
            deleting: bool = False, generation: int = 1) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name, "namespace": namespace, "uid": fake_uid("sb", namespace, name),
        "generation": generation, "creationTimestamp": created,
    }
    if labels:
        meta["labels"] = labels
    if annotations:
        meta["annotations"] = annotations
    if deleting:
        meta["deletionTimestamp"] = "2026-11-22T11:59:59Z"
        meta["finalizers"] = ["metacontroller.io/compositecontroller-llmsafespace-sandbox"]
    obj: dict[str, Any] = {
        "apiVersion": C.API_VERSION, "kind": C.KIND_SANDBOX, "metadata": meta,
        "spec": {"runtime": "python:3.11", **(spec or {})},
    }
    if status is not None:
        obj["status"] = status
    return obj


def _key(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    return f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else meta["name"]


def group(objs: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Objects grouped as Metacontroller sends them: {Kind.group/version: {ns/name: obj}}."""
    out: dict[str, dict[str, Any]] = {}
    for obj in objs:
        gvk = C.gvk_key(obj["kind"], obj["apiVersion"])
        out.setdefault(gvk, {})[_key(obj)] = obj
    return out


SANDBOX_CHILD_KEYS = (C.GVK_POD, C.GVK_SERVICE, C.GVK_SERVICE_ACCOUNT, C.GVK_PVC, C.GVK_NETWORK_POLICY)
SANDBOX_RELATED_KEYS = (C.GVK_RUNTIME, C.GVK_WARMPOOL_OFFER, C.GVK_WARMPOD)


def sync_request(parent: dict[str, Any], children: Iterable[dict[str, Any]] = (),
                 related: Iterable[dict[str, Any]] = (), finalizing: bool = False,
                 child_keys: Iterable[str] = SANDBOX_CHILD_KEYS,
                 related_keys: Iterable[str] = SANDBOX_RELATED_KEYS) -> dict[str, Any]:
    kids = {k: {} for k in child_keys}
    kids.update(group(children))
    rel = {k: {} for k in related_keys}
    rel.update(group(related))
    return {
        "controller": {"apiVersion": "metacontroller.k8s.io/v1alpha1", "kind": "CompositeController",
                       "metadata": {"name": "llmsafespace-sandbox"}},
        "parent": parent, "children": kids, "related": rel, "finalizing": finalizing,
    }


def observed(desired: dict[str, Any], parent: dict[str, Any], **status: Any) -> dict[str, Any]:
    """What the API server would hold for a desired child: uid, owner reference, status."""
    obj = copy.deepcopy(desired)
    meta = obj["metadata"]
    meta.setdefault("namespace", parent["metadata"].get("namespace"))
    meta["uid"] = fake_uid("child", obj["kind"], meta["namespace"], meta["name"])
    meta["resourceVersion"] = "1"
    meta["creationTimestamp"] = "2026-11-22T11:59:55Z"
    meta["ownerReferences"] = [{
        "apiVersion": parent["apiVersion"], "kind": parent["kind"], "name": parent["metadata"]["name"],
        "uid": parent["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True,
    }]
    meta.setdefault("labels", {})["controller-uid"] = parent["metadata"]["uid"]
    meta.setdefault("annotations", {})["metacontroller.k8s.io/last-applied-configuration"] = "{}"
    if status:
        obj["status"] = status
    return obj


def running_pod_status(ready: bool = True) -> dict[str, Any]:
    return {
        "phase": "Running",
        "startTime": "2026-11-22T11:59:56Z",
        "conditions": [{"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": "2026-11-22T11:59:58Z"}],
    }


def settle(hook: Any, request: dict[str, Any], now: datetime = NOW, *, pod_status: Optional[dict[str, Any]] = None,
           rounds: int = 4) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Answer `request` with `hook` round after round, each time observing every desired child as
    the API server would hold it (Pods with `pod_status`; other children updated in place to what
    was desired, as Metacontroller applies them), until the desired children stop changing.
    Returns (the observed children, the last answer): a parent's settled desired state. Creation
    takes more than one round: a sandbox's Pod waits for its ServiceAccount."""
    parent = request["parent"]
    held: list[dict[str, Any]] = [o for g in request.get("children", {}).values() for o in g.values()]
    answer: dict[str, Any] = {}
    for _ in range(rounds):
        current = copy.deepcopy(request)
        current["children"] = {k: {} for k in request.get("children", {})}
        current["children"].update(group(held))
        answer = hook(current, now)
        by_ident = {(c["kind"], c["metadata"]["name"]): c for c in held}
        applied = {(c["kind"], c["metadata"]["name"]): _applied(by_ident.get((c["kind"], c["metadata"]["name"])), c, parent, pod_status)
                   for c in answer["children"]}
        if set(applied) == set(by_ident) and all(applied[k] is by_ident[k] for k in applied):
            return held, answer  # nothing to create, update or delete
        held = list(applied.values())
    raise AssertionError(f"desired children still changing after {rounds} rounds")


def _applied(seen: Optional[dict[str, Any]], desired: dict[str, Any], parent: dict[str, Any],
             pod_status: Optional[dict[str, Any]]) -> dict[str, Any]:
    """A desired child as the API server holds it once applied: a Pod as first observed (never
    updated: its spec is immutable and it has a status), anything else as desired, where it was
    observed with another spec (an in-place update)."""
    if seen is not None and (desired["kind"] == "Pod" or seen.get("spec") == desired.get("spec")):
        return seen
    return observed(desired, parent, **(pod_status or {} if desired["kind"] == "Pod" else {}))
