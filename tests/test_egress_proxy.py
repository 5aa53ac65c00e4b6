"""Egress backend "proxy" (docs/egress-proxy.md), at the hooks: the tenant-namespace decorator's
customize hook and proxy attachments (validated against the Kubernetes 1.33 schemas, the pod
template against the security bar), the sandbox's egress policy (domain rules reach the proxy
only), the proxy variables of cold and warm pods, goldens, and the default backend untouched.
The generated squid.conf under the real squid: tests/test_egress_proxy_squid.py."""
from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest

from hooks import constants as C
from hooks import egress_proxy as ep
from hooks import namespace_sync, sandbox_sync, warmpod_sync
from hooks.config import Config
from tests import sandbox_cases
from tests.factory import NOW, group, profile, sandbox
from tests.golden import check_golden
from tests.security import assert_pod_hardened
from tests.test_namespace_hook import namespace, request
from tests.warm_factory import observed_child, warmpod_parent, warmpod_request

K8S_VERSION = "1.33"
PROXY = Config(egress_backend=C.EGRESS_BACKEND_PROXY)
NS = "team-a"
PROXY_KINDS = {"ConfigMap", "Deployment", "Service"}


def tenant_request(*related: dict[str, Any]) -> dict[str, Any]:
    req = request(namespace(NS))
    req["related"] = {C.GVK_SANDBOX: {}, C.GVK_PROFILE: {}, **group(related)}
    return req


def fetcher(name: str = "fetcher", ns: str = NS, egress: Any = None, **spec: Any) -> dict[str, Any]:
    rules = egress if egress is not None else [
        {"domain": "pypi.org", "ports": [{"port": 443}]},
        {"domain": "files.pythonhosted.org"},
        {"domain": "*.githubusercontent.com", "ports": [{"port": 443}, {"port": 53, "protocol": "UDP"}]},
        {"cidr": "203.0.113.0/24", "ports": [{"port": 5432}]},
    ]
    return sandbox(name, ns, spec={"networkAccess": {"egress": rules}, **spec})


def attachment(response: dict[str, Any], kind: str, name: str = C.EGRESS_PROXY_NAME) -> dict[str, Any]:
    return next(a for a in response["attachments"] if a["kind"] == kind and a["metadata"]["name"] == name)


# --- configuration -------------------------------------------------------------------------------

def test_backend_setting_is_read_and_checked() -> None:
    assert Config.from_env({}).egress_backend == C.EGRESS_BACKEND_NETWORKPOLICY
    assert Config.from_env({"LLMSS_EGRESS_BACKEND": "proxy"}).egress_backend == "proxy"
    assert Config.from_env({"LLMSS_EGRESS_PROXY_IMAGE": "registry.example.com/squid:6"}).egress_proxy_image == "registry.example.com/squid:6"
    with pytest.raises(ValueError, match="LLMSS_EGRESS_BACKEND: must be one of networkpolicy, cilium, clusternetworkpolicy, proxy"):
        Config.from_env({"LLMSS_EGRESS_BACKEND": "squid"})


# --- the tenant-namespace decorator --------------------------------------------------------------

def test_customize_relates_nothing_with_the_default_backend() -> None:
    assert namespace_sync.customize({"parent": namespace(NS)}, NOW) == {"relatedResources": []}


def test_customize_relates_the_namespaces_sandboxes_and_every_profile_with_the_proxy() -> None:
    assert namespace_sync.customize({"parent": namespace(NS)}, NOW, PROXY) == {"relatedResources": [
        {"apiVersion": C.API_VERSION, "resource": "sandboxes", "namespace": NS},
        {"apiVersion": C.API_VERSION, "resource": "sandboxprofiles"},
    ]}


def test_default_backend_attaches_no_proxy_even_with_sandboxes_related() -> None:
    response = namespace_sync.sync(tenant_request(fetcher()), NOW)
    assert {a["kind"] for a in response["attachments"]} == {"NetworkPolicy", "ResourceQuota", "LimitRange"}


