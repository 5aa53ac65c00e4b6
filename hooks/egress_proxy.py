"""The egress proxy backend's configuration (LLMSS_EGRESS_BACKEND=proxy, docs/egress-proxy.md):
from the Sandboxes of a tenant namespace (and the profiles they name), the allow-list of
(domain, TCP ports) and the squid.conf that enforces it, plus the proxy variables sandbox pods get.

Pure functions, no I/O. What squid is told, in order:
  1. deny the cache manager and any destination written as an IP address (a name is required);
  2. deny every name not on the allow-list (before any DNS lookup);
  3. deny a listed name that resolves into a private, loopback or link-local range (a public name
     pointed at 10.x or 169.254.169.254 would otherwise reach the cluster or the cloud metadata);
  4. allow each listed name on its listed ports, HTTP CONNECT (HTTPS and any TLS) and plain HTTP alike;
  5. deny everything else.
Names match case-insensitively and exactly: `pypi.org` is pypi.org only. A wildcard `*.example.com`
matches every name below example.com, at any depth (a.example.com, a.b.example.com), never
example.com itself; write both rules to admit both. Destination names are never reverse-resolved
(`-n`): a PTR record cannot make an address look like a listed name."""
from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Optional

from . import constants as C
from .config import Config
from .meta import namespace as namespace_of
from .meta import objects
from .resolve import ResolutionError, find_profile
from .validators import NetworkRule, SandboxSpec, SpecError, parse_spec

# The original design's ports for an egress rule that names none (as hooks/builders/network_policy.py).
DEFAULT_PORTS: tuple[int, ...] = (80, 443)
# Destinations squid never connects to, whatever name led there: the private ranges sandboxes
# never reach (C.PRIVATE_CIDRS, C.PRIVATE_CIDRS_V6), plus loopback and "this network", which no
# NetworkPolicy can block since they never leave the proxy's pod. Not the IPv6 spellings of IPv4
# (C.IPV4_EMBEDDING_CIDRS_V6): squid keeps every IPv4 address as ::ffff:a.b.c.d, so ::ffff:0:0/96
# would be all of IPv4; the proxy's NetworkPolicy excludes them instead.
DENIED_DESTINATIONS: tuple[str, ...] = ("0.0.0.0/8", "127.0.0.0/8", *C.PRIVATE_CIDRS, "::1/128", *C.PRIVATE_CIDRS_V6)
WILDCARD_PREFIX = "*."


@dataclass(frozen=True)
class Allowed:
    """One name of the allow-list: `pypi.org` or `*.example.com`, and the TCP ports it may use."""

    domain: str
    ports: tuple[int, ...]


@dataclass(frozen=True)
class SquidSettings:
    """Where squid listens and keeps its files. The defaults are the proxy pod's (its emptyDirs,
    hooks/builders/egress_proxy.py). Tests override them to run the real squid on loopback
    (tests/test_egress_proxy_squid.py): a 127.0.0.1 port, temporary directories, squid's files
    under the unpacked package (.tools/squid), a hosts file naming the test's upstream, and the
    denied ranges without 127.0.0.0/8, where that upstream listens. Nothing else of the configuration can be changed."""

    http_port: str = str(C.EGRESS_PROXY_PORT)
    run_dir: str = C.EGRESS_PROXY_RUN_DIR
    spool_dir: str = C.EGRESS_PROXY_SPOOL_DIR
    hosts_file: Optional[str] = None  # None: squid's default, /etc/hosts
    install_prefix: Optional[str] = None  # None: the image's compiled-in paths under /usr
    denied_destinations: tuple[str, ...] = DENIED_DESTINATIONS


# ---------------------------------------------------------------------------------------------
# The allow-list


def rule_ports(rule: NetworkRule) -> tuple[int, ...]:
    """The TCP ports of a domain rule (its default ports when it lists none). UDP ports cannot go
    through an HTTP proxy: they are dropped (QUIC falls back to TCP)."""
    if not rule.ports:
        return DEFAULT_PORTS
    return tuple(sorted({p.port for p in rule.ports if p.protocol == "TCP"}))


