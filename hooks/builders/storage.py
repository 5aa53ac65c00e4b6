"""The sandbox's PersistentVolumeClaim (only when spec.storage.persistent)."""
from __future__ import annotations

from typing import Any, Optional


def build_pvc(name: str, namespace: str, labels: dict[str, str], size: str, storage_class: Optional[str]) -> dict[str, Any]:
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}
    if storage_class:
        spec["storageClassName"] = storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(sorted(labels.items()))},
        "spec": spec,
    }
