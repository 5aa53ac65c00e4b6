"""The sandbox's own ServiceAccount: no token is mounted, and it holds no role bindings."""
from __future__ import annotations

from typing import Any


def build_service_account(name: str, namespace: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(sorted(labels.items()))},
        "automountServiceAccountToken": False,
    }