def test_proxy_attachments_validate_strictly() -> None:
    response = namespace_sync.sync(tenant_request(fetcher()), NOW, PROXY)
    kinds = sorted((a["kind"], a["metadata"]["name"]) for a in response["attachments"])
    assert kinds == sorted([
        ("ConfigMap", C.EGRESS_PROXY_NAME), ("Deployment", C.EGRESS_PROXY_NAME), ("Service", C.EGRESS_PROXY_NAME),
        ("LimitRange", C.TENANT_LIMITS_NAME), ("ResourceQuota", C.TENANT_QUOTA_NAME),
        ("NetworkPolicy", C.TENANT_POLICY_NAME), ("NetworkPolicy", f"{C.EGRESS_PROXY_NAME}-egress"),
        ("NetworkPolicy", f"{C.EGRESS_PROXY_NAME}-ingress"),
    ])
    for obj in response["attachments"]:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_proxy_pod_meets_the_security_bar() -> None:
    deployment = attachment(namespace_sync.sync(tenant_request(fetcher()), NOW, PROXY), "Deployment")
    spec = copy.deepcopy(deployment["spec"]["template"]["spec"])
    volumes = spec.pop("volumes")
    # The squid.conf ConfigMap, mounted read-only, is the one volume that is not scratch space.
    assert [v for v in volumes if "configMap" in v] == [{"name": "config", "configMap": {"name": C.EGRESS_PROXY_NAME}}]
    assert_pod_hardened({"metadata": {"name": "proxy"}, "spec": {**spec, "volumes": [v for v in volumes if "configMap" not in v]}})
    [container] = spec["containers"]
    assert container["image"] == C.DEFAULT_EGRESS_PROXY_IMAGE
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {C.EGRESS_PROXY_RUN_DIR, C.EGRESS_PROXY_SPOOL_DIR}
    assert spec["securityContext"]["runAsUser"] == C.EGRESS_PROXY_UID != 0