def allow_list(rules: Iterable[NetworkRule]) -> tuple[Allowed, ...]:
    """Domain rules merged per name (their ports united), sorted; CIDR rules are not the proxy's
    (the sandbox's NetworkPolicy admits them directly)."""
    ports: dict[str, set[int]] = {}
    for rule in rules:
        if rule.domain is None:
            continue
        tcp = rule_ports(rule)
        if tcp:
            ports.setdefault(rule.domain.lower(), set()).update(tcp)
    return tuple(Allowed(domain, tuple(sorted(ports[domain]))) for domain in sorted(ports))


def sandbox_rules(sandbox: Mapping[str, Any], profiles: list[Mapping[str, Any]]) -> list[NetworkRule]:
    """A sandbox's egress rules and its profile's, as hooks/resolve.py merges them. A spec that
    does not parse, or a profile that is missing or invalid, contributes nothing: the sandbox
    itself reports why and gets no pod, and the proxy fails closed."""
    try:
        spec = parse_spec(SandboxSpec, dict(sandbox))
    except SpecError:
        return []
    rules = list(spec.network_access.egress)
    try:
        profile = find_profile(spec, namespace_of(sandbox), profiles)
    except ResolutionError:
        return rules
    if profile is not None:
        for policy in profile[1].network_policies:
            if policy.type == "egress":
                rules.extend(policy.rules)
    return rules


def namespace_allow_list(ns: str, related: Any) -> tuple[Allowed, ...]:
    """The allow-list of a tenant namespace: every rule of its sandboxes (the decorator's related
    Sandboxes and SandboxProfiles). The namespace is the unit: any sandbox that may reach the proxy
    may reach every name some sandbox of the namespace lists (docs/egress-proxy.md)."""
    profiles = objects(related, C.GVK_PROFILE)
    rules: list[NetworkRule] = []
    for sandbox in objects(related, C.GVK_SANDBOX):
        if namespace_of(sandbox) == ns:
            rules.extend(sandbox_rules(sandbox, profiles))
    return allow_list(rules)


# ---------------------------------------------------------------------------------------------
# squid.conf


def wildcard_regex(domain: str) -> str:
    """`*.example.com` as a squid dstdom_regex: one or more labels, then the suffix."""
    suffix = domain[len(WILDCARD_PREFIX):]
    return r"^([^.]+\.)+" + re.escape(suffix) + "$"


def _groups(allowed: tuple[Allowed, ...]) -> list[tuple[tuple[int, ...], list[str], list[str]]]:
    """(ports, exact names, wildcard patterns) per distinct port set, sorted by ports."""
    by_ports: dict[tuple[int, ...], tuple[list[str], list[str]]] = {}
    for entry in allowed:
        names, patterns = by_ports.setdefault(entry.ports, ([], []))
        (patterns if entry.domain.startswith(WILDCARD_PREFIX) else names).append(entry.domain)
    return [(ports, *by_ports[ports]) for ports in sorted(by_ports)]


