"""Every example sandbox of examples/, applied as a user would, runs code on the real node: its
pod is on the node (not kwok), its container is the reference runtime image the example
RuntimeEnvironment names (ghcr.io/llmsafespace/runtime-python:3.11, built by scripts/build-images)
and answers `python3 -c` with the right result, as the uid it asks for (1000 by default) on a
read-only root. The warm example
runs on a pod the pool started before it. Skipped without the real node (tests/e2e/realnode.py)."""
from __future__ import annotations

from typing import Any, Iterator

import pytest

from hooks import constants as C
from tests.e2e.kube import Kube, delete_namespaces
from tests.e2e.test_e2e_examples import DEMO, EXAMPLES, EXPECTED, setup_commands

SANDBOXES = {name: path for path in sorted(EXAMPLES.glob("sandbox-*.yaml"))
             for name in [path.stem.removeprefix("sandbox-")]}
CODE = "import os, sys; print(sum(range(10)), os.getuid(), sys.version_info[:2])"


@pytest.fixture()
def demo_on_real_node(kube: Kube, on_real_node: Any) -> Iterator[Any]:
    # test_e2e_examples.py deletes the same namespaces in the background as it ends.
    for ns in (DEMO, "team-a"):
        kube.wait_gone("Namespace", None, ns, timeout=180)
    yield on_real_node
    delete_namespaces(kube, DEMO, "team-a")
    kube.kubectl("delete", "runtimeenvironment", "python-3.11", "--ignore-not-found", "--wait=false", check=False)


def _runs_code(kube: Kube, node: Any, name: str) -> None:
    sandbox = kube.custom("Sandbox", DEMO, name) or {}
    pod_name = sandbox["status"]["podName"]
    pod = kube.core("Pod", DEMO, pod_name) or {}
    assert pod["spec"].get("nodeName") == node.name, (name, pod["spec"].get("nodeName"))
    container = next(c for c in pod["status"]["containerStatuses"] if c["name"] == C.SANDBOX_CONTAINER)
    assert container["image"].endswith("llmsafespace/runtime-python:3.11") and container["ready"], (name, container)
    uid = ((sandbox["spec"].get("securityContext") or {}).get("runAsUser")) or C.DEFAULT_RUN_AS_USER  # the example's, or ours
    out = kube.kubectl("exec", "-n", DEMO, pod_name, "-c", C.SANDBOX_CONTAINER, "--", "python3", "-c", CODE, timeout=60)
    assert out.strip() == f"45 {uid} (3, 11)", (name, out)
    refused = kube.kubectl("exec", "-n", DEMO, pod_name, "-c", C.SANDBOX_CONTAINER, "--", "sh", "-c",
                           "touch /usr/x 2>&1; echo rc=$?", timeout=60)
    assert "Read-only file system" in refused and "rc=1" in refused, (name, refused)


def test_every_example_sandbox_runs_code_on_the_real_node(kube: Kube, demo_on_real_node: Any, clean_cluster: None) -> None:
    """In the order a user applies them, each reaching what the README promises; the sandboxes one
    at a time (each deleted once it ran code): the node has this machine's 2 CPUs, and the
    examples' Guaranteed pods together ask for more."""
    node = demo_on_real_node
    kube.kubectl("create", "namespace", DEMO, check=False)
    sandboxes = [n for n in EXPECTED if n.startswith("sandbox-")]
    assert sorted(sandboxes) == sorted(p.name for p in SANDBOXES.values())
    ordered = [n for n in EXPECTED if n not in sandboxes] + [n for n in sandboxes if n != "sandbox-warm.yaml"] + ["sandbox-warm.yaml"]
    for file in ordered:
        path = EXAMPLES / file
        for command in setup_commands(path):
            kube.kubectl(*command)
        kube.apply_file(str(path))
        EXPECTED[file](kube, path)
        if file in sandboxes:
            name = path.stem.removeprefix("sandbox-")
            _runs_code(kube, node, name)
            if name != "warm":
                kube.kubectl("delete", "sandbox", name, "-n", DEMO, "--wait=true", "--timeout=90s", timeout=120)
    warm = kube.custom("Sandbox", DEMO, "warm") or {}
    assert warm["status"]["warmPodUsed"] is True
    pod = kube.core("Pod", DEMO, warm["status"]["podName"]) or {}
    # A pod of the pool, started before the sandbox existed (RFC 3339 UTC stamps compare as text).
    assert pod["metadata"]["name"].startswith("warm-") and pod["metadata"]["creationTimestamp"] <= warm["metadata"]["creationTimestamp"]
