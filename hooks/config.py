"""Operator-tunable settings. Read from the environment once by the HTTP layer (the Helm chart
sets the variables) and passed to the pure hooks as an argument, so hooks stay free of I/O."""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Mapping

from . import constants as C

ENV_PREFIX = "LLMSS_"


@dataclass(frozen=True)
class Config:
    # runtimeClassName given to pods of securityLevel "high" (the original hard-codes gvisor).
    high_security_runtime_class: str = "gvisor"
    # Registries RuntimeEnvironment images may come from; empty means any registry.
    image_registry_allowlist: tuple[str, ...] = ()
    # How long a sandbox that asked for a warm pod waits for one before a cold start.
    warm_pod_wait_seconds: int = 30
    # Lifetime given to sandboxes that do not set spec.lifetimeSeconds; 0 means unlimited.
    default_lifetime_seconds: int = 0
    # Where the API component runs: sandboxes accept traffic only from its pods.
    api_namespace: str = "llmsafespace"
    # Cluster DNS, the only in-cluster destination a sandbox may reach by default.
    dns_namespace: str = "kube-system"
    dns_pod_labels: tuple[tuple[str, str], ...] = (("k8s-app", "kube-dns"),)
    # NodeLocal DNSCache: the addresses pods send DNS queries to on their node (169.254.20.10, and
    # the kube-dns Service IP where node-local-dns binds it too), and its port. Neither is a kube-dns
    # pod, and link-local is excluded from every egress rule, so without them resolution fails.
    node_local_dns_addresses: tuple[str, ...] = ()
    node_local_dns_port: int = C.DNS_PORT
    # "kubernetes" emits standard NetworkPolicies only (the only flavour so far).
    network_policy_flavour: str = "kubernetes"
    # How domain egress rules are enforced (C.EGRESS_BACKENDS): networkpolicy, the default, opens
    # the public IPv4 space on the rule's ports (coarse: NetworkPolicy has no names); cilium,
    # clusternetworkpolicy and proxy (docs/egress-proxy.md) allow the listed names only.
    egress_backend: str = C.EGRESS_BACKEND_NETWORKPOLICY
    # StorageClass used for volumes whose retentionPolicy is Retain (its reclaimPolicy should be
    # Retain); empty means such sandboxes must name a class themselves.
    retain_storage_class: str = ""
    # Bound on a pod's terminationGracePeriodSeconds (spec.timeout, or the default for warm pods):
    # how long a deleted sandbox's code may keep running after SIGTERM.
    max_termination_grace_seconds: int = C.DEFAULT_MAX_TERMINATION_GRACE_SECONDS
    # Image of the per-namespace egress proxy (backend "proxy" only).
    egress_proxy_image: str = C.DEFAULT_EGRESS_PROXY_IMAGE
    # hostUsers: false (a user namespace per pod): "auto" for levels without a runtime class
    # (gVisor refuses it), "on" for all, "off" where the nodes cannot (Kubernetes >= 1.33, Linux
    # >= 6.3, containerd >= 2.0 or CRI-O >= 1.25; docs/install.md).
    user_namespaces: str = C.USER_NAMESPACES_AUTO

    @staticmethod
    def from_env(env: Mapping[str, str] | None = None) -> "Config":
        env = os.environ if env is None else env

        def get(name: str, default: str) -> str:
            return env.get(ENV_PREFIX + name, default).strip()

        def integer(name: str, default: int) -> int:
            raw = get(name, str(default))
            try:
                value = int(raw)
            except ValueError as exc:
                raise ValueError(f"{ENV_PREFIX}{name} must be an integer, got {raw!r}") from exc
            if value < 0:
                raise ValueError(f"{ENV_PREFIX}{name} must not be negative, got {value}")
            return value

        def positive(name: str, default: int) -> int:
            value = integer(name, default)
            if value < 1:
                raise ValueError(f"{ENV_PREFIX}{name} must be at least 1, got {value}")
            return value

        def port(name: str, default: int) -> int:
            value = integer(name, default)
            if not 1 <= value <= 65535:
                raise ValueError(f"{ENV_PREFIX}{name} must be a port (1-65535), got {value}")
            return value

        def addresses(name: str) -> tuple[str, ...]:
            out = set()
            for item in filter(None, (a.strip() for a in get(name, "").split(","))):
                try:
                    out.add(str(ipaddress.ip_address(item)))
                except ValueError:
                    raise ValueError(f"{ENV_PREFIX}{name} entries must be IP addresses, got {item!r}") from None
            return tuple(sorted(out))

        def pairs(name: str, default: str) -> tuple[tuple[str, str], ...]:
            out = []
            for item in filter(None, (p.strip() for p in get(name, default).split(","))):
                key, sep, value = item.partition("=")
                if not sep:
                    raise ValueError(f"{ENV_PREFIX}{name} entries must be key=value, got {item!r}")
                out.append((key.strip(), value.strip()))
            return tuple(sorted(out))

        defaults = Config()
        flavour = get("NETWORK_POLICY_FLAVOUR", defaults.network_policy_flavour)
        if flavour != "kubernetes":
            raise ValueError(f"{ENV_PREFIX}NETWORK_POLICY_FLAVOUR must be 'kubernetes', got {flavour!r}")
        backend = get("EGRESS_BACKEND", defaults.egress_backend)
        if backend not in C.EGRESS_BACKENDS:
            raise ValueError(f"{ENV_PREFIX}EGRESS_BACKEND must be one of {', '.join(C.EGRESS_BACKENDS)}, got {backend!r}")
        proxy_image = get("EGRESS_PROXY_IMAGE", defaults.egress_proxy_image)
        if not proxy_image:
            raise ValueError(f"{ENV_PREFIX}EGRESS_PROXY_IMAGE must name an image")
        user_namespaces = get("USER_NAMESPACES", defaults.user_namespaces).lower()
        if user_namespaces not in C.USER_NAMESPACES_MODES:
            raise ValueError(f"{ENV_PREFIX}USER_NAMESPACES must be one of {', '.join(C.USER_NAMESPACES_MODES)}, got {user_namespaces!r}")
        return Config(
            high_security_runtime_class=get("HIGH_SECURITY_RUNTIME_CLASS", defaults.high_security_runtime_class),
            image_registry_allowlist=tuple(
                sorted(filter(None, (r.strip() for r in get("IMAGE_REGISTRY_ALLOWLIST", "").split(","))))
            ),
            warm_pod_wait_seconds=integer("WARM_POD_WAIT_SECONDS", defaults.warm_pod_wait_seconds),
            default_lifetime_seconds=integer("DEFAULT_LIFETIME_SECONDS", defaults.default_lifetime_seconds),
            api_namespace=get("API_NAMESPACE", defaults.api_namespace),
            dns_namespace=get("DNS_NAMESPACE", defaults.dns_namespace),
            dns_pod_labels=pairs("DNS_POD_LABELS", "k8s-app=kube-dns"),
            node_local_dns_addresses=addresses("NODE_LOCAL_DNS_ADDRESSES"),
            node_local_dns_port=port("NODE_LOCAL_DNS_PORT", defaults.node_local_dns_port),
            network_policy_flavour=flavour,
            retain_storage_class=get("RETAIN_STORAGE_CLASS", ""),
            max_termination_grace_seconds=positive("MAX_TERMINATION_GRACE_SECONDS", defaults.max_termination_grace_seconds),
            egress_backend=backend,
            egress_proxy_image=proxy_image,
            user_namespaces=user_namespaces,
        )


DEFAULT_CONFIG = Config()
