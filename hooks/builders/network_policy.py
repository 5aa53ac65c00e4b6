"""NetworkPolicies of a sandbox. Default deny in both directions, then narrow allowances:
ingress from the API component on the sandbox port, DNS to the cluster DNS, the egress rules
the sandbox (and its profile) ask for, and ingress only when asked."""
from __future__ import annotations

import functools
import ipaddress
from typing import Any, Iterable

from .. import constants as C
from ..config import Config
from ..validators import NetworkRule, host_cidr

API_VERSION = "networking.k8s.io/v1"
# The original design's default ports for an egress rule that names none.
DEFAULT_EGRESS_PORTS = ((443, "TCP"), (80, "TCP"))
# IPv6 ranges a rule never reaches: private, link-local, and the spellings of IPv4 addresses.
EXCLUDED_CIDRS_V6 = C.PRIVATE_CIDRS_V6 + C.IPV4_EMBEDDING_CIDRS_V6
_PUBLIC_V6 = ipaddress.ip_network(C.PUBLIC_CIDR_V6)


def _policy(name: str, namespace: str, labels: dict[str, str], selector: dict[str, str], spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(sorted(labels.items()))},
        "spec": {"podSelector": {"matchLabels": dict(sorted(selector.items()))}, **spec},
    }


def default_deny(name: str, namespace: str, labels: dict[str, str], selector: dict[str, str]) -> dict[str, Any]:
    return _policy(name, namespace, labels, selector, {"policyTypes": ["Ingress", "Egress"]})


def api_peer(config: Config) -> dict[str, Any]:
    return {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": config.api_namespace}},
        "podSelector": {"matchLabels": {C.LABEL_APP: C.APP_NAME, C.LABEL_COMPONENT: C.COMPONENT_API}},
    }


def api_access(name: str, namespace: str, labels: dict[str, str], selector: dict[str, str], config: Config) -> dict[str, Any]:
    port = [{"port": C.SANDBOX_PORT, "protocol": "TCP"}]
    return _policy(name, namespace, labels, selector, {
        "ingress": [{"from": [api_peer(config)], "ports": port}],
        # The sandbox may answer the API and call back into it, as in the original design.
        "egress": [{"to": [api_peer(config)]}],
        "policyTypes": ["Ingress", "Egress"],
    })


def _dns_ports(port: int) -> list[dict[str, Any]]:
    return [{"port": port, "protocol": "UDP"}, {"port": port, "protocol": "TCP"}]


def dns(name: str, namespace: str, labels: dict[str, str], selector: dict[str, str], config: Config) -> dict[str, Any]:
    """Cluster DNS pods, plus the node-local DNS cache's addresses when the operator names them
    (single addresses, on the DNS port only: nothing else link-local opens)."""
    rules: list[dict[str, Any]] = [{
        "to": [{
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": config.dns_namespace}},
            "podSelector": {"matchLabels": dict(config.dns_pod_labels)},
        }],
        "ports": _dns_ports(C.DNS_PORT),
    }]
    if config.node_local_dns_addresses:
        rules.append({
            "to": [{"ipBlock": {"cidr": host_cidr(a)}} for a in config.node_local_dns_addresses],
            "ports": _dns_ports(config.node_local_dns_port),
        })
    return _policy(name, namespace, labels, selector, {"egress": rules, "policyTypes": ["Egress"]})


def rule_ports(rule: NetworkRule) -> tuple[tuple[int, str], ...]:
    """(port, protocol) pairs of an egress rule, sorted; the default ports when it names none."""
    return tuple(sorted({(p.port, p.protocol) for p in rule.ports}) or sorted(DEFAULT_EGRESS_PORTS))


def _ports(rule: NetworkRule) -> list[dict[str, Any]]:
    return [{"port": port, "protocol": proto} for port, proto in rule_ports(rule)]


def ip_block(rule: NetworkRule) -> dict[str, Any]:
    """A domain cannot be expressed in a NetworkPolicy: it becomes the public IPv4 space (the
    original design's rule). A CIDR is kept, minus any private range inside it (IPv4 and IPv6:
    ::/0 used to open fc00::/7 and fe80::/10, i.e. other pods and the metadata service on
    dual-stack clusters; it now means global unicast, see _narrowed)."""
    cidr = _narrowed(rule.cidr or C.PUBLIC_CIDR)
    excluded = list(_excluded(cidr))
    return {"cidr": cidr, "except": excluded} if excluded else {"cidr": cidr}


@functools.lru_cache(maxsize=1024)
def _narrowed(cidr: str) -> str:
    """Cached like _excluded (parsing the network was ~10 % of a running Sandbox's sync with two
    egress rules). An IPv6 rule wider than global unicast (::/0) becomes global unicast: its IPv4-mapped part
    cannot be excepted (the API server refuses ::ffff:0:0/96 in an ipBlock), and the rest outside
    2000::/3 is private, link-local or special-purpose, never the public internet."""
    net = ipaddress.ip_network(cidr, strict=False)
    return C.PUBLIC_CIDR_V6 if net.version == 6 and _PUBLIC_V6.subnet_of(net) else cidr  # type: ignore[arg-type]


@functools.lru_cache(maxsize=1024)
def _excluded(cidr: str) -> tuple[str, ...]:
    """The private ranges inside `cidr`, sorted. Cached: parsing the networks was 40 % of a
    Sandbox sync with egress rules (bench/, docs/benchmark.md); a pure function of the string."""
    net = ipaddress.ip_network(cidr, strict=False)
    private = C.PRIVATE_CIDRS if net.version == 4 else EXCLUDED_CIDRS_V6
    return tuple(sorted(p for p in private if ipaddress.ip_network(p).subnet_of(net)))  # type: ignore[arg-type]


# Egress backend "proxy" (docs/egress-proxy.md): a domain rule becomes the namespace's egress
# proxy on its port; the proxy enforces the name and the rule's ports.
PROXY_PEER: dict[str, Any] = {"podSelector": {"matchLabels": {C.LABEL_APP: C.APP_NAME, C.LABEL_COMPONENT: C.COMPONENT_EGRESS_PROXY}}}
PROXY_PORTS: list[dict[str, Any]] = [{"port": C.EGRESS_PROXY_PORT, "protocol": "TCP"}]


def egress(name: str, namespace: str, labels: dict[str, str], selector: dict[str, str], rules: Iterable[NetworkRule],
           via_proxy: bool = False) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    for rule in rules:
        if via_proxy and rule.domain is not None:
            entry = {"to": [dict(PROXY_PEER)], "ports": [dict(p) for p in PROXY_PORTS]}
        else:
            entry = {"to": [{"ipBlock": ip_block(rule)}], "ports": _ports(rule)}
        if entry not in out:
            out.append(entry)
    return _policy(name, namespace, labels, selector, {"egress": out, "policyTypes": ["Egress"]})


def ingress(name: str, namespace: str, labels: dict[str, str], selector: dict[str, str], rules: Iterable[NetworkRule], open_port: bool) -> dict[str, Any]:
    """networkAccess.ingress opens the sandbox port to any source; profile ingress rules open
    the ports they list to the CIDRs they list."""
    out: list[dict[str, Any]] = []
    if open_port:
        out.append({"ports": [{"port": C.SANDBOX_PORT, "protocol": "TCP"}]})
    for rule in rules:
        entry = {"from": [{"ipBlock": ip_block(rule)}], "ports": _ports(rule) if rule.ports else [{"port": C.SANDBOX_PORT, "protocol": "TCP"}]}
        if entry not in out:
            out.append(entry)
    return _policy(name, namespace, labels, selector, {"ingress": out, "policyTypes": ["Ingress"]})
