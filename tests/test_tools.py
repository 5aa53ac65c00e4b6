"""The pinned external tools from tools/install_tools.py are installed and really work."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

try:
    from tooling import tool
except ImportError:  # if tests/ ever becomes a package
    from tests.tooling import tool


def run(*cmd: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_helm_is_v4() -> None:
    proc = run(tool("helm"), "version", "--short")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("v4."), proc.stdout


def test_kubectl_client_runs() -> None:
    proc = run(tool("kubectl"), "version", "--client")
    assert proc.returncode == 0, proc.stderr
    assert "Client Version: v1.33." in proc.stdout, proc.stdout


def test_checkov_runs() -> None:
    proc = run(tool("checkov"), "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith("3.3."), proc.stdout


def test_tool_missing_is_an_error_not_a_skip(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys.modules[tool.__module__], "TOOLS_BIN", tmp_path)  # an empty bin dir
    with pytest.raises(RuntimeError, match="run tools/install_tools.py"):
        tool("helm")


# --- nca: a real connectivity analysis of a two-pod namespace -----------------------------------
NAMESPACES = """\
apiVersion: v1
kind: NamespaceList
items:
- apiVersion: v1
  kind: Namespace
  metadata: {name: demo, labels: {kubernetes.io/metadata.name: demo}}
"""
PODS = """\
apiVersion: v1
kind: PodList
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: client, namespace: demo, labels: {app: client}}
  spec: {containers: [{name: c, image: busybox}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: server, namespace: demo, labels: {app: server}}
  spec: {containers: [{name: s, image: busybox, ports: [{containerPort: 8080}]}]}
"""
DEFAULT_DENY = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny, namespace: demo}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
"""
ALLOW_CLIENT_TO_SERVER = """\
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-ingress, namespace: demo}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{protocol: TCP, port: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client-egress, namespace: demo}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {app: server}}}]
    ports: [{protocol: TCP, port: 8080}]
"""


def connectivity(tmp_path: Path, policies: str) -> list[dict]:
    (tmp_path / "ns.yaml").write_text(NAMESPACES)
    (tmp_path / "pods.yaml").write_text(PODS)
    (tmp_path / "np.yaml").write_text(policies)
    proc = run(tool("nca"), "--connectivity", "np.yaml", "--pod_list", "pods.yaml", "--ns_list", "ns.yaml",
               "--output_format", "json", "--file_out", "out.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "cluster has 2 unique endpoints, 1 namespaces" in proc.stdout, proc.stdout
    [result] = json.loads((tmp_path / "out.json").read_text())
    assert result["query"] == "ConnectivityMapQuery"
    [explanation] = result["explanation"]
    return explanation["rules"]


def test_nca_default_deny_allows_nothing(tmp_path: Path) -> None:
    assert connectivity(tmp_path, DEFAULT_DENY) == []


def test_nca_default_deny_plus_allow_opens_exactly_client_to_server_8080(tmp_path: Path) -> None:
    rules = connectivity(tmp_path, DEFAULT_DENY + ALLOW_CLIENT_TO_SERVER)
    # nca leaves out a pod's connections to itself, so with two pods it writes the one
    # reachable peer (server) as "*"; nothing goes the other way (no rule from server).
    assert rules == [{
        "src_ns": ["demo"], "src_pods": ["client"],
        "dst_ns": ["demo"], "dst_pods": ["*"],
        "connection": [{"protocols": "TCP", "dst_ports": [8080]}],
    }]


# --- runtime-python: Debian's python3 with cryptography for the runtime tests (uid 1000) ---------
def _installer(monkeypatch: pytest.MonkeyPatch, *, euid: int, ok: list[bool], fail_first: bool = False) -> list[list[str]]:
    """tools/install_tools.py's runtime-python step with the machine replaced: `ok` is what each
    probe of /usr/bin/python3 answers in turn; returns the commands it ran."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("install_tools_under_test", Path(__file__).resolve().parent.parent / "tools" / "install_tools.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ran: list[list[str]] = []

    def fake_run(cmd: list[str], **_: object) -> str:
        ran.append(cmd)
        if fail_first and len(ran) == 1:
            raise mod.InstallError("E: Unable to locate package python3-cryptography")
        return ""
    monkeypatch.setattr(mod.os, "geteuid", lambda: euid)
    monkeypatch.setattr(mod.os, "access", lambda *a: True)
    monkeypatch.setattr(mod.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(mod, "_runtime_python_ok", lambda: ok.pop(0))
    monkeypatch.setattr(mod, "run", fake_run)
    monkeypatch.setenv("DEBIAN_FRONTEND", "noninteractive")
    mod.INSTALLERS["runtime-python"](False)
    return ran


def test_runtime_python_is_apt_installed_when_root_and_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    ran = _installer(monkeypatch, euid=0, ok=[False, True])
    assert len(ran) == 1 and ran[0][:2] == ["apt-get", "install"] and "python3-cryptography" in ran[0] and "-y" in ran[0]


def test_runtime_python_updates_the_package_lists_of_a_fresh_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    ran = _installer(monkeypatch, euid=0, ok=[False, True], fail_first=True)
    assert [c[:2] for c in ran] == [["apt-get", "install"], ["apt-get", "update"], ["apt-get", "install"]]


def test_runtime_python_installs_nothing_when_present_or_not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _installer(monkeypatch, euid=0, ok=[True]) == []
    assert _installer(monkeypatch, euid=1000, ok=[]) == []


def test_runtime_python_that_stays_broken_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(Exception, match="still cannot import cryptography"):
        _installer(monkeypatch, euid=0, ok=[False, False])


def test_the_runtime_tests_interpreter_is_there() -> None:
    """What the installer promises: the runtime tests find a Python (never a silent skip here)."""
    from tests.runtime_util import _interpreter
    if os.geteuid() == 0 and not os.access("/usr/bin/python3", os.X_OK):
        pytest.skip("no /usr/bin/python3 on this machine: the runtime tests skip, saying so")
    assert _interpreter() is not None, "tools/install_tools.py --only runtime-python did not give uid 1000 a Python with cryptography"
