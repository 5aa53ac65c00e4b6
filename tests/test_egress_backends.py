"""Egress backends (issue 14): the setting, domain validation, and what each backend emits for a
sandbox with domain rules. The semantic checks read the emitted objects the way the enforcing
component would: a sandbox allowed pypi.org gets exactly that name on exactly its ports, no
address block wider than a single DNS cache address, and DNS only to the cluster resolver."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from hooks import constants as C
from hooks import namespace_sync, sandbox_sync
from hooks.builders import cluster_network_policy as cnp
from hooks.config import Config
from hooks.validators import NetworkRule, SandboxProfileSpec, SandboxSpec
from tests.crdutil import CRValidationError, validate_cr
from tests.factory import NOW, sandbox, settle, sync_request
from tests.sandbox_cases import RTE, creating

ROOT = Path(__file__).resolve().parent.parent
PYPI = [{"domain": "pypi.org", "ports": [{"port": 443, "protocol": "TCP"}]}]
NODE_LOCAL = ("169.254.20.10",)


def cfg(backend: str, **kw: Any) -> Config:
    return Config(egress_backend=backend, **kw)


# ---------------------------------------------------------------------------------------------
# The setting


def test_backends_are_one_list_and_the_default_is_networkpolicy() -> None:
    assert Config().egress_backend == C.EGRESS_BACKEND_NETWORKPOLICY == C.EGRESS_BACKENDS[0]
    for backend in C.EGRESS_BACKENDS:
        assert Config.from_env({"LLMSS_EGRESS_BACKEND": backend}).egress_backend == backend
    schema = json.loads((ROOT / "chart" / "values.schema.json").read_text())
    assert schema["properties"]["egress"]["properties"]["backend"]["enum"] == list(C.EGRESS_BACKENDS)
    assert yaml.safe_load((ROOT / "chart" / "values.yaml").read_text())["egress"]["backend"] == C.EGRESS_BACKEND_NETWORKPOLICY


@pytest.mark.parametrize("value", ["squid", "Cilium", "calico", ""])
def test_unknown_backend_is_refused_at_start_up(value: str) -> None:
    with pytest.raises(ValueError, match="LLMSS_EGRESS_BACKEND: must be one of networkpolicy, cilium, clusternetworkpolicy, proxy"):
        Config.from_env({"LLMSS_EGRESS_BACKEND": value})


# ---------------------------------------------------------------------------------------------
# Domain validation: models (sandbox and profile rules) and CRDs say the same


# (domain, accepted?, substring of the model's message, substring of the CRD's message)
DOMAIN_CASES: list[tuple[str, bool, str, str]] = [
    ("pypi.org", True, "", ""),
    ("files.pythonhosted.org", True, "", ""),
    ("*.pythonhosted.org", True, "", ""),
    ("xn--bcher-kva.example", True, "", ""),
    ("203.0.113.7", False, "is an IP address, not a domain name: write it as a cidr (e.g. 203.0.113.7/32)", "an IP address is not a domain name"),
    ("2001:db8::1", False, "is an IP address", "an IP address is not a domain name"),
    ("PyPI.org", False, "must be lower-case ('pypi.org')", "must be lower-case"),
    ("api.*.example.com", False, "a wildcard is allowed only as a whole leading label", "a wildcard is allowed only as a whole leading label"),
    ("*example.com", False, "a wildcard is allowed only as a whole leading label", "a wildcard is allowed only as a whole leading label"),
    ("*.com", False, "needs at least two labels", "match"),
    ("localhost", False, "needs at least two labels", "match"),
    ("example.123", False, "its last label must start with a letter", "match"),
    ("a" * 64 + ".example.com", False, "a label is longer than 63 characters", "match"),
    (("a" * 60 + ".") * 4 + "example.com", False, "at most 253 characters", "too long"),
    ("-bad.example.com", False, "is not a valid domain name", "match"),
]


@pytest.mark.parametrize("domain,ok,model_msg,crd_msg", DOMAIN_CASES, ids=[c[0][:30] for c in DOMAIN_CASES])
def test_domain_rules_of_sandboxes_and_profiles(domain: str, ok: bool, model_msg: str, crd_msg: str) -> None:
    sandbox_obj = {"apiVersion": C.API_VERSION, "kind": C.KIND_SANDBOX, "metadata": {"name": "s", "namespace": "demo"},
                   "spec": {"runtime": "python-3.11", "networkAccess": {"egress": [{"domain": domain}]}}}
    profile_obj = {"apiVersion": C.API_VERSION, "kind": C.KIND_PROFILE, "metadata": {"name": "p", "namespace": "demo"},
                   "spec": {"language": "python", "networkPolicies": [{"type": "egress", "rules": [{"domain": domain}]}]}}
    for obj, model in ((sandbox_obj, SandboxSpec), (profile_obj, SandboxProfileSpec)):
        if ok:
            validate_cr(obj)
            model.model_validate(obj["spec"])
            continue
        with pytest.raises(CRValidationError) as crd_err:
            validate_cr(obj)
        assert any(crd_msg in p for p in crd_err.value.problems), crd_err.value.problems
        with pytest.raises(ValidationError) as model_err:
            model.model_validate(obj["spec"])
        assert model_msg in str(model_err.value)


# ---------------------------------------------------------------------------------------------
# What a sandbox allowed pypi.org gets, per backend


def settled(backend: str, egress: list[dict[str, Any]] = PYPI, **kw: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    config = cfg(backend, **kw)
    return settle(lambda r, now: sandbox_sync.sync(r, now, config), creating(sandbox("fetcher", spec={"networkAccess": {"egress": egress}})))


def of_kind(children: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [c for c in children if c["kind"] == kind]


def ip_blocks(children: list[dict[str, Any]]) -> list[str]:
    return [peer["ipBlock"]["cidr"] for p in of_kind(children, "NetworkPolicy") for rule in p["spec"].get("egress", [])
            for peer in rule.get("to", []) if "ipBlock" in peer]


def test_default_backend_is_still_coarse() -> None:
    """The documented limitation, kept on purpose: pypi.org opens the public IPv4 space on 443."""
    children, _ = settled(C.EGRESS_BACKEND_NETWORKPOLICY)
    assert ip_blocks(children) == [C.PUBLIC_CIDR]
    assert not of_kind(children, "CiliumNetworkPolicy")


@pytest.mark.parametrize("node_local", [(), NODE_LOCAL], ids=["cluster-dns", "node-local-dns"])
def test_cilium_allows_exactly_the_name_on_its_ports(node_local: tuple[str, ...]) -> None:
    children, answer = settled(C.EGRESS_BACKEND_CILIUM, node_local_dns_addresses=node_local)
    assert ip_blocks(children) == (list(f"{a}/32" for a in node_local)), "no NetworkPolicy opens the public space"
    (policy,) = of_kind(children, "CiliumNetworkPolicy")
    assert policy["metadata"]["namespace"] == "demo"
    assert policy["spec"]["endpointSelector"] == {"matchLabels": sandbox_sync.selector(creating(sandbox("fetcher"))["parent"])}
    fqdn_rules = [r for r in policy["spec"]["egress"] if "toFQDNs" in r]
    assert fqdn_rules == [{"toFQDNs": [{"matchName": "pypi.org"}], "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}]}]
    dns_rules = [r for r in policy["spec"]["egress"] if "toFQDNs" not in r]
    peers = [r.get("toEndpoints") or r.get("toCIDR") for r in dns_rules]
    assert peers[0] == [{"matchLabels": {"k8s:io.kubernetes.pod.namespace": "kube-system", "k8s:k8s-app": "kube-dns"}}]
    assert peers[1:] == ([[f"{a}/32" for a in node_local]] if node_local else [])
    for rule in dns_rules:  # the DNS proxy rule, on the DNS port only
        assert set(rule) <= {"toEndpoints", "toCIDR", "toPorts"}
        assert rule["toPorts"] == [{"ports": [{"port": "53", "protocol": "ANY"}], "rules": {"dns": [{"matchPattern": "*"}]}}]
    assert not any("toCIDRSet" in r or "toEntities" in r for r in policy["spec"]["egress"])


def test_cilium_wildcards_and_cidrs() -> None:
    children, _ = settled(C.EGRESS_BACKEND_CILIUM, [{"domain": "*.pythonhosted.org"}, {"cidr": "203.0.113.0/24", "ports": [{"port": 5432}]}])
    (policy,) = of_kind(children, "CiliumNetworkPolicy")
    assert [r["toFQDNs"] for r in policy["spec"]["egress"] if "toFQDNs" in r] == [[{"matchPattern": "*.pythonhosted.org"}]]
    assert ip_blocks(children) == ["203.0.113.0/24"]  # the CIDR rule stays a NetworkPolicy


def test_cidr_only_sandbox_gets_no_name_policy() -> None:
    for backend in (C.EGRESS_BACKEND_CILIUM, C.EGRESS_BACKEND_CLUSTERNETWORKPOLICY):
        children, answer = settled(backend, [{"cidr": "203.0.113.0/24"}])
        assert not of_kind(children, "CiliumNetworkPolicy")
        assert ip_blocks(children) == ["203.0.113.0/24"]
        assert "egress" in answer["status"] or backend == C.EGRESS_BACKEND_CILIUM


def decorate(sandboxes: list[dict[str, Any]], backend: str = C.EGRESS_BACKEND_CLUSTERNETWORKPOLICY, ns: str = "demo",
             **kw: Any) -> dict[str, Any]:
    nsobj = {"apiVersion": "v1", "kind": "Namespace",
             "metadata": {"name": ns, "uid": "ns-uid", "labels": {C.LABEL_TENANT_NAMESPACE: "true"}}}
    related = {C.GVK_SANDBOX: {f"{s['metadata']['namespace']}/{s['metadata']['name']}": s for s in sandboxes}}
    return namespace_sync.sync({"object": nsobj, "attachments": {}, "related": related, "finalizing": False}, NOW, cfg(backend, **kw))


def with_status(parent: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    return {**copy.deepcopy(parent), "status": status}


def cnps(response: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in response["attachments"] if a["kind"] == "ClusterNetworkPolicy"]


@pytest.mark.parametrize("node_local", [(), NODE_LOCAL], ids=["cluster-dns", "node-local-dns"])
def test_cluster_network_policy_allows_exactly_the_name_on_its_ports(node_local: tuple[str, ...]) -> None:
    children, answer = settled(C.EGRESS_BACKEND_CLUSTERNETWORKPOLICY, node_local_dns_addresses=node_local)
    assert ip_blocks(children) == [f"{a}/32" for a in node_local], "no NetworkPolicy opens the public space"
    assert answer["status"]["egress"] == PYPI
    parent = with_status(creating(sandbox("fetcher"))["parent"], answer["status"])
    (policy,) = cnps(decorate([parent], node_local_dns_addresses=node_local))
    spec = policy["spec"]
    assert "namespace" not in policy["metadata"] and policy["metadata"]["name"] == cnp.policy_name(parent["metadata"]["uid"])
    assert (spec["tier"], spec["priority"]) == ("Admin", C.CNP_PRIORITY)
    assert spec["subject"] == {"pods": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "demo"}},
                                        "podSelector": {"matchLabels": sandbox_sync.selector(parent)}}}
    rules = spec["egress"]
    accepts = [r for r in rules if r["action"] == "Accept"]
    # DNS first (the implementation learns the name's addresses from the lookups), the name next.
    assert [r["name"] for r in rules] == ["dns", *(["node-local-dns"] if node_local else []), "domains-1", "api", "deny"]
    assert accepts[0]["to"] == [{"pods": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                                          "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}}]
    for rule in accepts[:-1]:
        assert rule["protocols"] == [{"udp": {"destinationPort": {"number": 53}}}, {"tcp": {"destinationPort": {"number": 53}}}]
    if node_local:
        assert accepts[1]["to"] == [{"networks": ["169.254.20.10/32"]}]
    assert accepts[-1] == {"name": "domains-1", "action": "Accept", "to": [{"domainNames": ["pypi.org"]}],
                           "protocols": [{"tcp": {"destinationPort": {"number": 443}}}]}
    # Nothing else accepted; the API component passes to its NetworkPolicy; all else denied.
    assert [r["to"] for r in rules if r["action"] == "Pass"] == [[{"pods": {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "llmsafespace"}},
        "podSelector": {"matchLabels": {C.LABEL_APP: C.APP_NAME, C.LABEL_COMPONENT: C.COMPONENT_API}}}}]]
    assert rules[-1] == {"name": "deny", "action": "Deny", "to": [{"networks": ["0.0.0.0/0", "::/0"]}]}


def test_cluster_network_policy_splits_names_by_25_and_passes_cidrs() -> None:
    domains = [{"domain": f"host{i:02d}.example.com"} for i in range(30)]
    children, answer = settled(C.EGRESS_BACKEND_CLUSTERNETWORKPOLICY, [*domains, {"cidr": "203.0.113.0/24", "ports": [{"port": 22}]}])
    (policy,) = cnps(decorate([with_status(creating(sandbox("fetcher"))["parent"], answer["status"])]))
    rules = {r["name"]: r for r in policy["spec"]["egress"]}
    assert [len(rules[n]["to"][0]["domainNames"]) for n in ("domains-1", "domains-2")] == [25, 5]
    assert rules["cidrs-1"] == {"name": "cidrs-1", "action": "Pass", "to": [{"networks": ["203.0.113.0/24"]}],
                                "protocols": [{"tcp": {"destinationPort": {"number": 22}}}]}
    assert ip_blocks(children) == ["203.0.113.0/24"]


def test_too_many_rules_for_one_cluster_network_policy_is_an_invalid_spec() -> None:
    # 24 distinct port lists: DNS, 24 name rules, API, deny = 27 > 25.
    egress = [{"domain": f"h{i}.example.com", "ports": [{"port": 1000 + i}]} for i in range(24)]
    _, answer = settled(C.EGRESS_BACKEND_CLUSTERNETWORKPOLICY, egress[:2])
    assert answer["status"]["phase"] != C.PHASE_FAILED
    request = creating(sandbox("fetcher", spec={"networkAccess": {"egress": egress}}))
    out = sandbox_sync.sync(request, NOW, cfg(C.EGRESS_BACKEND_CLUSTERNETWORKPOLICY))
    validated = next(c for c in out["status"]["conditions"] if c["type"] == "Validated")
    assert (validated["status"], validated["reason"]) == ("False", "InvalidSpec")
    assert "at most 25 fit" in validated["message"]
    assert "egress" not in out["status"]
    # The networkpolicy backend has no such limit.
    ok = sandbox_sync.sync(request, NOW, cfg(C.EGRESS_BACKEND_NETWORKPOLICY))
    assert next(c for c in ok["status"]["conditions"] if c["type"] == "Validated")["status"] == "True"


def test_unusable_spec_keeps_the_published_rules() -> None:
    """A bad edit of a running sandbox keeps its children; the ClusterNetworkPolicy, written from
    the status, must stay too."""
    status = {"phase": "Running", "egress": PYPI}
    bad = sandbox("fetcher", spec={"runtime": "missing:1"}, status=status)
    held, _ = settled(C.EGRESS_BACKEND_CLUSTERNETWORKPOLICY)
    out = sandbox_sync.sync(sync_request(bad, children=held, related=[RTE]), NOW, cfg(C.EGRESS_BACKEND_CLUSTERNETWORKPOLICY))
    assert next(c for c in out["status"]["conditions"] if c["type"] == "Validated")["status"] != "True"
    assert out["status"]["egress"] == PYPI


# ---------------------------------------------------------------------------------------------
# The decorator: related sandboxes, ownership, errors


def test_customize_asks_for_the_namespace_sandboxes_only_under_clusternetworkpolicy() -> None:
    request = {"controller": {}, "parent": {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo", "uid": "u"}}}
    assert namespace_sync.customize(request, NOW, cfg(C.EGRESS_BACKEND_CLUSTERNETWORKPOLICY)) == {"relatedResources": [
        {"apiVersion": C.API_VERSION, "resource": "sandboxes", "namespace": "demo"}]}
    for backend in (C.EGRESS_BACKEND_NETWORKPOLICY, C.EGRESS_BACKEND_CILIUM):
        assert namespace_sync.customize(request, NOW, cfg(backend)) == {"relatedResources": []}


def test_decorator_writes_one_policy_per_sandbox_with_names_and_none_otherwise() -> None:
    a = sandbox("a", status={"egress": PYPI})
    b = sandbox("b", status={"egress": [{"cidr": "203.0.113.0/24", "ports": []}]})
    c = sandbox("c")  # not synced yet: nothing published, nothing allowed
    elsewhere = sandbox("d", namespace="other", status={"egress": PYPI})
    response = decorate([a, b, c, elsewhere])
    assert [p["metadata"]["name"] for p in cnps(response)] == [cnp.policy_name(a["metadata"]["uid"])]
    assert response["annotations"][C.ANNOTATION_HARDENING_ERRORS] is None
    # Other backends: no policy, whatever the statuses say.
    assert cnps(decorate([a], backend=C.EGRESS_BACKEND_CILIUM)) == []
    # The sandbox goes (deleted and finalized): the next sync desires no policy, Metacontroller deletes it.
    assert cnps(decorate([b, c])) == []


def test_decorator_refuses_a_status_it_cannot_trust_and_says_why() -> None:
    forged = sandbox("forged", status={"egress": [{"domain": "10.0.0.1", "ports": []}]})
    response = decorate([forged])
    assert cnps(response) == []
    assert "sandbox forged: status.egress cannot be enforced" in response["annotations"][C.ANNOTATION_HARDENING_ERRORS]
    assert "is an IP address" in response["annotations"][C.ANNOTATION_HARDENING_ERRORS]


def test_rules_are_never_duplicated_in_domain_names() -> None:
    rules = [NetworkRule(domain="pypi.org"), NetworkRule(domain="pypi.org", ports=[{"port": 443}, {"port": 80}])]
    egress = cnp.egress_rules(rules, Config())
    assert [r["to"] for r in egress if r["name"].startswith("domains")] == [[{"domainNames": ["pypi.org"]}]]


# ---------------------------------------------------------------------------------------------
# Chart: each backend's kinds reach the controllers and Metacontroller's RBAC


@pytest.mark.parametrize("backend", C.EGRESS_BACKENDS)
def test_chart_deploys_the_backend(backend: str) -> None:
    from hooks.server.routes import ROUTES
    from hooks.manifests import backend_additions, controller_docs
    from tests.test_chart import env_of, render

    docs = render(None, "--set", f"egress.backend={backend}")
    assert env_of(docs)["LLMSS_EGRESS_BACKEND"] == backend
    controllers = {d["metadata"]["name"]: d for d in docs if d["kind"] in ("CompositeController", "DecoratorController")}
    expected = {doc["metadata"]["name"]: doc for _p, doc in controller_docs(backend)}
    kinds = {name: [(r["apiVersion"], r["resource"]) for r in (d["spec"].get("childResources") or d["spec"].get("attachments") or [])]
             for name, d in controllers.items()}
    assert kinds == {name: [(r["apiVersion"], r["resource"]) for r in (d["spec"].get("childResources") or d["spec"].get("attachments") or [])]
                     for name, d in expected.items()}
    for name, doc in controllers.items():
        assert set(doc["spec"]["hooks"]) == set(expected[name]["spec"]["hooks"]), name
        for hook in doc["spec"]["hooks"].values():
            assert hook["webhook"]["url"].split(":80", 1)[1] in ROUTES
    added = backend_additions(backend)
    roles = [d for d in docs if d["kind"] == "ClusterRole" and "-egress-" in d["metadata"]["name"]]
    if not added:
        assert backend == C.EGRESS_BACKEND_NETWORKPOLICY and roles == []
        assert kinds["llmsafespace-sandbox"][-1] == ("networking.k8s.io/v1", "networkpolicies")
        return
    (role,) = roles
    granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    for controller in added.values():
        for kind in controller.get("childResources", []) + controller.get("attachments", []):
            for verb in ("get", "list", "watch", "create", "update", "patch", "delete"):
                assert (kind["apiVersion"].rpartition("/")[0], kind["resource"], verb) in granted  # "v1": the core group ""
        for kind in controller.get("read", []):
            assert {(kind["apiVersion"].rpartition("/")[0], kind["resource"], v) for v in ("get", "list", "watch")} <= granted
    (binding,) = [d for d in docs if d["kind"] == "ClusterRoleBinding" and d["roleRef"]["name"] == role["metadata"]["name"]]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "metacontroller", "namespace": "metacontroller"}]
    if backend == C.EGRESS_BACKEND_CILIUM:
        assert ("cilium.io/v2", "ciliumnetworkpolicies") in kinds["llmsafespace-sandbox"]
    if backend == C.EGRESS_BACKEND_CLUSTERNETWORKPOLICY:
        assert ("policy.networking.k8s.io/v1alpha2", "clusternetworkpolicies") in kinds["llmsafespace-tenantnamespace"]
        assert "customize" in controllers["llmsafespace-tenantnamespace"]["spec"]["hooks"]


def test_every_non_default_backend_has_a_ci_value_set() -> None:
    for backend in C.EGRESS_BACKENDS[1:]:
        values = yaml.safe_load((ROOT / "chart" / "ci" / f"egress-{backend}-values.yaml").read_text())
        assert values["egress"]["backend"] == backend


# ---------------------------------------------------------------------------------------------
# Convergence (tests/harness.py, stale caches): created with the sandbox, gone with it


def _harness(backend: str, seed: int) -> Any:
    from tests.factory import runtime
    from tests.harness import Harness, load_controllers

    h = Harness(load_controllers([C.KIND_SANDBOX, "Namespace"], backend), cfg(backend), NOW, seed, stale=0.15)
    h.create({"apiVersion": "v1", "kind": "Namespace",
              "metadata": {"name": "demo", "labels": {"kubernetes.io/metadata.name": "demo", C.LABEL_TENANT_NAMESPACE: "true"}}})
    h.create(runtime())
    for name in ("fetcher", "other"):
        h.create({"apiVersion": C.API_VERSION, "kind": C.KIND_SANDBOX, "metadata": {"name": name, "namespace": "demo"},
                  "spec": {"runtime": "python:3.11", "networkAccess": {"egress": PYPI}}})
    return h


def _name_policies(h: Any) -> dict[str, dict[str, Any]]:
    return {k[2]: o for k, o in h.objects.items() if k[0] in ("ClusterNetworkPolicy", "CiliumNetworkPolicy")}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("backend", [C.EGRESS_BACKEND_CILIUM, C.EGRESS_BACKEND_CLUSTERNETWORKPOLICY])
def test_name_policy_comes_with_the_sandbox_and_goes_with_it(backend: str, seed: int) -> None:
    h = _harness(backend, seed)
    h.run_until_quiet()
    uids = {n: h.objects[(C.KIND_SANDBOX, "demo", n)]["metadata"]["uid"] for n in ("fetcher", "other")}
    policies = _name_policies(h)
    assert len(policies) == 2, sorted(policies)
    namespace_uid = h.objects[("Namespace", "", "demo")]["metadata"]["uid"]
    for policy in policies.values():
        (owner,) = policy["metadata"]["ownerReferences"]
        if backend == C.EGRESS_BACKEND_CLUSTERNETWORKPOLICY:
            assert (owner["kind"], owner["uid"]) == ("Namespace", namespace_uid)
            assert "namespace" not in policy["metadata"]
        else:
            assert owner["kind"] == C.KIND_SANDBOX and owner["uid"] in uids.values()
    h.delete((C.KIND_SANDBOX, "demo", "fetcher"))
    h.run_until_quiet()
    assert (C.KIND_SANDBOX, "demo", "fetcher") not in h.objects
    left = _name_policies(h)
    assert len(left) == 1, sorted(left)
    (kept,) = left.values()
    assert kept["metadata"]["labels"][C.LABEL_SANDBOX_UID] == uids["other"]
    assert not [k for k, o in h.objects.items() if any(r.get("uid") == uids["fetcher"] for r in o["metadata"].get("ownerReferences") or [])]
    assert not h.violations


def test_e2e_says_which_upstream_crd_is_missing_and_where_it_comes_from(tmp_path: Path) -> None:
    from tests.e2e.controlplane import EGRESS_CRDS, egress_crds_skip_reason

    reason = egress_crds_skip_reason(tmp_path)
    assert reason is not None and all(name in reason for name in EGRESS_CRDS) and "docs/e2e.md" in reason
    assert "github.com/cilium/cilium" in reason and "network-policy-api" in reason
    for name in EGRESS_CRDS:
        (tmp_path / name).write_text("kind: CustomResourceDefinition\n")
    assert egress_crds_skip_reason(tmp_path) is None


def test_docs_describe_every_backend_where_users_choose() -> None:
    """README (where users choose) and SECURITY.md have a row per backend, and say the default is coarse."""
    for doc in ("README.md", "SECURITY.md"):
        text = (ROOT / doc).read_text()
        section = text[text.index("## Egress backends") if "## Egress backends" in text else text.index("### Egress backends"):]
        rows = [line for line in section.splitlines() if line.startswith("| `")]
        assert [r.split("`")[1] for r in rows[:len(C.EGRESS_BACKENDS)]] == list(C.EGRESS_BACKENDS), doc
        assert "coarse" in rows[0].lower() or "not a domain allow-list" in rows[0], doc
    values = (ROOT / "chart" / "values.yaml").read_text()
    assert "COARSE" in values[values.index("egress:"):values.index("backend: networkpolicy")]


# ---------------------------------------------------------------------------------------------
# Golden of the decorator under the clusternetworkpolicy backend (the sandbox goldens per backend
# are tests/golden/sandbox/egress-names-*.json)


def test_decorator_golden_under_clusternetworkpolicy() -> None:
    from tests.golden import check_golden
    from tests.sandbox_cases import egress_names

    config = cfg(C.EGRESS_BACKEND_CLUSTERNETWORKPOLICY, node_local_dns_addresses=NODE_LOCAL)
    _, answer = settle(lambda r, now: sandbox_sync.sync(r, now, config), egress_names())
    published = with_status(egress_names()["parent"], answer["status"])
    nsobj = {"apiVersion": "v1", "kind": "Namespace",
             "metadata": {"name": "demo", "uid": "ns-uid", "labels": {C.LABEL_TENANT_NAMESPACE: "true"}}}
    request = {"object": nsobj, "attachments": {}, "related": {C.GVK_SANDBOX: {"demo/fetcher": published}}, "finalizing": False}
    response = namespace_sync.sync(request, NOW, config)
    check_golden("tenantnamespace/clusternetworkpolicy-backend.json", request, response)
    assert len(cnps(response)) == 1
