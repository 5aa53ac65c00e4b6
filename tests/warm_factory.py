"""Builders of WarmPool / WarmPod requests and observed objects for tests (hook API v2 shapes).

Extends tests/factory.py: same clock (NOW), same namespace, same fake UIDs."""
from __future__ import annotations

import copy
from datetime import datetime, timedelta
from typing import Any, Iterable, Optional

from hooks import constants as C
from hooks import warmpool_sync
from hooks.meta import fmt_time
from tests.factory import NOW, NS, fake_uid, observed, running_pod_status, runtime, sandbox, sync_request

RTE = runtime()  # python-3.11, available
POOL_CHILD_KEYS = (C.GVK_WARMPOD, C.GVK_WARMPOOL_OFFER)
POOL_RELATED_KEYS = (C.GVK_SANDBOX, C.GVK_RUNTIME, C.GVK_WARMPOOL_OFFER)
WARMPOD_CHILD_KEYS = (C.GVK_POD, C.GVK_NETWORK_POLICY)
POOL_CREATED = "2026-11-22T10:00:00Z"


def ago(seconds: float) -> str:
    return fmt_time(NOW - timedelta(seconds=seconds))


def pool(name: str = "python", namespace: str = NS, status: Optional[dict[str, Any]] = None,
         deleting: bool = False, generation: int = 1, **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "uid": fake_uid("wp", namespace, name),
                            "generation": generation, "creationTimestamp": POOL_CREATED}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-22T11:59:59Z"
        meta["finalizers"] = ["metacontroller.io/compositecontroller-llmsafespace-warmpool"]
    obj: dict[str, Any] = {"apiVersion": C.API_VERSION, "kind": C.KIND_WARMPOOL, "metadata": meta,
                           "spec": {"runtime": "python:3.11", **spec}}
    if status is not None:
        obj["status"] = status
    return obj


