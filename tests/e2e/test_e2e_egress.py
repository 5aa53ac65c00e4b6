"""Egress backends on the real API server (issue 14), with the upstream CRDs of Cilium and
network-policy-api installed (read from LLMSS_K8S_BIN, never part of the repository; docs/e2e.md):

- what the cilium and clusternetworkpolicy backends emit for a sandbox with domain rules is created
  by the API server as emitted (nothing pruned), and the CRDs' validation is really on (a broken
  object is refused);
- with the chart switched to egress.backend=clusternetworkpolicy (a hook server with
  LLMSS_EGRESS_BACKEND, `helm upgrade`), a sandbox's ClusterNetworkPolicy is written by the
  tenant-namespace decorator, owned by the Namespace, and deleted with the sandbox; then the
  default backend is restored for the rest of the suite."""
from __future__ import annotations

import copy
import json
import subprocess
from typing import Any, Iterator

import pytest

from hooks import constants as C
from hooks import namespace_sync, sandbox_sync
from hooks.builders import cluster_network_policy as cnp
from hooks.config import Config
from hooks.meta import fmt_time
from tests.e2e.controlplane import bin_dir, egress_crds_skip_reason, install_chart
from tests.e2e.kube import Kube
from tests.e2e.objects import SMALL, sandbox
from tests.factory import NOW, group

EGRESS = [{"domain": "pypi.org", "ports": [{"port": 443, "protocol": "TCP"}]},
          {"domain": "*.pythonhosted.org", "ports": [{"port": 443, "protocol": "TCP"}]},
          {"domain": "github.com"},
          {"cidr": "203.0.113.0/24", "ports": [{"port": 5432, "protocol": "TCP"}]}]
CRD_NAMES = ("ciliumnetworkpolicies.cilium.io", "clusternetworkpolicies.policy.networking.k8s.io")
CNP_PATH = "/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies"


@pytest.fixture(scope="module")
def egress_crds(kube: Kube) -> Iterator[None]:
    reason = egress_crds_skip_reason()
    if reason:
        pytest.skip(reason)
    for name in ("cilium-ciliumnetworkpolicies.yaml", "network-policy-api-clusternetworkpolicies.yaml"):
        kube.kubectl("apply", "--server-side", "-f", str(bin_dir() / name))
    # Polled, not `kubectl wait`: right after the create a CRD's status.conditions is null, and
    # kubectl wait then fails (".status.conditions accessor error") instead of waiting.
    kube.wait("upstream CRDs Established", lambda: all(_established(kube, n) for n in CRD_NAMES), timeout=60)
    yield


def _established(kube: Kube, name: str) -> bool:
    crd = kube.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}") or {}
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in (crd.get("status") or {}).get("conditions") or [])


def _parent(namespace: str, rte: str) -> dict[str, Any]:
    """A sandbox as Metacontroller would send it (uid, generation), for computing what is emitted."""
    obj = sandbox("fetcher", namespace, rte, networkAccess={"egress": EGRESS}, resources=SMALL)
    obj["metadata"].update(uid="0f0e0d0c-0000-4000-8000-000000000001", generation=1, creationTimestamp=fmt_time(NOW))
    return obj


def _emitted(kube: Kube, namespace: str, rte: str, backend: str) -> dict[str, Any]:
    """What the backend emits for the sandbox: its CiliumNetworkPolicy, or (through the sandbox's
    published status and the decorator) its ClusterNetworkPolicy."""
    config = Config(egress_backend=backend, node_local_dns_addresses=("169.254.20.10",))
    parent = _parent(namespace, rte)
    runtime = kube.custom("RuntimeEnvironment", None, rte)
    request = {"parent": parent, "children": {}, "related": group([runtime]), "finalizing": False}
    answer = sandbox_sync.sync(request, NOW, config)
    if backend == C.EGRESS_BACKEND_CILIUM:
        (policy,) = [c for c in answer["children"] if c["kind"] == "CiliumNetworkPolicy"]
        return policy
    policies, errors = namespace_sync.sandbox_egress_policies(
        namespace, group([{**parent, "status": answer["status"]}]), config)
    assert not errors and len(policies) == 1, (errors, policies)
    return policies[0]


def _create(kube: Kube, obj: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return kube.cp.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(obj), check=False)


