"""Egress backend "proxy" on the real control plane (docs/egress-proxy.md).

The module switches the running stack to the proxy backend (a hook server started with
LLMSS_EGRESS_BACKEND=proxy, the chart upgraded with egress.backend=proxy) and back at the end.
In a tenant namespace the decorator then attaches the proxy, which the API server accepts
(ConfigMap, Deployment whose pod passes Pod Security "restricted" admission, Service,
NetworkPolicies); Metacontroller relates the namespace's Sandboxes to the Namespace through the
customize hook, so a new sandbox's domain rules reach squid.conf and leave it with the sandbox."""
from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest

from hooks import constants as C
from tests.e2e.controlplane import install_chart
from tests.e2e.kube import Kube
from tests.e2e.objects import SMALL, sandbox


def _switch(kube: Kube, backend: str) -> None:
    cp = kube.cp
    log = cp.processes["metacontroller"].log
    starts = log.read_text(errors="replace").count('"msg":"Starting DecoratorController"')
    cp.settings.hook_env = {**cp.settings.hook_env, "LLMSS_EGRESS_BACKEND": backend}
    old = cp.start_second_hook_server()
    try:
        install_chart(cp, "--set", f"egress.backend={backend}", upgrade=True)
        kube.wait("Metacontroller restarted the tenant-namespace decorator",
                  lambda: log.read_text(errors="replace").count('"msg":"Starting DecoratorController"') > starts, 60)
    finally:
        old.stop()


_BACKEND: dict[str, str] = {}


def _use(kube: Kube, backend: str) -> None:
    if _BACKEND.get("now") != backend:
        _switch(kube, backend)
        _BACKEND["now"] = backend


@pytest.fixture(scope="module")
def proxy_backend(kube: Kube) -> Iterator[None]:
    _use(kube, C.EGRESS_BACKEND_PROXY)
    try:
        yield
    finally:
        _use(kube, C.EGRESS_BACKEND_NETWORKPOLICY)


def _squid_conf(kube: Kube, ns: str) -> str:
    cm = kube.core("ConfigMap", ns, C.EGRESS_PROXY_NAME) or {}
    return str((cm.get("data") or {}).get(C.EGRESS_PROXY_CONFIG_FILE, ""))


def _proxy_pod(kube: Kube, ns: str) -> Optional[dict[str, Any]]:
    pods = kube.list("Pod", ns, labels=f"{C.LABEL_COMPONENT}={C.COMPONENT_EGRESS_PROXY}")
    return pods[0] if pods else None


def test_proxy_follows_the_namespaces_sandboxes(proxy_backend: None, kube: Kube, namespace: str, rte: str) -> None:
    # The namespace fixture waited for hardening-status Applied: every attachment, the proxy's
    # included, was accepted by the API server.
    for kind in ("ConfigMap", "Deployment", "Service"):
        assert kube.core(kind, namespace, C.EGRESS_PROXY_NAME) is not None, kind
    for suffix in ("ingress", "egress"):
        assert kube.core("NetworkPolicy", namespace, f"{C.EGRESS_PROXY_NAME}-{suffix}") is not None, suffix
    assert "http_access deny all" in _squid_conf(kube, namespace) and "pypi.org" not in _squid_conf(kube, namespace)
    # The Deployment's pod passed Pod Security "restricted" admission (the namespace enforces it).
    kube.wait("the proxy pod exists", lambda: _proxy_pod(kube, namespace), 60)

    kube.apply(sandbox("fetcher", namespace, rte, resources=SMALL, networkAccess={"egress": [
        {"domain": "pypi.org", "ports": [{"port": 443}]}, {"domain": "*.githubusercontent.com"}]}))
    kube.wait_sandbox(namespace, "fetcher", "Running", ready=True, timeout=60)
    kube.wait("squid.conf lists the sandbox's names", lambda: "pypi.org" in _squid_conf(kube, namespace), 60)
    assert r"^([^.]+\.)+githubusercontent\.com$" in _squid_conf(kube, namespace)
    def proxy_ports() -> list[int]:
        policy = kube.core("NetworkPolicy", namespace, f"{C.EGRESS_PROXY_NAME}-egress") or {"spec": {"egress": [{}]}}
        return [p["port"] for p in policy["spec"]["egress"][-1].get("ports") or []]
    kube.wait("the proxy may reach ports 80 and 443", lambda: proxy_ports() == [80, 443], 30, show=proxy_ports)

    policy = kube.core("NetworkPolicy", namespace, "sandbox-fetcher-egress") or {}
    assert policy["spec"]["egress"] == [{
        "to": [{"podSelector": {"matchLabels": {C.LABEL_APP: C.APP_NAME, C.LABEL_COMPONENT: C.COMPONENT_EGRESS_PROXY}}}],
        "ports": [{"port": C.EGRESS_PROXY_PORT, "protocol": "TCP"}],
    }]
    pod = kube.core("Pod", namespace, "sandbox-fetcher") or {}
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0].get("env", [])}
    assert env["HTTPS_PROXY"] == env["https_proxy"] == f"http://{C.EGRESS_PROXY_NAME}.{namespace}.svc:{C.EGRESS_PROXY_PORT}"

    kube.kubectl("delete", "sandbox", "fetcher", "-n", namespace, "--wait=false")
    kube.wait("squid.conf forgets the deleted sandbox's names", lambda: "pypi.org" not in _squid_conf(kube, namespace), 90)


def _documented_cleanup() -> str:
    """The shell commands docs/egress-proxy.md gives for switching the backend back."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "egress-proxy.md").read_text()
    found = re.search(r"once `helm upgrade` is done:\n\n\s*```\n(.*?)```", text, re.S)
    assert found, "docs/egress-proxy.md lost its clean-up commands"
    return found.group(1)


def test_switching_back_leaves_what_the_docs_say_and_their_commands_remove_it(proxy_backend: None, kube: Kube, namespace: str) -> None:
    """Runs last in this module: back to the default backend, the proxy's NetworkPolicies go (the
    decorator still manages that kind) and its ConfigMap, Deployment and Service stay until the
    documented commands, run as written, delete them."""
    for kind in ("ConfigMap", "Deployment", "Service"):
        assert kube.core(kind, namespace, C.EGRESS_PROXY_NAME) is not None, kind
    _use(kube, C.EGRESS_BACKEND_NETWORKPOLICY)
    kube.wait("the proxy's NetworkPolicies removed",
              lambda: all(kube.core("NetworkPolicy", namespace, f"{C.EGRESS_PROXY_NAME}-{s}") is None for s in ("ingress", "egress")), 60)
    for kind in ("ConfigMap", "Deployment", "Service"):
        assert kube.core(kind, namespace, C.EGRESS_PROXY_NAME) is not None, f"{kind}: the docs say it stays"
    cp = kube.cp
    env = {**cp.env(), "PATH": f"{Path(cp.kubectl_binary()).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", _documented_cleanup()], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for kind in ("ConfigMap", "Deployment", "Service"):
        assert kube.core(kind, namespace, C.EGRESS_PROXY_NAME) is None, kind
