"""Status conditions with Kubernetes conventions: lastTransitionTime moves only when a
condition's status changes, so an unchanged world produces an unchanged status (and no
extra sync through Metacontroller's own status write)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from collections.abc import Mapping
from typing import Any

from .meta import MAPPING, fmt_time


def find_condition(status: Any, type_: str, status_value: str | None = None) -> Mapping[str, Any] | None:
    """The first condition of `type_` (and, when given, of that status) in an object's status, as
    it was observed: one reading for parents' and pods' conditions alike."""
    conditions = status.get("conditions") if isinstance(status, MAPPING) else None
    for cond in conditions if isinstance(conditions, list) else []:
        if isinstance(cond, MAPPING) and cond.get("type") == type_ and (status_value is None or cond.get("status") == status_value):
            return cond
    return None


# Values a hook builds and reads within one call (Condition, and likewise PodShape, SyncRequest, the
# sync steps' results) are plain dataclasses, never edited after construction. Not frozen: a frozen
# dataclass's __init__ sets each field through object.__setattr__, about 3x the cost, and a sync
# builds dozens (-12 to -15 % of a Sandbox sync's instructions, docs/benchmark.md).
@dataclass
class Condition:
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str


def render(
    wanted: list[Condition],
    previous_status: Any,
    now: datetime,
    generation: int | None,
) -> list[dict[str, Any]]:
    """Conditions in a stable order (by type), carrying over each previous lastTransitionTime
    when its status did not change. Conditions the hook does not manage (e.g. Metacontroller's
    `Updated`) are kept as they were."""
    previous: dict[str, Mapping[str, Any]] = {}
    if isinstance(previous_status, MAPPING):
        for cond in previous_status.get("conditions") or []:
            if isinstance(cond, MAPPING) and isinstance(cond.get("type"), str):
                previous[cond["type"]] = cond
    out: dict[str, dict[str, Any]] = {}
    now_text = ""  # fmt_time(now), formatted once, when a condition changes
    for cond in wanted:
        old = previous.get(cond.type)
        stamp = old.get("lastTransitionTime") if old and old.get("status") == cond.status else None
        if not isinstance(stamp, str):
            stamp = now_text = now_text or fmt_time(now)
        entry: dict[str, Any] = {
            "type": cond.type,
            "status": cond.status,
            "reason": cond.reason,
            "message": cond.message,
            "lastTransitionTime": stamp,
        }
        if generation is not None:
            entry["observedGeneration"] = generation
        out[cond.type] = entry
    managed = {c.type for c in wanted}
    for type_, old in previous.items():
        if type_ not in managed and type_ == "Updated":
            out[type_] = dict(old)
    return [out[k] for k in sorted(out)]


def generation(obj: Mapping[str, Any]) -> int | None:
    value = obj.get("metadata", {}).get("generation")
    return value if isinstance(value, int) and not isinstance(value, bool) else None
