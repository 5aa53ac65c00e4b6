"""What every CompositeController hook shares: the request's parent, the response's shape, and
observed children echoed back unchanged. One place, so every controller answers alike."""
from __future__ import annotations

from datetime import datetime
from collections.abc import Mapping
from typing import Any, Optional

from .conditions import Condition, generation, render
from .meta import MAPPING

# Server-managed metadata that must not be echoed back when a child is kept as observed.
SYSTEM_METADATA = frozenset({
    "uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink",
    "ownerReferences", "deletionTimestamp", "deletionGracePeriodSeconds", "finalizers",
})
LAST_APPLIED = "metacontroller.k8s.io/last-applied-configuration"


class BadRequest(ValueError):
    """The request is not a well-formed Metacontroller request (answered with HTTP 400)."""


def parent_of(request: Mapping[str, Any], key: str = "parent") -> Mapping[str, Any]:
    parent = request.get(key)
    if not isinstance(parent, MAPPING) or not isinstance(parent.get("metadata"), MAPPING):
        raise BadRequest(f"request.{key} must be an object with metadata")
    return parent


def as_desired(obj: Mapping[str, Any]) -> dict[str, Any]:
    """An observed child as a desired one, minus status and server-managed metadata, so
    Metacontroller changes nothing."""
    copy = {k: v for k, v in obj.items() if k != "status"}
    meta = {k: v for k, v in obj["metadata"].items() if k not in SYSTEM_METADATA}
    if isinstance(meta.get("annotations"), MAPPING):
        meta["annotations"] = {k: v for k, v in meta["annotations"].items() if k != LAST_APPLIED}
        if not meta["annotations"]:
            del meta["annotations"]
    copy["metadata"] = meta
    return copy


def composite_response(parent: Mapping[str, Any], previous: Any, now: datetime, status: Mapping[str, Any],
                       conditions: list[Condition], children: list[dict[str, Any]],
                       resync: Optional[float]) -> dict[str, Any]:
    """The whole status (Metacontroller replaces it), conditions rendered with stable transition
    times, children in a stable order, and a resync only when a deadline is ahead."""
    full = {k: v for k, v in status.items() if v is not None}
    full["conditions"] = render(conditions, previous, now, generation(parent))
    response: dict[str, Any] = {
        "status": dict(sorted(full.items())),
        "children": sorted(children, key=lambda c: (c.get("apiVersion", ""), c.get("kind", ""), c["metadata"]["name"])),
    }
    if resync is not None and resync > 0:
        response["resyncAfterSeconds"] = round(resync, 3)
    return response


# How soon a finalize hook that is still waiting asks to be called again (child events usually
# come sooner); a suspending sandbox polls as often.
FINALIZE_POLL_SECONDS = 10.0


def finalize_response(parent: Mapping[str, Any], previous: Any, now: datetime, status: Mapping[str, Any],
                      condition: Condition, children: list[dict[str, Any]], done: bool) -> dict[str, Any]:
    """A finalize hook's answer: `finalized` once `done`, else asked again in FINALIZE_POLL_SECONDS."""
    response = composite_response(parent, previous, now, status, [condition], children, None if done else FINALIZE_POLL_SECONDS)
    response["finalized"] = done
    return response
