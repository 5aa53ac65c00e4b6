"""The egress proxy of a tenant namespace (LLMSS_EGRESS_BACKEND=proxy, docs/egress-proxy.md):
attachments of the tenant-namespace decorator. A ConfigMap with the generated squid.conf, a
Deployment running squid under the restricted Pod Security profile (non-root, read-only root
filesystem with emptyDirs for squid's runtime directories, every capability dropped, seccomp
RuntimeDefault, no service-account token), a Service, and two NetworkPolicies: only pods serving a
sandbox of the namespace reach the proxy, and the proxy reaches only DNS and public addresses on
the listed ports."""
from __future__ import annotations

from typing import Any

from .. import constants as C
from .. import egress_proxy as ep
from ..config import Config
from ..validators import NetworkRule
from . import network_policy as np
from .pod import restricted_security_context

CONTAINER = "squid"
SQUID_BINARY = "/usr/sbin/squid"
SCRATCH_SIZE = "64Mi"
# squid's writable directories (the root filesystem is read-only): runtime files, spool, logs.
SCRATCH_DIRS = (("run", C.EGRESS_PROXY_RUN_DIR), ("spool", C.EGRESS_PROXY_SPOOL_DIR), ("log", "/var/log/squid"))
# Public address space the proxy may connect to: IPv4 but the ranges sandboxes never reach, and
# IPv6 global unicast (2000::/3, minus 6to4). Not ::/0: its exceptions would include
# ::ffff:0:0/96, which the API server refuses in an ipBlock ("must not have an IPv4-mapped IPv6
# address", found by tests/e2e/test_e2e_egress_proxy.py).
PUBLIC_RULES = (NetworkRule(cidr=C.PUBLIC_CIDR), NetworkRule(cidr=C.PUBLIC_CIDR_V6))


def labels() -> dict[str, str]:
    return {C.LABEL_APP: C.APP_NAME, C.LABEL_COMPONENT: C.COMPONENT_EGRESS_PROXY, C.LABEL_MANAGED_BY: C.MANAGED_BY}


def selector() -> dict[str, str]:
    """The proxy's pods; also the peer a sandbox's egress policy names."""
    return {C.LABEL_APP: C.APP_NAME, C.LABEL_COMPONENT: C.COMPONENT_EGRESS_PROXY}


def _metadata(name: str, ns: str) -> dict[str, Any]:
    return {"name": name, "namespace": ns, "labels": labels()}


def config_map(ns: str, conf: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(C.EGRESS_PROXY_NAME, ns),
        "data": {C.EGRESS_PROXY_CONFIG_FILE: conf},
    }


def deployment(ns: str, conf: str, config: Config) -> dict[str, Any]:
    probe = {"tcpSocket": {"port": C.EGRESS_PROXY_PORT_NAME}, "periodSeconds": 10}
    mounts = [{"name": "config", "mountPath": C.EGRESS_PROXY_CONFIG_DIR, "readOnly": True}]
    volumes: list[dict[str, Any]] = [{"name": "config", "configMap": {"name": C.EGRESS_PROXY_NAME}}]
    for vol, path in SCRATCH_DIRS:
        mounts.append({"name": vol, "mountPath": path})
        volumes.append({"name": vol, "emptyDir": {"sizeLimit": SCRATCH_SIZE}})
    container = {
        "name": CONTAINER,
        "image": config.egress_proxy_image,
        "imagePullPolicy": "IfNotPresent",
        # -N: foreground, one process; the image's entrypoint (which expects root) is bypassed.
        "command": [SQUID_BINARY, "-N", "-f", f"{C.EGRESS_PROXY_CONFIG_DIR}/{C.EGRESS_PROXY_CONFIG_FILE}"],
        "ports": [{"name": C.EGRESS_PROXY_PORT_NAME, "containerPort": C.EGRESS_PROXY_PORT, "protocol": "TCP"}],
        "resources": {k: dict(v) for k, v in C.EGRESS_PROXY_RESOURCES.items()},
        "securityContext": restricted_security_context(C.EGRESS_PROXY_UID, C.EGRESS_PROXY_UID, {"type": C.SECCOMP_RUNTIME_DEFAULT}),
        "readinessProbe": {**probe, "initialDelaySeconds": 2},
        "livenessProbe": {**probe, "initialDelaySeconds": 10},
        "volumeMounts": mounts,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(C.EGRESS_PROXY_NAME, ns),
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 2,
            "selector": {"matchLabels": selector()},
            # A new allow-list starts a new pod (squid reads its configuration once); the old one
            # serves until the new one is ready.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": selector(),
                    "annotations": {C.ANNOTATION_EGRESS_PROXY_CONFIG_HASH: ep.config_hash(conf)},
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "containers": [container],
                    "enableServiceLinks": False,
                    "securityContext": {
                        "fsGroup": C.EGRESS_PROXY_UID,
                        "runAsGroup": C.EGRESS_PROXY_UID,
                        "runAsNonRoot": True,
                        "runAsUser": C.EGRESS_PROXY_UID,
                        "seccompProfile": {"type": C.SECCOMP_RUNTIME_DEFAULT},
                    },
                    "terminationGracePeriodSeconds": 10,
                    "volumes": volumes,
                },
            },
        },
    }


