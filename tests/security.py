"""Assertions every pod the hooks emit must satisfy (the product's security bar)."""
from __future__ import annotations

from typing import Any


def assert_pod_hardened(pod: dict[str, Any]) -> None:
    spec = pod["spec"]
    name = pod["metadata"]["name"]
    assert spec["automountServiceAccountToken"] is False, name
    assert spec["enableServiceLinks"] is False, name
    assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), name
    # A user namespace of its own or the node's (LLMSS_USER_NAMESPACES), never anything else.
    assert spec.get("hostUsers", None) in (None, False), name
    psc = spec["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] > 0 and psc["runAsGroup"] > 0, name
    assert psc["seccompProfile"]["type"] in ("RuntimeDefault", "Localhost"), name
    for container in spec["containers"] + spec.get("initContainers", []):
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, (name, container["name"])
        assert sc["readOnlyRootFilesystem"] is True, (name, container["name"])
        assert sc["privileged"] is False, (name, container["name"])
        assert sc["capabilities"] == {"drop": ["ALL"]}, (name, container["name"])
        assert sc["runAsNonRoot"] is True, (name, container["name"])
        assert sc["seccompProfile"]["type"] in ("RuntimeDefault", "Localhost"), (name, container["name"])
        if sc["seccompProfile"]["type"] == "Localhost":
            assert sc["seccompProfile"]["localhostProfile"], (name, container["name"])
        limits = container["resources"]["limits"]
        assert {"cpu", "memory", "ephemeral-storage"} <= set(limits), (name, container["name"])
    for volume in spec.get("volumes", []):
        assert set(volume) - {"name"} <= {"emptyDir", "persistentVolumeClaim"}, (name, volume)
        if "emptyDir" in volume:
            assert volume["emptyDir"].get("sizeLimit"), (name, volume)