def test_proxy_image_is_configurable() -> None:
    config = Config(egress_backend=C.EGRESS_BACKEND_PROXY, egress_proxy_image="registry.example.com/squid@sha256:" + "a" * 64)
    deployment = attachment(namespace_sync.sync(tenant_request(), NOW, config), "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == config.egress_proxy_image


def test_configmap_is_the_generated_config_of_the_namespaces_sandboxes_and_profiles() -> None:
    web = profile("web", NS, networkPolicies=[{"type": "egress", "rules": [{"domain": "registry.npmjs.org"}]}])
    other_ns = fetcher("elsewhere", "team-b", egress=[{"domain": "exfil.example"}])
    response = namespace_sync.sync(tenant_request(fetcher(), fetcher("web", profileRef={"name": "web"}, egress=[]), web, other_ns),
                                   NOW, PROXY)
    conf = attachment(response, "ConfigMap")["data"][C.EGRESS_PROXY_CONFIG_FILE]
    allowed = (
        ep.Allowed("*.githubusercontent.com", (443,)), ep.Allowed("files.pythonhosted.org", (80, 443)),
        ep.Allowed("pypi.org", (443,)), ep.Allowed("registry.npmjs.org", (80, 443)),
    )
    assert conf == ep.squid_conf(allowed, NS)
    assert "exfil.example" not in conf and "203.0.113" not in conf
    template = attachment(response, "Deployment")["spec"]["template"]
    assert template["metadata"]["annotations"] == {C.ANNOTATION_EGRESS_PROXY_CONFIG_HASH: ep.config_hash(conf)}


def test_a_changed_allow_list_rolls_the_proxy() -> None:
    def config_hash(*sandboxes: dict[str, Any]) -> str:
        deployment = attachment(namespace_sync.sync(tenant_request(*sandboxes), NOW, PROXY), "Deployment")
        return str(deployment["spec"]["template"]["metadata"]["annotations"][C.ANNOTATION_EGRESS_PROXY_CONFIG_HASH])

    assert config_hash(fetcher()) == config_hash(fetcher())
    assert config_hash(fetcher()) != config_hash(fetcher(), fetcher("more", egress=[{"domain": "crates.io"}]))


def test_invalid_sandbox_or_missing_profile_contributes_nothing() -> None:
    broken = sandbox("broken", NS, spec={"networkAccess": {"egress": [{"domain": "Not A Domain"}]}})
    orphan = fetcher("orphan", profileRef={"name": "missing"}, egress=[{"domain": "kept.example"}])
    conf = attachment(namespace_sync.sync(tenant_request(broken, orphan), NOW, PROXY), "ConfigMap")["data"][C.EGRESS_PROXY_CONFIG_FILE]
    assert "kept.example" in conf and "Not A Domain" not in conf


def test_only_sandbox_pods_reach_the_proxy() -> None:
    policy = attachment(namespace_sync.sync(tenant_request(fetcher()), NOW, PROXY), "NetworkPolicy", f"{C.EGRESS_PROXY_NAME}-ingress")
    assert policy["spec"]["podSelector"] == {"matchLabels": {C.LABEL_APP: C.APP_NAME, C.LABEL_COMPONENT: C.COMPONENT_EGRESS_PROXY}}
    assert policy["spec"]["ingress"] == [{
        "from": [{"podSelector": {"matchExpressions": [{"key": C.LABEL_SANDBOX_UID, "operator": "Exists"}],
                                  "matchLabels": {C.LABEL_APP: C.APP_NAME}}},
                 # warm pods, by the label they carry from creation (served before any relabel)
                 {"podSelector": {"matchExpressions": [{"key": C.LABEL_WARMPOD_UID, "operator": "Exists"}],
                                  "matchLabels": {C.LABEL_APP: C.APP_NAME}}}],
        "ports": [{"port": C.EGRESS_PROXY_PORT, "protocol": "TCP"}],
    }]


def test_the_proxy_reaches_dns_and_public_addresses_on_the_listed_tcp_ports_only() -> None:
    policy = attachment(namespace_sync.sync(tenant_request(fetcher()), NOW, PROXY), "NetworkPolicy", f"{C.EGRESS_PROXY_NAME}-egress")
    dns, internet = policy["spec"]["egress"]
    assert dns["to"][0]["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}
    assert internet["ports"] == [{"port": 80, "protocol": "TCP"}, {"port": 443, "protocol": "TCP"}]  # not 5432 (a cidr rule), not UDP 53
    blocks = [peer["ipBlock"] for peer in internet["to"]]
    assert blocks[0] == {"cidr": "0.0.0.0/0", "except": sorted(C.PRIVATE_CIDRS)}
    # IPv6 global unicast without 6to4; never ::/0, whose exceptions the API server refuses
    # (an IPv4-mapped range in an ipBlock).
    assert blocks[1] == {"cidr": "2000::/3", "except": ["2002::/16"]}


def test_without_domain_rules_the_proxy_reaches_dns_only() -> None:
    policy = attachment(namespace_sync.sync(tenant_request(), NOW, PROXY), "NetworkPolicy", f"{C.EGRESS_PROXY_NAME}-egress")
    assert len(policy["spec"]["egress"]) == 1 and "ipBlock" not in str(policy["spec"]["egress"])


def test_hardening_is_pending_until_the_proxy_is_observed() -> None:
    first = namespace_sync.sync(tenant_request(fetcher()), NOW, PROXY)
    assert first["annotations"][C.ANNOTATION_HARDENING_STATUS] == C.HARDENING_PENDING
    seen: dict[str, Any] = {}
    for a in first["attachments"]:
        seen.setdefault(C.gvk_key(a["kind"], a["apiVersion"]), {})[f"{NS}/{a['metadata']['name']}"] = a
    without_deployment = {gvk: {k: v for k, v in objs.items() if v["kind"] != "Deployment"} for gvk, objs in seen.items()}
    again = tenant_request(fetcher())
    again["attachments"] = without_deployment
    assert namespace_sync.sync(again, NOW, PROXY)["annotations"][C.ANNOTATION_HARDENING_STATUS] == C.HARDENING_PENDING
    again["attachments"] = seen
    assert namespace_sync.sync(again, NOW, PROXY)["annotations"][C.ANNOTATION_HARDENING_STATUS] == C.HARDENING_APPLIED


# --- the sandbox -----------------------------------------------------------------------------------

def sandbox_children(config: Config) -> dict[tuple[str, str], dict[str, Any]]:
    response = sandbox_sync.sync(sandbox_cases.egress_rules(), NOW, config)
    return {(c["kind"], c["metadata"]["name"]): c for c in response["children"]}


def test_sandbox_domain_rules_reach_the_proxy_only_and_cidr_rules_stay_direct() -> None:
    policy = sandbox_children(PROXY)[("NetworkPolicy", "sandbox-fetcher-egress")]
    assert policy["spec"]["egress"] == [
        {"to": [{"podSelector": {"matchLabels": {C.LABEL_APP: C.APP_NAME, C.LABEL_COMPONENT: C.COMPONENT_EGRESS_PROXY}}}],
         "ports": [{"port": C.EGRESS_PROXY_PORT, "protocol": "TCP"}]},
        {"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}],
         "ports": [{"port": 53, "protocol": "UDP"}, {"port": 5432, "protocol": "TCP"}]},
    ]
    assert C.PUBLIC_CIDR not in str(policy)


def test_default_backend_sandbox_still_opens_the_public_space_for_a_domain() -> None:
    policy = sandbox_children(Config())[("NetworkPolicy", "sandbox-fetcher-egress")]
    assert policy["spec"]["egress"][0]["to"] == [{"ipBlock": {"cidr": C.PUBLIC_CIDR, "except": sorted(C.PRIVATE_CIDRS)}}]


def proxy_env(ns: str) -> list[dict[str, str]]:
    url = f"http://{C.EGRESS_PROXY_NAME}.{ns}.svc:{C.EGRESS_PROXY_PORT}"
    no_proxy = "localhost,127.0.0.1,::1,.svc,.cluster.local"
    return [{"name": "HTTPS_PROXY", "value": url}, {"name": "HTTP_PROXY", "value": url}, {"name": "NO_PROXY", "value": no_proxy},
            {"name": "http_proxy", "value": url}, {"name": "https_proxy", "value": url}, {"name": "no_proxy", "value": no_proxy}]


def proxy_vars(container: dict[str, Any]) -> list[dict[str, str]]:
    """The proxy variables of a container's env (the runtime's own variables stand beside them)."""
    return [e for e in container.get("env", []) if e["name"].lower() in ("https_proxy", "http_proxy", "no_proxy")]


def test_cold_pod_gets_the_proxy_variables_with_the_proxy_backend_only() -> None:
    assert proxy_vars(sandbox_children(PROXY)[("Pod", "sandbox-fetcher")]["spec"]["containers"][0]) == proxy_env("demo")
    assert proxy_vars(sandbox_children(Config())[("Pod", "sandbox-fetcher")]["spec"]["containers"][0]) == []


def test_new_warm_pod_carries_the_proxy_variables_from_creation() -> None:
    pod = next(c for c in warmpod_sync.sync(warmpod_request(warmpod_parent()), NOW, PROXY)["children"] if c["kind"] == "Pod")
    assert proxy_vars(pod["spec"]["containers"][0]) == proxy_env("demo")
    assert_pod_hardened(pod)


def test_existing_warm_pod_keeps_the_env_it_was_created_with() -> None:
    """A pod's env cannot change: a warm pod made before the backend became proxy is desired
    without the variables, or its relabelling on assignment would be refused with the update."""
    parent = warmpod_parent()
    default_pod = next(c for c in warmpod_sync.sync(warmpod_request(parent), NOW)["children"] if c["kind"] == "Pod")
    req = warmpod_request(parent, [observed_child(default_pod, parent)])
    pod = next(c for c in warmpod_sync.sync(req, NOW, PROXY)["children"] if c["kind"] == "Pod")
    assert pod["spec"]["containers"][0]["env"] == default_pod["spec"]["containers"][0]["env"]
    assert proxy_vars(pod["spec"]["containers"][0]) == []


# --- goldens ---------------------------------------------------------------------------------------

def test_golden_tenant_namespace() -> None:
    web = profile("web", NS, networkPolicies=[{"type": "egress", "rules": [{"domain": "registry.npmjs.org"}]}])
    req = tenant_request(fetcher(), fetcher("web", profileRef={"name": "web"}, egress=[]), web)
    check_golden("egress-proxy/tenantnamespace.json", req, namespace_sync.sync(req, NOW, PROXY))


def test_golden_sandbox() -> None:
    req = sandbox_cases.egress_rules()
    check_golden("egress-proxy/sandbox.json", req, sandbox_sync.sync(req, NOW, PROXY))


def test_golden_warmpod() -> None:
    req = warmpod_request(warmpod_parent())
    check_golden("egress-proxy/warmpod.json", req, warmpod_sync.sync(req, NOW, PROXY))
