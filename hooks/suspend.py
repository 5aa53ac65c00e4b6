"""Suspension of a Sandbox (docs/suspend.md): by spec.operatingMode, or for inactivity by
spec.idleTimeoutSeconds. A pure function of the spec, the last-activity annotation, the previous
status and `now`; sandbox_sync turns the answer into children (no pod) and status.

Status is the memory of a resume: the `Suspended` condition. Its lastTransitionTime to False is
when the sandbox last resumed (or when the hook first saw an idle timeout), which counts as
activity; without it a sandbox resumed by operatingMode after a long suspension would be
idle-suspended again at once. A stale status only ever makes that moment later (never earlier),
so it can delay an idle suspension by a sync, never cause one."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Optional

from . import constants as C
from .conditions import Condition, find_condition
from .meta import add_seconds, annotations, created, fmt_time, parse_time
from .validators import SandboxSpec

CONDITION_SUSPENDED = "Suspended"
REASON_OPERATING_MODE = "OperatingModeSuspended"
REASON_IDLE = "IdleTimeout"
REASON_ACTIVE = "Active"  # not suspended (the condition is written once suspension concerns the sandbox)
KEPT = "its volume (if it has one), Service, ServiceAccount and network policies are kept"


@dataclass  # per call, never edited; not frozen for speed (see conditions.Condition)
class Suspension:
    cause: str  # "" (runs), REASON_OPERATING_MODE or REASON_IDLE
    condition: Optional[Condition]  # None: suspension never concerned this sandbox (no condition, goldens unchanged)
    resync: Optional[float] = None  # seconds to the idle deadline

    @property
    def suspended(self) -> bool:
        return bool(self.cause)


def decide(spec: SandboxSpec, parent: Mapping[str, Any], previous: Mapping[str, Any], now: datetime) -> Suspension:
    """Whether the sandbox is suspended now, why, and when to look again (its idle deadline)."""
    before = find_condition(previous, CONDITION_SUSPENDED)
    if spec.operating_mode == C.OPERATING_MODE_SUSPENDED:
        return Suspension(REASON_OPERATING_MODE, Condition(
            CONDITION_SUSPENDED, "True", REASON_OPERATING_MODE,
            f"spec.operatingMode is Suspended: the pod is removed, {KEPT}; set it to Running to resume "
            "(a cold start on the same volume)"))
    if spec.idle_timeout_seconds is None:
        if before is None:
            return Suspension("", None)
        return Suspension("", Condition(CONDITION_SUSPENDED, "False", REASON_ACTIVE, "the sandbox is not suspended"))
    last, note = last_activity(parent, before, now)
    deadline = add_seconds(last, spec.idle_timeout_seconds)
    if now >= deadline:
        return Suspension(REASON_IDLE, Condition(
            CONDITION_SUSPENDED, "True", REASON_IDLE,
            f"no activity since {fmt_time(last)} for spec.idleTimeoutSeconds ({spec.idle_timeout_seconds}s): the pod is "
            f"removed, {KEPT}; set the annotation {C.ANNOTATION_LAST_ACTIVITY} to the current time to resume "
            f"(a cold start on the same volume){note}"))
    return Suspension("", Condition(
        CONDITION_SUSPENDED, "False", REASON_ACTIVE,
        f"last activity {fmt_time(last)}: suspended for inactivity at {fmt_time(deadline)} unless "
        f"{C.ANNOTATION_LAST_ACTIVITY} records a later activity{note}"), (deadline - now).total_seconds())


def last_activity(parent: Mapping[str, Any], before: Optional[Mapping[str, Any]], now: datetime) -> tuple[datetime, str]:
    """The latest of: the sandbox's creation, the last-activity annotation, and its last resume.
    The resume is `now` when the previous status says operatingMode suspended it (this sync
    resumes it), else the time the Suspended condition turned False, else `now` (the hook sees the
    idle timeout for the first time: the clock starts, never already run out). Also a note for the
    condition's message when the annotation cannot be read (it is ignored, never guessed)."""
    moments = [created(parent) or now]
    raw = annotations(parent).get(C.ANNOTATION_LAST_ACTIVITY)
    note = ""
    if raw is not None:
        stamp = parse_time(raw)
        if stamp is None:
            note = f" (annotation {C.ANNOTATION_LAST_ACTIVITY}={raw!r} is not an RFC 3339 time and is ignored)"
        else:
            moments.append(stamp)
    if before is None or (before.get("status") == "True" and before.get("reason") == REASON_OPERATING_MODE):
        moments.append(now)
    elif before.get("status") == "False":
        resumed = parse_time(before.get("lastTransitionTime"))
        moments.append(resumed if resumed is not None else now)
    return max(moments), note
