"""Per-sandbox environment and user namespaces on the real control plane (issue 15, items 3-4):
env and Secret references reach the pod on the cold path, the warm path follows the documented
rule (same environment as the pool, else cold with reason EnvironmentMismatch), the API server
refuses reserved names (CEL), accepts hostUsers: false pods under Pod Security "restricted", and no
Secret reference reaches the sandbox's status or the hook server's log."""
from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from hooks import constants as C
from tests.e2e import fakenode
from tests.e2e.kube import Kube, condition
from tests.e2e.objects import pool, pool_status, sandbox, warm_sandbox

SECRET = "agent-keys-e2e"
KEY = "openai-key"
ENV = [{"name": "MODE", "value": "analysis"}, {"name": "OPENAI_API_KEY", "valueFrom": {"secretKeyRef": {"name": SECRET, "key": KEY}}}]
ENV_FROM = [{"secretRef": {"name": SECRET}, "prefix": "AGENT_"}]


def _secret(namespace: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET, "namespace": namespace}, "type": "Opaque",
            "data": {KEY: base64.b64encode(b"sk-not-a-real-key").decode()}}


def _user_env(container: dict[str, Any]) -> list[dict[str, Any]]:
    """The container's env less the runtime's own variables (builders/pod.runtime_env)."""
    return [e for e in container.get("env", []) if e["name"] not in C.RUNTIME_ENV_NAMES]


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in pod["spec"]["containers"] if c["name"] == C.SANDBOX_CONTAINER)


def test_env_and_secret_references_reach_a_cold_pod_in_its_own_user_namespace(kube: Kube, namespace: str, rte: str) -> None:
    kube.apply(_secret(namespace), sandbox("agent", namespace, rte, env=ENV, envFrom=ENV_FROM),
               sandbox("gvisor", namespace, rte, securityLevel="high"))
    sb = kube.wait_sandbox(namespace, "agent", "Running", ready=True, timeout=30)
    pod = kube.core("Pod", namespace, sb["status"]["podName"])
    assert pod is not None
    # As written, references only: the kubelet reads the Secret when it starts the container.
    assert _user_env(_container(pod)) == ENV and _container(pod)["envFrom"] == ENV_FROM
    # The API server (Kubernetes >= 1.33, Pod Security "restricted" on the namespace) kept
    # hostUsers: false; gVisor pods go without (runsc refuses it).
    assert pod["spec"]["hostUsers"] is False
    high = kube.wait_sandbox(namespace, "gvisor", "Running", ready=True, timeout=30)
    high_pod = kube.core("Pod", namespace, high["status"]["podName"])
    assert high_pod is not None and high_pod["spec"]["runtimeClassName"] == fakenode.RUNTIME_CLASS and "hostUsers" not in high_pod["spec"]
    # No reference in status, nor in the hook server's log.
    for text in (json.dumps(sb["status"]), (kube.cp.logs / "hooks.log").read_text(errors="replace")):
        assert SECRET not in text and KEY not in text

    # An env edit: reported, the running pod kept (its environment cannot change).
    kube.apply(sandbox("agent", namespace, rte, env=[*ENV, {"name": "EXTRA", "value": "1"}], envFrom=ENV_FROM))
    edited = kube.wait("SpecApplied False", lambda: (s := kube.custom("Sandbox", namespace, "agent")) and
                       (condition(s, "SpecApplied") or {}).get("reason") == "PodOutdated" and s, 30)
    assert "env/envFrom" in condition(edited, "SpecApplied")["message"] and SECRET not in json.dumps(edited["status"])
    assert kube.core("Pod", namespace, "sandbox-agent")["metadata"]["uid"] == pod["metadata"]["uid"]


@pytest.mark.parametrize("name,message", [
    ("HTTPS_PROXY", "are reserved: the platform sets them"),
    ("http_proxy", "are reserved: the platform sets them"),
    ("LLMSS_ANYTHING", "are reserved: the platform sets them"),
])
def test_the_api_server_refuses_reserved_names(kube: Kube, namespace: str, rte: str, name: str, message: str) -> None:
    with pytest.raises(RuntimeError) as err:
        kube.apply(sandbox("proxied", namespace, rte, env=[{"name": name, "value": "http://elsewhere:3128"}]))
    assert message in str(err.value)
    assert kube.custom("Sandbox", namespace, "proxied") is None


def test_a_pool_serves_only_sandboxes_declaring_its_environment(kube: Kube, namespace: str, rte: str) -> None:
    kube.apply(_secret(namespace), pool("keyed", namespace, rte, minSize=2, env=ENV))
    kube.wait("pool keyed filled", lambda: pool_status(kube, namespace, "keyed").get("availablePods") == 2, 60,
              show=lambda: pool_status(kube, namespace, "keyed"))
    same = {**warm_sandbox("same", namespace, rte, "keyed")}
    same["spec"]["env"] = ENV
    other = warm_sandbox("other", namespace, rte, "keyed")  # no env: the pool's Secret must not reach it
    kube.apply(same, other)

    served = kube.wait_sandbox(namespace, "same", "Running", ready=True, timeout=30)
    assert served["status"]["warmPodUsed"] is True and condition(served, "WarmPod")["reason"] == "WarmPodBound"
    warm_pod = kube.core("Pod", namespace, served["status"]["podName"])
    assert warm_pod is not None and _user_env(_container(warm_pod)) == ENV and warm_pod["spec"]["hostUsers"] is False

    cold = kube.wait_sandbox(namespace, "other", "Running", ready=True, timeout=30)
    warm_cond = condition(cold, "WarmPod")
    assert cold["status"]["warmPodUsed"] is False and warm_cond["reason"] == "EnvironmentMismatch", warm_cond
    assert SECRET not in warm_cond["message"] and KEY not in warm_cond["message"]
    cold_pod = kube.core("Pod", namespace, "sandbox-other")
    assert cold_pod is not None and _user_env(_container(cold_pod)) == [] and cold_pod["spec"]["hostUsers"] is False

    # The offer carries a digest of the environment, never the environment.
    offer = kube.custom("WarmPoolOffer", namespace, "keyed")
    assert offer is not None and offer["spec"]["envDigest"].startswith("sha256:") and SECRET not in json.dumps(offer)
    # Warm pods with hostUsers: false are not rewritten (an InPlace child asking for a field the API
    # server dropped would be PUT on every sync).
    before = kube.core("Pod", namespace, served["status"]["podName"])["metadata"]["resourceVersion"]
    time.sleep(3)
    assert kube.core("Pod", namespace, served["status"]["podName"])["metadata"]["resourceVersion"] == before
