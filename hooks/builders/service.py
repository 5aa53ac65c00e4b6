"""The sandbox's Service: ClusterIP, selecting exactly the pod carrying the sandbox's UID label."""
from __future__ import annotations

from typing import Any

from .. import constants as C


def build_service(name: str, namespace: str, labels: dict[str, str], selector: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(sorted(labels.items()))},
        "spec": {
            "type": "ClusterIP",
            "selector": dict(sorted(selector.items())),
            "ports": [{
                "name": C.SANDBOX_PORT_NAME,
                "port": C.SANDBOX_PORT,
                "protocol": "TCP",
                "targetPort": C.SANDBOX_PORT,
            }],
        },
    }
