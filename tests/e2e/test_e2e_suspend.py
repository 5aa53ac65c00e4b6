"""Suspend, resume and idle suspension on the real control plane (issue 15; docs/suspend.md): with
kubectl, the pod goes and comes back on the same volume, `kubectl get sandboxes` shows it, and an
idle timeout suspends a sandbox by itself (the hook's resyncAfterSeconds wakes it)."""
from __future__ import annotations

import json
from datetime import datetime, timezone

from hooks import constants as C
from tests.e2e.kube import Kube, condition
from tests.e2e.objects import children, sandbox


def _patch(kube: Kube, namespace: str, name: str, body: dict) -> None:
    kube.kubectl("patch", "sandbox", name, "-n", namespace, "--type", "merge", "-p", json.dumps(body))


def test_suspend_and_resume_keep_the_volume(kube: Kube, namespace: str, rte: str) -> None:
    kube.apply(sandbox("nb", namespace, rte, storage={"persistent": True, "volumeSize": "1Gi"}))
    sb = kube.wait_sandbox(namespace, "nb", "Running", ready=True, timeout=60)
    uid = sb["metadata"]["uid"]
    pod = kube.core("Pod", namespace, "sandbox-nb")
    claim = kube.core("PersistentVolumeClaim", namespace, "sandbox-nb-data")
    assert pod is not None and claim is not None and claim["status"]["phase"] == "Bound"
    held = children(kube, namespace, uid)

    _patch(kube, namespace, "nb", {"spec": {"operatingMode": "Suspended"}})
    suspended = kube.wait_sandbox(namespace, "nb", "Suspended", ready=False, timeout=60)
    # Status tells the truth: Suspended only once the pod is gone; everything else is still there.
    assert kube.core("Pod", namespace, "sandbox-nb") is None
    assert children(kube, namespace, uid) == {**held, "Pod": set()}
    kept = kube.core("PersistentVolumeClaim", namespace, "sandbox-nb-data")
    assert kept is not None and kept["metadata"]["uid"] == claim["metadata"]["uid"] and kept["status"]["phase"] == "Bound"
    assert condition(suspended, "Suspended")["reason"] == "OperatingModeSuspended" and condition(suspended, "Ready")["reason"] == "Suspended"
    listed = kube.kubectl("get", "sandboxes", "-n", namespace, "-o", "wide")
    assert "Suspended" in listed.splitlines()[1], listed  # the Status and Mode columns

    _patch(kube, namespace, "nb", {"spec": {"operatingMode": "Running"}})
    resumed = kube.wait_sandbox(namespace, "nb", "Running", ready=True, timeout=60)
    again = kube.core("Pod", namespace, "sandbox-nb")
    assert again is not None and again["metadata"]["uid"] != pod["metadata"]["uid"]  # a cold start
    claims = [v["persistentVolumeClaim"]["claimName"] for v in again["spec"]["volumes"] if "persistentVolumeClaim" in v]
    assert claims == ["sandbox-nb-data"]
    same = kube.core("PersistentVolumeClaim", namespace, "sandbox-nb-data")
    assert same is not None and same["metadata"]["uid"] == claim["metadata"]["uid"]
    assert same["spec"]["volumeName"] == claim["spec"]["volumeName"]  # the same volume, data and all
    assert condition(resumed, "Suspended")["status"] == "False"


def test_idle_suspension_fires_and_activity_resumes(kube: Kube, namespace: str, rte: str) -> None:
    kube.apply(sandbox("idle", namespace, rte, idleTimeoutSeconds=10))
    running = kube.wait_sandbox(namespace, "idle", "Running", ready=True, timeout=60)
    assert condition(running, "Suspended")["status"] == "False"
    # Nothing but the hook's own deadline (resyncAfterSeconds) wakes it: no activity is recorded.
    idle = kube.wait_sandbox(namespace, "idle", "Suspended", ready=False, timeout=45)
    assert condition(idle, "Suspended")["reason"] == "IdleTimeout"
    assert kube.core("Pod", namespace, "sandbox-idle") is None
    assert kube.core("Service", namespace, "sandbox-idle") is not None

    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    kube.kubectl("annotate", "sandbox", "idle", "-n", namespace, f"{C.ANNOTATION_LAST_ACTIVITY}={now}", "--overwrite")
    # Resumed at once: a new pod is desired (it would be idle-suspended again 10 s later).
    kube.wait("the sandbox resumed with a new pod", lambda: condition(kube.custom("Sandbox", namespace, "idle"), "Suspended").get("status") == "False"
              and kube.core("Pod", namespace, "sandbox-idle") is not None, 8,
              show=lambda: (kube.custom("Sandbox", namespace, "idle") or {}).get("status"))