def warm_pod(parent_pool: dict[str, Any], k: int, phase: Optional[str] = "Ready", created: str = "2026-11-22T11:00:00Z",
             assigned_to: Optional[dict[str, Any]] = None, deleting: bool = False,
             spec_overrides: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """An observed WarmPod of `parent_pool` as the API server holds it: what the pool's hook would
    emit for a fresh pod (template spec, defaults filled), owned by the pool, with a status."""
    pool_name = parent_pool["metadata"]["name"]
    spec = {
        "poolRef": {"name": pool_name}, "runtime": "python-3.11", "image": RTE["spec"]["image"],
        "securityLevel": "standard", "resources": {"cpu": "500m", "memory": "512Mi", "ephemeralStorage": "1Gi"},
        "preloadScripts": [], **(spec_overrides or {}),
    }
    labels = {C.LABEL_APP: C.APP_NAME, C.LABEL_COMPONENT: C.COMPONENT_WARMPOD, C.LABEL_MANAGED_BY: C.MANAGED_BY,
              C.LABEL_WARMPOOL: pool_name}
    if assigned_to is not None:
        spec["assignment"] = {"sandboxName": assigned_to["metadata"]["name"], "sandboxUid": assigned_to["metadata"]["uid"]}
        labels[C.LABEL_SANDBOX_UID] = assigned_to["metadata"]["uid"]
        labels[C.LABEL_SANDBOX_ID] = assigned_to["metadata"]["name"]
    desired = {"apiVersion": C.API_VERSION, "kind": C.KIND_WARMPOD,
               "metadata": {"name": warmpool_sync.member_name(pool_name, k), "namespace": parent_pool["metadata"]["namespace"],
                            "labels": labels},
               "spec": spec}
    status = {"phase": phase, "podName": desired["metadata"]["name"], "podNamespace": parent_pool["metadata"]["namespace"]} if phase else {}
    obj = observed(desired, parent_pool, **status)
    obj["metadata"]["creationTimestamp"] = created
    obj["metadata"]["generation"] = 2 if assigned_to is not None else 1
    if deleting:
        obj["metadata"]["deletionTimestamp"] = "2026-11-22T11:59:58Z"
        obj["metadata"]["finalizers"] = ["metacontroller.io/compositecontroller-llmsafespace-warmpod"]
    return obj


def waiting_sandbox(name: str, created: str = "2026-11-22T11:59:50Z", pool_name: str = "python",
                    spec: Optional[dict[str, Any]] = None, **status: Any) -> dict[str, Any]:
    """A sandbox that chose `pool_name` and waits for a warm pod (no warmPodUsed key yet)."""
    return sandbox(name, spec={"runtime": "python-3.11", **(spec or {})}, created=created,
                   annotations={C.ANNOTATION_USE_WARM_POD: "true"},
                   status={"phase": C.PHASE_PENDING, "warmPool": pool_name, **status})


def pool_request(parent: dict[str, Any], warm_pods: Iterable[dict[str, Any]] = (),
                 related: Iterable[dict[str, Any]] = (RTE,), finalizing: bool = False,
                 offers: Optional[Iterable[dict[str, Any]]] = None) -> dict[str, Any]:
    """A WarmPool request. `offers`: the WarmPoolOffers it relates to; by default its own, as its
    hook makes it from the runtimes in `related` (none when it cannot serve)."""
    related = list(related)
    offered = list(offers) if offers is not None else own_offer(parent, related)
    req = sync_request(parent, children=warm_pods, related=related + offered, finalizing=finalizing,
                       child_keys=POOL_CHILD_KEYS, related_keys=POOL_RELATED_KEYS)
    req["controller"]["metadata"]["name"] = "llmsafespace-warmpool"
    return req


def own_offer(parent: dict[str, Any], related: Iterable[dict[str, Any]] = (RTE,)) -> list[dict[str, Any]]:
    """The pool's WarmPoolOffer as the API server holds it after the pool's first sync (none when
    the pool cannot serve): what sandboxes, and the pool itself, choose from."""
    alive = {**parent, "metadata": {k: v for k, v in parent["metadata"].items() if k not in ("deletionTimestamp", "finalizers")}}
    alive.pop("status", None)
    req = sync_request(alive, related=[o for o in related if o.get("kind") == C.KIND_RUNTIME],
                       child_keys=POOL_CHILD_KEYS, related_keys=POOL_RELATED_KEYS)
    out = warmpool_sync.sync(req, NOW)
    return [observed(c, parent) for c in out["children"] if c["kind"] == C.KIND_WARMPOOL_OFFER]


def warmpod_parent(pool_name: str = "python", k: int = 0, assigned_to: Optional[dict[str, Any]] = None,
                   deleting: bool = False, spec_overrides: Optional[dict[str, Any]] = None,
                   status: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """A WarmPod as its own controller sees it (the parent of the WarmPod hook)."""
    obj = warm_pod(pool(pool_name), k, phase=None, assigned_to=assigned_to, deleting=deleting, spec_overrides=spec_overrides)
    obj["metadata"]["uid"] = fake_uid("wpod", NS, obj["metadata"]["name"])
    obj["metadata"]["annotations"].pop("metacontroller.k8s.io/last-applied-configuration", None)
    if status is not None:
        obj["status"] = status
    else:
        obj.pop("status", None)
    return obj


def warmpod_request(parent: dict[str, Any], children: Iterable[dict[str, Any]] = (), finalizing: bool = False) -> dict[str, Any]:
    req = sync_request(parent, children=children, related=(), finalizing=finalizing,
                       child_keys=WARMPOD_CHILD_KEYS, related_keys=())
    req["controller"]["metadata"]["name"] = "llmsafespace-warmpod"
    return req


def observed_child(desired: dict[str, Any], parent: dict[str, Any], labels: Optional[dict[str, str]] = None,
                   **status: Any) -> dict[str, Any]:
    """A desired child of a WarmPod as the API server holds it, optionally with other labels
    (e.g. before an in-place relabel was applied)."""
    obj = observed(copy.deepcopy(desired), parent, **status)
    if labels is not None:
        obj["metadata"]["labels"] = {**labels, "controller-uid": parent["metadata"]["uid"]}
    return obj


def ready_pod_status(since: str = "2026-11-22T11:59:58Z") -> dict[str, Any]:
    out = running_pod_status(ready=True)
    out["conditions"][0]["lastTransitionTime"] = since
    return out


def at(moment: str) -> datetime:
    return datetime.fromisoformat(moment.replace("Z", "+00:00"))
