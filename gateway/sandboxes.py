"""From a Sandbox to the runtime that serves it, or the reason there is none yet.

The sandbox's status (written only by the controllers) names its pod: `status.podName` and
`status.podNamespace` (its own pod, or the warm pod bound to it). The gateway reads that pod for
its IP and UID (the signature's audience) and checks the pod carries the sandbox's UID label, or,
for a warm-served sandbox, the UID label of the WarmPod its status names (a warm pod carries it
from creation, and its WarmPod is bound to one sandbox for good), so a stale status can never send
one sandbox's call to another sandbox's pod."""
from __future__ import annotations

import ipaddress
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Optional

from .kube import ApiError, Kube

ANNOTATION_LAST_ACTIVITY = "llmsafespace.dev/last-activity"
LABEL_SANDBOX_UID = "llmsafespace.dev/sandbox-uid"
LABEL_WARMPOD_UID = "llmsafespace.dev/warmpod-uid"
RUNNING, SUSPENDED = "Running", "Suspended"
ENDED_PHASES = ("Terminated", "Failed", "Terminating")


class Refusal(Exception):
    """An answer to the caller: HTTP status, error code, message, and the sandbox's own state."""

    def __init__(self, status: int, code: str, message: str, sandbox: Optional[dict[str, Any]] = None,
                 retry_after: Optional[int] = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.sandbox, self.retry_after = status, code, message, sandbox, retry_after

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.sandbox:
            error["sandbox"] = self.sandbox
        return {"error": error}


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for c in (obj.get("status") or {}).get("conditions") or ():
        if isinstance(c, dict) and c.get("type") == kind:
            return c
    return {}


def summary(sandbox: dict[str, Any]) -> dict[str, Any]:
    """What an error tells about the sandbox: its phase and the reason of its Ready condition
    (or of Suspended when it is suspended), as the controllers wrote them."""
    meta, status = sandbox.get("metadata") or {}, sandbox.get("status") or {}
    out: dict[str, Any] = {"namespace": meta.get("namespace"), "name": meta.get("name"), "phase": status.get("phase")}
    kind = "Suspended" if is_suspended(sandbox) else "Ready"
    c = condition(sandbox, kind) or condition(sandbox, "Validated")
    if c:
        out.update(condition=c.get("type"), reason=c.get("reason"), message=c.get("message"))
    return out


def is_suspended(sandbox: dict[str, Any]) -> bool:
    spec, status = sandbox.get("spec") or {}, sandbox.get("status") or {}
    return (spec.get("operatingMode") == SUSPENDED or status.get("phase") in ("Suspended", "Suspending")
            or condition(sandbox, "Suspended").get("status") == "True")


def is_serving(sandbox: dict[str, Any]) -> bool:
    status = sandbox.get("status") or {}
    return (status.get("phase") == RUNNING and condition(sandbox, "Ready").get("status") == "True"
            and bool(status.get("podName")) and not is_suspended(sandbox))


def ended(sandbox: dict[str, Any]) -> bool:
    return bool((sandbox.get("metadata") or {}).get("deletionTimestamp")) or (sandbox.get("status") or {}).get("phase") in ENDED_PHASES


def not_serving(sandbox: dict[str, Any], resuming: bool = False) -> Refusal:
    s = summary(sandbox)
    name = f"{s['namespace']}/{s['name']}"
    if ended(sandbox):
        return Refusal(409, "sandbox_ended", f"sandbox {name} has ended (phase {s['phase']})", s)
    if is_suspended(sandbox):
        how = "it is being resumed; retry, or call with ?wait=true" if resuming else \
            "resuming it needs the right to patch sandboxes (kubectl patch ... operatingMode: Running)"
        return Refusal(409, "sandbox_suspended", f"sandbox {name} is suspended ({s.get('reason')}): {how}", s,
                       retry_after=2 if resuming else None)
    why = f"{s.get('reason')}: {s.get('message')}" if s.get("reason") else "no Ready condition yet"
    return Refusal(409, "sandbox_not_ready", f"sandbox {name} is not Running and Ready yet (phase {s['phase']}; {why})",
                   s, retry_after=1)


def routable(ip: Any) -> bool:
    """A pod IP the gateway may call: an IP literal (never a host name, port or path: it goes into
    a URL), and not an address no pod has (unspecified, multicast, link-local, where cloud
    metadata services live). Whoever can write a pod's status must not steer signed calls."""
    try:
        address = ipaddress.ip_address(ip) if isinstance(ip, str) else None
    except ValueError:
        return False
    return address is not None and not (address.is_unspecified or address.is_multicast or address.is_link_local)


@dataclass(frozen=True)
class Target:
    pod_ip: str
    pod_uid: str
    pod_name: str


def rfc3339(now: float) -> str:
    return datetime.fromtimestamp(int(now), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(value: Any) -> Optional[float]:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def carries_identity(sandbox: dict[str, Any], labels: dict[str, Any]) -> bool:
    """The pod is this sandbox's: it carries the sandbox's UID label (its own pods, and a warm pod
    once relabelled), or the sandbox runs on a warm pod (status.warmPodUsed) and the pod carries the
    UID label of the WarmPod its status names. The sandbox's hook records a WarmPod only once that
    WarmPod is assigned to the sandbox's UID, which never changes, so such a pod serves no other
    sandbox; the label is on the pod from its creation, so the first call need not wait for the
    relabel."""
    uid = (sandbox.get("metadata") or {}).get("uid")
    if uid and labels.get(LABEL_SANDBOX_UID) == uid:
        return True
    status = sandbox.get("status") or {}
    ref = status.get("warmPodRef") if isinstance(status.get("warmPodRef"), dict) else {}
    warm_uid = ref.get("uid")
    return status.get("warmPodUsed") is True and isinstance(warm_uid, str) and bool(warm_uid) and labels.get(LABEL_WARMPOD_UID) == warm_uid


@dataclass
class Sandboxes:
    kube: Kube
    activity_interval: int
    clock: Callable[[], float] = time.time
    on_activity: Callable[[str], None] = lambda result: None
    _written: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            return self.kube.get_sandbox(namespace, name)
        except ApiError as exc:
            if exc.status == 404:
                raise Refusal(404, "sandbox_not_found", f"sandbox {namespace}/{name} not found",
                              {"namespace": namespace, "name": name}) from None
            raise

    def target(self, sandbox: dict[str, Any]) -> Target:
        meta, status = sandbox["metadata"], sandbox.get("status") or {}
        namespace, pod_name = meta["namespace"], status.get("podName")
        s = summary(sandbox)
        if status.get("podNamespace") not in (None, namespace):
            raise Refusal(502, "runtime_unreachable", "the sandbox's pod is in another namespace", s)
        try:
            pod = self.kube.get_pod(namespace, pod_name)
        except ApiError as exc:
            if exc.status == 404:
                raise Refusal(503, "runtime_unreachable", f"the sandbox's pod {pod_name} does not exist (yet)", s, 1) from None
            raise
        if not carries_identity(sandbox, (pod.get("metadata") or {}).get("labels") or {}):
            raise Refusal(503, "runtime_unreachable", f"pod {pod_name} does not (yet) carry this sandbox's identity", s, 1)
        ip = (pod.get("status") or {}).get("podIP")
        if not ip or (pod.get("status") or {}).get("phase") != "Running":
            raise Refusal(503, "runtime_unreachable", f"pod {pod_name} is not running", s, 1)
        if not routable(ip):
            raise Refusal(502, "runtime_unreachable", f"pod {pod_name} reports an address the gateway will not call", s)
        return Target(str(ipaddress.ip_address(ip)), pod["metadata"]["uid"], pod_name)

    def resume(self, sandbox: dict[str, Any]) -> dict[str, Any]:
        """operatingMode back to Running and activity now: the second also ends an idle suspension,
        where operatingMode stayed Running (docs/suspend.md)."""
        meta = sandbox["metadata"]
        patch = {"metadata": {"annotations": {ANNOTATION_LAST_ACTIVITY: rfc3339(self.clock())}},
                 "spec": {"operatingMode": RUNNING}}
        updated = self.kube.patch_sandbox(meta["namespace"], meta["name"], patch)
        with self._lock:
            self._written[meta.get("uid", "")] = self.clock()
        return updated

    def wait_serving(self, sandbox: dict[str, Any], seconds: float) -> dict[str, Any]:
        """Watch the sandbox (no polling) until it serves, has ended, or `seconds` pass."""
        meta = sandbox["metadata"]
        deadline = time.monotonic() + seconds
        while not is_serving(sandbox) and not ended(sandbox):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            version = meta.get("resourceVersion") or "0"
            began = time.monotonic()
            try:
                for event in self.kube.watch_sandbox(meta["namespace"], meta["name"], version, int(left) + 1):
                    if event.get("type") == "DELETED":
                        raise Refusal(404, "sandbox_not_found", f"sandbox {meta['namespace']}/{meta['name']} was deleted")
                    if event.get("type") in ("ADDED", "MODIFIED"):
                        sandbox = event["object"]
                        if is_serving(sandbox) or ended(sandbox) or time.monotonic() >= deadline:
                            break
                    elif event.get("type") == "ERROR":  # 410 Gone: read again, watch again
                        break
            except ApiError:
                pass
            if is_serving(sandbox) or ended(sandbox):
                break
            if time.monotonic() - began < 0.5:  # a watch refused or closed at once: never spin on the API server
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            if time.monotonic() < deadline:
                sandbox = self.get(meta["namespace"], meta["name"])
            meta = sandbox["metadata"]
        return sandbox

    def record_activity(self, sandbox: dict[str, Any]) -> None:
        """Write llmsafespace.dev/last-activity unless it, or this process, wrote it less than an
        interval ago. The patch carries the resourceVersion the decision was made on, so of two
        replicas deciding at once only one write lands; the other gets 409, reads the sandbox again
        and skips when the annotation is now recent (or writes once more when something else moved
        the version)."""
        meta = sandbox.get("metadata") or {}
        uid, now = meta.get("uid", ""), self.clock()
        recorded = parse_rfc3339((meta.get("annotations") or {}).get(ANNOTATION_LAST_ACTIVITY))
        with self._lock:
            last = max(recorded or 0.0, self._written.get(uid, 0.0))
            if now - last < self.activity_interval:
                return
            self._written[uid] = now
            if len(self._written) > 100_000:  # bounded: forget the oldest half
                for key in sorted(self._written, key=self._written.__getitem__)[:50_000]:
                    del self._written[key]
        version = meta.get("resourceVersion")
        for attempt in range(2):
            patch = {"metadata": {"resourceVersion": version, "annotations": {ANNOTATION_LAST_ACTIVITY: rfc3339(now)}}}
            try:
                self.kube.patch_sandbox(meta["namespace"], meta["name"], patch)
                self.on_activity("written")
                return
            except ApiError as exc:
                if exc.status == 409 and attempt == 0:
                    # Someone changed the sandbox since it was read: another replica's write (then
                    # nothing to do), or any other change (a status update): then write on the fresh
                    # version, else a busy sandbox could look idle for an interval.
                    self.on_activity("conflict")
                    try:
                        fresh = self.kube.get_sandbox(meta["namespace"], meta["name"])
                    except ApiError:
                        fresh = {}
                    fresh_meta = fresh.get("metadata") or {}
                    written = parse_rfc3339((fresh_meta.get("annotations") or {}).get(ANNOTATION_LAST_ACTIVITY))
                    if fresh_meta.get("uid") != uid or (written is not None and now - written < self.activity_interval):
                        return
                    version = fresh_meta.get("resourceVersion")
                    continue
                with self._lock:
                    if self._written.get(uid) == now:
                        self._written[uid] = last  # not written: the next call tries again
                self.on_activity("conflict" if exc.status == 409 else "error")
                return