def squid_conf(allowed: tuple[Allowed, ...], ns: str, settings: SquidSettings = SquidSettings()) -> str:
    names = [a.domain for a in allowed if not a.domain.startswith(WILDCARD_PREFIX)]
    patterns = [wildcard_regex(a.domain) for a in allowed if a.domain.startswith(WILDCARD_PREFIX)]
    lines = [
        f"# Generated by {C.MANAGED_BY} for tenant namespace {ns} (docs/egress-proxy.md). Do not edit:",
        "# the tenant-namespace decorator rewrites it from the namespace's sandboxes.",
        f"http_port {settings.http_port}",
        f"pid_filename {settings.run_dir}/squid.pid",
        f"coredump_dir {settings.spool_dir}",
        # A forwarder, not a cache: nothing is stored, no state files, logs go to the container's streams.
        "cache deny all",
        "cache_mem 8 MB",
        "access_log stdio:/dev/stdout",
        "cache_log /dev/stderr",
        "cache_store_log none",
        "logfile_rotate 0",
        "netdb_filename none",
        "pinger_enable off",
        "icp_port 0",
        "htcp_port 0",
        # Nothing about the sandbox or the proxy reaches the destination.
        "via off",
        "forwarded_for delete",
        "httpd_suppress_version_string on",
        f"visible_hostname {C.EGRESS_PROXY_NAME}",
        "shutdown_lifetime 5 seconds",
    ]
    if settings.hosts_file is not None:
        lines.append(f"hosts_file {settings.hosts_file}")
    if settings.install_prefix is not None:
        share = f"{settings.install_prefix}/usr/share/squid"
        lines += [f"mime_table {share}/mime.conf", f"icon_directory {share}/icons", f"error_directory {share}/errors/templates",
                  f"unlinkd_program {settings.install_prefix}/usr/lib/squid/unlinkd"]
    lines += [
        "",
        "# A name is required: no IPv4 literal (digits and dots), no IPv6 literal (any colon).",
        r"acl llmss_ip_literal dstdom_regex -n ^[0-9.]+$ :",
        "# Private, loopback and link-local destinations, whatever name resolves there.",
        f"acl llmss_denied_dst dst {' '.join(settings.denied_destinations)}",
    ]
    if names:
        lines.append(f"acl llmss_listed_names dstdomain -n {' '.join(names)}")
    if patterns:
        lines.append(f"acl llmss_listed_patterns dstdom_regex -n -i {' '.join(patterns)}")
    groups = _groups(allowed)
    if groups:
        lines.append("# The allow-list: names (exact, or *.suffix as a regex) per set of TCP ports.")
    for index, (ports, group_names, group_patterns) in enumerate(groups):
        lines.append(f"acl llmss_ports_{index} port {' '.join(str(p) for p in ports)}")
        if group_names:
            lines.append(f"acl llmss_names_{index} dstdomain -n {' '.join(group_names)}")
        if group_patterns:
            lines.append(f"acl llmss_patterns_{index} dstdom_regex -n -i {' '.join(wildcard_regex(d) for d in group_patterns)}")
    lines += ["", "http_access deny manager", "http_access deny llmss_ip_literal"]
    if allowed:
        # Unlisted names are refused before squid resolves them.
        unlisted = " ".join(f"!{acl}" for acl, present in (("llmss_listed_names", names), ("llmss_listed_patterns", patterns)) if present)
        lines.append(f"http_access deny {unlisted}")
        lines.append("http_access deny llmss_denied_dst")
        for index, (_, group_names, group_patterns) in enumerate(groups):
            if group_names:
                lines.append(f"http_access allow llmss_names_{index} llmss_ports_{index}")
            if group_patterns:
                lines.append(f"http_access allow llmss_patterns_{index} llmss_ports_{index}")
    lines += ["http_access deny all", ""]
    return "\n".join(lines)


def config_hash(conf: str) -> str:
    return "sha256:" + hashlib.sha256(conf.encode()).hexdigest()


def allowed_ports(allowed: tuple[Allowed, ...]) -> tuple[int, ...]:
    """Every port some name may use: what the proxy's own NetworkPolicy opens to the internet."""
    return tuple(sorted({p for a in allowed for p in a.ports}))


# ---------------------------------------------------------------------------------------------
# What sandbox pods are told


def proxy_url(ns: str) -> str:
    return f"http://{C.EGRESS_PROXY_NAME}.{ns}.svc:{C.EGRESS_PROXY_PORT}"


def pod_env(ns: str, config: Config) -> tuple[dict[str, str], ...]:
    """The proxy variables of a sandbox or warm pod's container, with the egress backend "proxy"
    (none otherwise), upper- and lower-case (curl and Python read the lower-case ones, Go and Java
    tools the upper-case ones). The same for every pod of the namespace, so warm pods carry them
    from creation, before any sandbox is assigned (a running pod's env cannot change)."""
    if config.egress_backend != C.EGRESS_BACKEND_PROXY:
        return ()
    url, no_proxy = proxy_url(ns), ",".join(C.EGRESS_PROXY_NO_PROXY)
    pairs = {"HTTPS_PROXY": url, "HTTP_PROXY": url, "NO_PROXY": no_proxy}
    return tuple({"name": k, "value": v} for k, v in sorted([*pairs.items(), *((k.lower(), v) for k, v in pairs.items())]))