@pytest.mark.parametrize("backend", [C.EGRESS_BACKEND_CILIUM, C.EGRESS_BACKEND_CLUSTERNETWORKPOLICY])
def test_emitted_policies_are_accepted_by_the_upstream_crds(kube: Kube, namespace: str, rte: str, egress_crds: None,
                                                            backend: str) -> None:
    policy = _emitted(kube, namespace, rte, backend)
    created = _create(kube, policy)
    try:
        assert created.returncode == 0, created.stderr
        stored = json.loads(created.stdout)
        assert stored["spec"] == policy["spec"], "the API server pruned or changed the emitted spec"
        # The CRD's validation is on: the same object with a name the upstream schema refuses.
        broken = copy.deepcopy(policy)
        broken["metadata"]["name"] += "-broken"
        if backend == C.EGRESS_BACKEND_CILIUM:
            broken["spec"]["egress"][-1]["toFQDNs"] = [{"matchName": "not a name!"}]
        else:
            broken["spec"]["egress"][2]["to"] = [{"domainNames": ["*.com"]}]
        refused = _create(kube, broken)
        assert refused.returncode != 0 and "Invalid value" in refused.stderr, refused.stdout + refused.stderr
    finally:
        if backend == C.EGRESS_BACKEND_CLUSTERNETWORKPOLICY:  # cluster-scoped: does not go with the namespace
            kube.kubectl("delete", "clusternetworkpolicy", policy["metadata"]["name"], "--ignore-not-found")


def test_cluster_network_policy_comes_and_goes_with_its_sandbox(kube: Kube, namespace: str, rte: str,
                                                                egress_crds: None) -> None:
    """The whole path with Metacontroller: sandbox status -> decorator -> ClusterNetworkPolicy
    owned by the Namespace -> gone once the sandbox is."""
    cp = kube.cp
    log = cp.processes["metacontroller"].log
    default_env = dict(cp.settings.hook_env)
    starts = log.read_text().count('"msg":"Starting DecoratorController"')
    cp.settings.hook_env = {**default_env, "LLMSS_EGRESS_BACKEND": C.EGRESS_BACKEND_CLUSTERNETWORKPOLICY}
    old = cp.start_second_hook_server()
    try:
        install_chart(cp, "--set", f"egress.backend={C.EGRESS_BACKEND_CLUSTERNETWORKPOLICY}", upgrade=True)
        old.stop()
        kube.wait("the decorator restarted with the backend's attachments",
                  lambda: log.read_text().count('"msg":"Starting DecoratorController"') > starts, 60)
        kube.apply(sandbox("fetcher", namespace, rte, networkAccess={"egress": EGRESS}, resources=SMALL))
        kube.wait_sandbox(namespace, "fetcher", "Running", ready=True, timeout=90)
        uid = kube.custom("Sandbox", namespace, "fetcher")["metadata"]["uid"]
        name = cnp.policy_name(uid)
        policy = kube.wait(f"ClusterNetworkPolicy {name}", lambda: kube.get(f"{CNP_PATH}/{name}"), 60)
        ns_obj = kube.core("Namespace", None, namespace)
        assert [(r["kind"], r["uid"]) for r in policy["metadata"]["ownerReferences"]] == [("Namespace", ns_obj["metadata"]["uid"])]
        domain_rules = [r for r in policy["spec"]["egress"] if any("domainNames" in p for p in r["to"])]
        assert sorted(n for r in domain_rules for p in r["to"] for n in p["domainNames"]) == ["*.pythonhosted.org", "github.com", "pypi.org"]
        assert policy["spec"]["subject"]["pods"]["podSelector"]["matchLabels"][C.LABEL_SANDBOX_UID] == uid
        assert kube.core("NetworkPolicy", namespace, "sandbox-fetcher-egress")["spec"]["egress"] == [
            {"ports": [{"port": 5432, "protocol": "TCP"}], "to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}]}]
        kube.kubectl("delete", "sandbox", "fetcher", "-n", namespace, "--wait=false")
        kube.wait_gone("Sandbox", namespace, "fetcher", timeout=90)
        kube.wait(f"ClusterNetworkPolicy {name} deleted", lambda: kube.get(f"{CNP_PATH}/{name}") is None, 60)
    finally:
        cp.settings.hook_env = default_env
        cnp_server = cp.start_second_hook_server()
        install_chart(cp, upgrade=True)
        cnp_server.stop()
        kube.wait("the decorator restarted without the backend",
                  lambda: log.read_text().count('"msg":"Starting DecoratorController"') > starts + 1, 60)
