"""CiliumNetworkPolicy of a sandbox (egress backend `cilium`): its domain egress rules as
`toFQDNs`, each on the rule's ports, and the DNS rule that sends the sandbox's lookups through
Cilium's DNS proxy, which is how Cilium learns the addresses a name may reach. Only the cluster
DNS (and the node-local cache's addresses) are peers of that rule. The sandbox's Kubernetes
NetworkPolicies (default deny, API access, DNS, CIDR rules) stay as they are; Cilium allows the
union of both kinds, so domain rules must not appear in a NetworkPolicy as well."""
from __future__ import annotations

from typing import Any, Iterable, Optional

from .. import constants as C
from ..config import Config
from ..validators import NetworkRule, host_cidr
from .network_policy import rule_ports

API_VERSION = "cilium.io/v2"
KIND = "CiliumNetworkPolicy"
# Ports per toPorts entry (the CRD's maxItems on toPorts[].ports).
MAX_PORTS = 40
# Every name may be looked up: the lookups of the listed names must pass the proxy, and the
# Kubernetes DNS policy allows every lookup at L4 anyway (Cilium treats an L4-only allow on the
# DNS port as "any name"), so a narrower list here would restrict nothing.
DNS_ANY_NAME = "*"
# Cilium's selector for a pod's namespace.
NAMESPACE_LABEL = "k8s:io.kubernetes.pod.namespace"


def fqdn_selector(domain: str) -> dict[str, str]:
    """A name, or for `*.example.com` Cilium's pattern (its `*` stands for one label's characters:
    a.example.com matches, a.b.example.com and example.com do not)."""
    return {"matchPattern": domain} if domain.startswith("*.") else {"matchName": domain}


def _to_ports(pairs: Iterable[tuple[int, str]], dns: bool = False) -> list[dict[str, Any]]:
    ports = [{"port": str(port), "protocol": proto} for port, proto in pairs]
    out = []
    for i in range(0, len(ports), MAX_PORTS):
        entry: dict[str, Any] = {"ports": ports[i:i + MAX_PORTS]}
        if dns:
            entry["rules"] = {"dns": [{"matchPattern": DNS_ANY_NAME}]}
        out.append(entry)
    return out


def _dns_rules(config: Config) -> list[dict[str, Any]]:
    """Lookups to the cluster DNS pods, and to the node-local cache's addresses when named."""
    endpoint = {NAMESPACE_LABEL: config.dns_namespace, **{f"k8s:{k}": v for k, v in config.dns_pod_labels}}
    rules: list[dict[str, Any]] = [{
        "toEndpoints": [{"matchLabels": dict(sorted(endpoint.items()))}],
        "toPorts": _to_ports([(C.DNS_PORT, "ANY")], dns=True),
    }]
    if config.node_local_dns_addresses:
        rules.append({
            "toCIDR": [host_cidr(a) for a in config.node_local_dns_addresses],
            "toPorts": _to_ports([(config.node_local_dns_port, "ANY")], dns=True),
        })
    return rules


def fqdn_policy(name: str, namespace: str, labels: dict[str, str], selector: dict[str, str],
                rules: Iterable[NetworkRule], config: Config) -> Optional[dict[str, Any]]:
    """The policy, or None when no rule names a domain (nothing to allow by name)."""
    groups: dict[tuple[tuple[int, str], ...], set[str]] = {}
    for rule in rules:
        if rule.domain:
            groups.setdefault(rule_ports(rule), set()).add(rule.domain)
    if not groups:
        return None
    egress = _dns_rules(config) + [
        {"toFQDNs": [fqdn_selector(d) for d in sorted(domains)], "toPorts": _to_ports(ports)}
        for ports, domains in sorted(groups.items())
    ]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace, "labels": dict(sorted(labels.items()))},
        "spec": {"endpointSelector": {"matchLabels": dict(sorted(selector.items()))}, "egress": egress},
    }
