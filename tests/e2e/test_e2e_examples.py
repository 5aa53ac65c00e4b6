"""The README's walkthrough, command by command, and every file in examples/ applied as a user
would, each reaching what the README promises."""
from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml

from tests.e2e.controlplane import ROOT
from tests.e2e.kube import Kube, condition, delete_namespaces

EXAMPLES = ROOT / "examples"
DEMO = "demo"  # the namespace the examples name


def readme_walkthrough() -> list[str]:
    """The kubectl commands of the README's "Using it" block, comments stripped."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Using it.*?```sh\n(.*?)```", text, re.S)
    assert block, "README.md has no 'Using it' shell block"
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.strip().startswith("kubectl")]


@pytest.fixture(scope="module")
def demo(kube: Kube) -> Iterator[str]:
    yield DEMO
    delete_namespaces(kube, DEMO, "team-a")
    kube.kubectl("delete", "runtimeenvironment", "python-3.11", "--ignore-not-found", "--wait=false", check=False)


def _sandbox_running(kube: Kube, name: str) -> Callable[[], Any]:
    return lambda: kube.wait_sandbox(DEMO, name, "Running", ready=True, timeout=60)


def test_readme_walkthrough(kube: Kube, demo: str, clean_cluster: None) -> None:
    commands = readme_walkthrough()
    assert [c.split()[1] for c in commands] == ["apply", "create", "apply", "get", "describe", "delete"], commands
    for command in commands:
        args = shlex.split(command)[1:]
        if "-w" in args:  # `kubectl get -w` watches until Running: the README's promise
            kube.wait_sandbox(DEMO, "minimal", "Running", ready=True, timeout=60)
            shown = kube.kubectl(*[a for a in args if a != "-w"])
            assert re.search(r"^minimal\s.*\sRunning\s", shown, re.M), shown
            continue
        out = kube.kubectl(*args)
        if args[0] == "apply" and "runtimeenvironment" in command:
            kube.wait("the runtime validated",
                      lambda: ((kube.custom("RuntimeEnvironment", None, "python-3.11") or {}).get("status") or {}).get("available"), 30)
        if args[0] == "describe":
            assert re.search(r"Type:\s+Ready", out) and "PodReady" in out, out
    kube.wait_gone("Sandbox", DEMO, "minimal")


# What each example promises once applied (README, docs), checked on what the API server holds.
def _hardened(kube: Kube, path: Path) -> None:
    ns = yaml.safe_load(path.read_text())["metadata"]["name"]
    # The wait docs/tenant-namespaces.md tells users to run; once it returns, everything exists.
    kube.kubectl("wait", "--for=jsonpath={.metadata.annotations.llmsafespace\\.dev/hardening-status}=Applied",
                 f"ns/{ns}", "--timeout=60s")
    quota = kube.core("ResourceQuota", ns, "llmsafespace-quota")
    assert quota is not None and quota["spec"]["hard"]["pods"] == "30" and quota["spec"]["hard"]["limits.cpu"] == "16"
    assert kube.core("LimitRange", ns, "llmsafespace-limits") is not None
    assert kube.core("NetworkPolicy", ns, "llmsafespace-default-deny") is not None
    labels = kube.core("Namespace", None, ns)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def _runtime(kube: Kube, path: Path) -> None:
    kube.wait("runtime available", lambda: ((kube.custom("RuntimeEnvironment", None, "python-3.11") or {}).get("status") or {}).get("available"), 30)


def _profile(kube: Kube, path: Path) -> None:
    prof = kube.wait("profile validated", lambda: ((kube.custom("SandboxProfile", DEMO, "data-science") or {}).get("status") or {}).get("validated") and kube.custom("SandboxProfile", DEMO, "data-science"), 30)
    assert condition(prof, "Validated")["status"] == "True"


def _pool(kube: Kube, path: Path) -> None:
    pool = kube.wait("pool filled to minSize", lambda: ((kube.custom("WarmPool", DEMO, "python") or {}).get("status") or {}).get("availablePods") == 2
                     and kube.custom("WarmPool", DEMO, "python"), 60, show=lambda: (kube.custom("WarmPool", DEMO, "python") or {}).get("status"))
    assert pool["status"]["assignedPods"] == 0


def _sandbox(name: str, **expected: Any) -> Callable[[Kube, Path], None]:
    def check(kube: Kube, path: Path) -> None:
        sb = kube.wait_sandbox(DEMO, name, "Running", ready=True, timeout=60)
        for key, value in expected.items():
            assert sb["status"].get(key) == value, (key, sb["status"])
    return check


def _workspace(kube: Kube, path: Path) -> None:
    """The agent workspace: its env reaches the pod (the key from the Secret its comment creates),
    its volume is bound, and its idle deadline is shown."""
    sb = kube.wait_sandbox(DEMO, "agent-workspace", "Running", ready=True, timeout=60)
    pod = kube.core("Pod", DEMO, "sandbox-agent-workspace") or {}
    env = {e["name"]: e for e in pod["spec"]["containers"][0].get("env", [])}
    assert env["AGENT_MODE"]["value"] == "planner"
    assert env["AGENT_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "agent-credentials", "key": "api-key"}
    assert pod["status"]["phase"] == "Running"
    suspended = condition(sb, "Suspended")
    assert (suspended["status"], suspended["reason"]) == ("False", "Active") and "suspended for inactivity at" in suspended["message"]
    claim = kube.core("PersistentVolumeClaim", DEMO, "sandbox-agent-workspace-data") or {}
    assert claim.get("status", {}).get("phase") == "Bound", claim.get("status")


def setup_commands(path: Path) -> list[list[str]]:
    """The commands an example's comment tells users to run first ('#   kubectl ...' lines)."""
    return [shlex.split(line.lstrip("# "))[1:] for line in path.read_text().splitlines() if line.startswith("#   kubectl ")]


# In the order a user applies them: runtime and namespaces first, the pool before the warm sandbox.
EXPECTED: dict[str, Callable[[Kube, Path], None]] = {
    "runtimeenvironment-python.yaml": _runtime,
    "namespace-tenant.yaml": _hardened,
    "sandbox-minimal.yaml": _sandbox("minimal", securityLevel="standard"),
    "sandboxprofile-data-science.yaml": _profile,
    "sandbox-with-profile.yaml": _sandbox("with-profile", profile=f"{DEMO}/data-science"),
    "sandbox-with-egress.yaml": _sandbox("with-egress"),
    "sandbox-high-security.yaml": _sandbox("high-security", securityLevel="high"),
    "sandbox-persistent.yaml": _sandbox("persistent"),
    "sandbox-agent-workspace.yaml": _workspace,
    "warmpool-python.yaml": _pool,
    "sandbox-warm.yaml": _sandbox("warm", warmPodUsed=True, warmPool="python"),
}


def test_every_example_has_an_expectation() -> None:
    assert sorted(EXPECTED) == sorted(p.name for p in EXAMPLES.glob("*.yaml"))


def test_every_example_reaches_what_the_readme_promises(kube: Kube, demo: str, clean_cluster: None) -> None:
    kube.kubectl("create", "namespace", DEMO, check=False)  # after the walkthrough it exists already
    for name, check in EXPECTED.items():
        path = EXAMPLES / name
        for command in setup_commands(path):
            kube.kubectl(*command)
        kube.apply_file(str(path))
        check(kube, path)
