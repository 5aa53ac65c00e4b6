"""ClusterNetworkPolicy of a sandbox (egress backend `clusternetworkpolicy`; network-policy-api
policy.networking.k8s.io/v1alpha2, experimental channel). One Admin-tier policy per sandbox with
domain egress rules, its subject the sandbox's pods, its egress rules in order of precedence:

  1. Accept lookups to the cluster DNS (and the node-local cache's addresses): the
     implementation learns a name's addresses from them, so they come first;
  2. Accept the domain names (at most 25 per rule, Accept is the only action domainNames allow),
     on each rule's ports;
  3. Pass the API component and the sandbox's CIDR rules to the NetworkPolicy tier, which keeps
     deciding them as before (with its private-range exceptions);
  4. Deny everything else, so no NetworkPolicy in the tenant namespace can widen the list.

The object is cluster-scoped, so a namespaced Sandbox cannot own it: the tenant-namespace
decorator emits it (hooks/namespace_sync.py) from the egress rules the sandbox publishes in its
status, owned by the Namespace; it goes when the sandbox or the namespace goes."""
from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence, TypeVar

from .. import constants as C
from ..config import Config
from ..validators import NetworkRule, host_cidr
from .network_policy import api_peer, rule_ports

API_VERSION = "policy.networking.k8s.io/v1alpha2"
KIND = "ClusterNetworkPolicy"
TIER = "Admin"
NAME_PREFIX = "llmsafespace-sandbox-"
EVERYWHERE = ["0.0.0.0/0", "::/0"]

T = TypeVar("T")


class TooManyRules(ValueError):
    """The sandbox's egress rules need more rules than one ClusterNetworkPolicy holds."""


def policy_name(sandbox_uid: str) -> str:
    # Cluster-scoped: the UID is unique across namespaces and fits the name's 253 characters.
    return f"{NAME_PREFIX}{sandbox_uid}"


def _chunks(items: Sequence[T], size: int = C.CNP_MAX_ITEMS) -> list[list[T]]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def _protocols(pairs: Iterable[tuple[int, str]]) -> list[dict[str, Any]]:
    return [{proto.lower(): {"destinationPort": {"number": port}}} for port, proto in pairs]


def _namespace(ns: str) -> dict[str, Any]:
    return {"matchLabels": {"kubernetes.io/metadata.name": ns}}


def _dns_rules(config: Config) -> list[dict[str, Any]]:
    dns_ports = [(C.DNS_PORT, "UDP"), (C.DNS_PORT, "TCP")]
    rules: list[dict[str, Any]] = [{
        "name": "dns", "action": "Accept",
        "to": [{"pods": {"namespaceSelector": _namespace(config.dns_namespace),
                         "podSelector": {"matchLabels": dict(config.dns_pod_labels)}}}],
        "protocols": _protocols(dns_ports),
    }]
    if config.node_local_dns_addresses:
        rules.append({
            "name": "node-local-dns", "action": "Accept",
            "to": [{"networks": [host_cidr(a) for a in config.node_local_dns_addresses]}],
            "protocols": _protocols([(config.node_local_dns_port, "UDP"), (config.node_local_dns_port, "TCP")]),
        })
    return rules


def _grouped(rules: Iterable[NetworkRule], domains: bool) -> list[tuple[tuple[tuple[int, str], ...], list[str]]]:
    """Domains (or CIDRs) by the ports they are allowed on, both sorted."""
    groups: dict[tuple[tuple[int, str], ...], set[str]] = {}
    for rule in rules:
        value = rule.domain if domains else rule.cidr
        if value:
            groups.setdefault(rule_ports(rule), set()).add(value)
    return [(ports, sorted(values)) for ports, values in sorted(groups.items())]


def egress_rules(rules: Sequence[NetworkRule], config: Config) -> list[dict[str, Any]]:
    """The policy's egress rules; raises TooManyRules past the API's 25."""
    out = _dns_rules(config)
    for kind, action, peer, domains in (("domains", "Accept", "domainNames", True), ("cidrs", "Pass", "networks", False)):
        if not domains:
            out.append({"name": "api", "action": "Pass", "to": [{"pods": api_peer(config)}]})
        number = 0
        for ports, values in _grouped(rules, domains):
            for names in _chunks(values):
                for protocols in _chunks(_protocols(ports)):
                    number += 1
                    out.append({"name": f"{kind}-{number}", "action": action, "to": [{peer: names}], "protocols": protocols})
    out.append({"name": "deny", "action": "Deny", "to": [{"networks": EVERYWHERE}]})
    if len(out) > C.CNP_MAX_ITEMS:
        raise TooManyRules(
            f"the egress rules need {len(out)} ClusterNetworkPolicy rules (DNS, up to {C.CNP_MAX_ITEMS} names or networks "
            f"per distinct port list, API access, the final deny); at most {C.CNP_MAX_ITEMS} fit: use fewer distinct port lists")
    return out


def sandbox_policy(namespace: str, uid: str, labels: dict[str, str], selector: dict[str, str],
                   rules: Sequence[NetworkRule], config: Config) -> Optional[dict[str, Any]]:
    """The policy of one sandbox, or None when no rule names a domain (its NetworkPolicies enforce
    everything else)."""
    if not any(r.domain for r in rules):
        return None
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": policy_name(uid), "labels": dict(sorted(labels.items()))},
        "spec": {
            "tier": TIER,
            "priority": C.CNP_PRIORITY,
            "subject": {"pods": {"namespaceSelector": _namespace(namespace),
                                 "podSelector": {"matchLabels": dict(sorted(selector.items()))}}},
            "egress": egress_rules(rules, config),
        },
    }
