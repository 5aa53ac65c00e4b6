"""The pinned external tools from tools/install_tools.py are installed and really work."""
from __future__ import annotations

import json
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
