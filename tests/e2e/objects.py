"""Builders of the objects e2e tests create, and small readings of what the API server holds."""
from __future__ import annotations

from typing import Any

from hooks import constants as C
from tests.e2e.kube import Kube, names

RUNTIME_IMAGE = "ghcr.io/llmsafespace/runtime-python:3.11"
# The hook server's warm-pod wait in the suite (short, so the cold fallback runs within its budget).
WARM_POD_WAIT_SECONDS = 6
CHILD_CREATE_GRACE_SECONDS = 6
SMALL = {"cpu": "250m", "memory": "256Mi", "ephemeralStorage": "512Mi"}
CHILD_KINDS = ("Pod", "Service", "ServiceAccount", "PersistentVolumeClaim", "NetworkPolicy")


def runtime(name: str) -> dict[str, Any]:
    return {"apiVersion": "llmsafespace.dev/v1", "kind": "RuntimeEnvironment", "metadata": {"name": name},
            "spec": {"image": RUNTIME_IMAGE, "language": "python", "version": "3.11", "securityFeatures": ["gvisor", "seccomp"]}}


def sandbox(name: str, namespace: str, runtime_name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "llmsafespace.dev/v1", "kind": "Sandbox", "metadata": {"name": name, "namespace": namespace},
            "spec": {"runtime": runtime_name, **spec}}


def pool(name: str, namespace: str, runtime_name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "llmsafespace.dev/v1", "kind": "WarmPool", "metadata": {"name": name, "namespace": namespace},
            "spec": {"runtime": runtime_name, "minSize": 2, "maxSize": 6, "resources": SMALL, **spec}}


def warm_sandbox(name: str, namespace: str, runtime_name: str, pool_name: str) -> dict[str, Any]:
    return sandbox(name, namespace, runtime_name, warmPoolRef={"name": pool_name}, resources=SMALL)


def owned_by(obj: dict[str, Any], owner: dict[str, Any]) -> bool:
    return any(r.get("uid") == owner["metadata"]["uid"] and r.get("controller") for r in obj["metadata"].get("ownerReferences") or [])


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def children(kube: Kube, namespace: str, uid: str) -> dict[str, set[str]]:
    """Names of the objects of each child kind carrying the sandbox's UID label."""
    selector = f"{C.LABEL_SANDBOX_UID}={uid}"
    return {kind: names(kube.list(kind, namespace, selector)) for kind in CHILD_KINDS}


def endpoint_ips(kube: Kube, namespace: str, service: str) -> set[str]:
    """The ready addresses the endpoint-slice controller put behind a Service."""
    out = set()
    for slice_ in kube.list("EndpointSlice", namespace, f"kubernetes.io/service-name={service}"):
        for ep in slice_.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready"):
                out.update(ep.get("addresses") or [])
    return out


def pool_status(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    return (kube.custom("WarmPool", namespace, name) or {}).get("status") or {}


def warm_pods(kube: Kube, namespace: str, pool_name: str) -> list[dict[str, Any]]:
    return [w for w in kube.customs("WarmPod", namespace) if (w["spec"].get("poolRef") or {}).get("name") == pool_name]