def service(ns: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(C.EGRESS_PROXY_NAME, ns),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(),
            "ports": [{"name": C.EGRESS_PROXY_PORT_NAME, "port": C.EGRESS_PROXY_PORT,
                       "targetPort": C.EGRESS_PROXY_PORT_NAME, "protocol": "TCP"}],
        },
    }


def ingress_policy(ns: str) -> dict[str, Any]:
    """Only pods serving a sandbox reach the proxy, on its port: a sandbox's own pods (its UID
    label) and warm pods (their WarmPod's UID label, which a warm pod carries from its creation,
    so a sandbox served by one reaches the proxy before the pod is relabelled with its UID).
    Users set neither label. An idle warm pod is let in here but cannot leave: its own default
    deny, and no sandbox's egress policy selects it yet."""
    def pods_with(key: str) -> dict[str, Any]:
        return {"podSelector": {"matchExpressions": [{"key": key, "operator": "Exists"}], "matchLabels": {C.LABEL_APP: C.APP_NAME}}}
    return {
        "apiVersion": np.API_VERSION,
        "kind": "NetworkPolicy",
        "metadata": _metadata(f"{C.EGRESS_PROXY_NAME}-ingress", ns),
        "spec": {
            "podSelector": {"matchLabels": selector()},
            "ingress": [{"from": [pods_with(C.LABEL_SANDBOX_UID), pods_with(C.LABEL_WARMPOD_UID)],
                         "ports": [{"port": C.EGRESS_PROXY_PORT, "protocol": "TCP"}]}],
            "policyTypes": ["Ingress"],
        },
    }


def egress_policy(ns: str, ports: tuple[int, ...], config: Config) -> dict[str, Any]:
    """DNS to the cluster resolver (as a sandbox's), and public addresses on the listed ports only
    (none listed: DNS only)."""
    rules = np.dns(f"{C.EGRESS_PROXY_NAME}-egress", ns, labels(), selector(), config)["spec"]["egress"]
    if ports:
        rules.append({
            "to": [{"ipBlock": np.ip_block(rule)} for rule in PUBLIC_RULES],
            "ports": [{"port": port, "protocol": "TCP"} for port in ports],
        })
    return {
        "apiVersion": np.API_VERSION,
        "kind": "NetworkPolicy",
        "metadata": _metadata(f"{C.EGRESS_PROXY_NAME}-egress", ns),
        "spec": {"podSelector": {"matchLabels": selector()}, "egress": rules, "policyTypes": ["Egress"]},
    }


def attachments(ns: str, allowed: tuple[ep.Allowed, ...], config: Config) -> list[dict[str, Any]]:
    conf = ep.squid_conf(allowed, ns)
    return [
        config_map(ns, conf),
        deployment(ns, conf, config),
        service(ns),
        ingress_policy(ns),
        egress_policy(ns, ep.allowed_ports(allowed), config),
    ]
