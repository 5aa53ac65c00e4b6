"""Operator-tunable settings, validated once at start-up.

`Config` holds what the hooks read (the LLMSS_* variables the Helm chart sets) and is passed to the
pure hooks as an argument, so hooks stay free of I/O; `ServerSettings` holds the variables of the
server around them (gunicorn's WORKERS and GUNICORN_TIMEOUT, metrics and log level). `check_env`
validates both: gunicorn's on_starting hook calls it, so a bad value stops the server before any
worker starts, with one line `VARIABLE: rule; got 'value'` (docs/install.md lists the rules).
The Helm chart's values.schema.json refuses the same values (tests/test_chart.py)."""
from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
from typing import Any, Literal, Mapping, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from . import constants as C
from .meta import is_dns_label, is_dns_subdomain, label_value_problem, qualified_name_problem

ENV_PREFIX = "LLMSS_"
DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024
# A smaller body limit refuses routine requests (one Kubernetes object may be 1.5 MiB).
MIN_MAX_REQUEST_BYTES = 1024 * 1024
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# The chart's pattern for a registry host, optionally :port and /path prefix.
_REGISTRY = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9._/-]*)?")


class ConfigError(ValueError):
    """A setting the server must not start with; the message is one line naming the variable."""


def _items(value: Any) -> Any:
    """A comma-separated variable (what the environment holds) as its non-empty items."""
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


class Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # runtimeClassName given to pods of securityLevel "high" (the original hard-codes gvisor).
    high_security_runtime_class: str = "gvisor"
    # Registries RuntimeEnvironment images may come from; empty means any registry.
    image_registry_allowlist: tuple[str, ...] = ()
    # How long a sandbox that asked for a warm pod waits for one before a cold start.
    warm_pod_wait_seconds: int = Field(30, ge=0)
    # How long a desired child may stay unobserved before the sandbox reports it refused
    # (ChildNotCreated, with likely causes): Metacontroller says why only in an event and its log.
    # Shorter reports sooner; too short reports slow admission webhooks as refusals.
    child_create_grace_seconds: int = Field(C.DEFAULT_CHILD_CREATE_GRACE_SECONDS, ge=1, le=3600)
    # Lifetime given to sandboxes that do not set spec.lifetimeSeconds; 0 means unlimited.
    default_lifetime_seconds: int = Field(0, ge=0)
    # Where the API component runs: sandboxes accept traffic only from its pods.
    api_namespace: str = "llmsafespace"
    # Cluster DNS, the only in-cluster destination a sandbox may reach by default. An empty
    # selector would open DNS to every pod of the namespace, so at least one label is required.
    dns_namespace: str = "kube-system"
    dns_pod_labels: tuple[tuple[str, str], ...] = (("k8s-app", "kube-dns"),)
    # NodeLocal DNSCache: the addresses pods send DNS queries to on their node (169.254.20.10, and
    # the kube-dns Service IP where node-local-dns binds it too), and its port. Neither is a kube-dns
    # pod, and link-local is excluded from every egress rule, so without them resolution fails.
    node_local_dns_addresses: tuple[str, ...] = ()
    node_local_dns_port: int = Field(C.DNS_PORT, ge=1, le=65535)
    # "kubernetes" emits standard NetworkPolicies only (the only flavour so far).
    network_policy_flavour: Literal["kubernetes"] = "kubernetes"
    # How domain egress rules are enforced (C.EGRESS_BACKENDS): networkpolicy, the default, opens
    # the public IPv4 space on the rule's ports (coarse: NetworkPolicy has no names); cilium,
    # clusternetworkpolicy and proxy (docs/egress-proxy.md) allow the listed names only.
    egress_backend: str = C.EGRESS_BACKEND_NETWORKPOLICY
    # StorageClass used for volumes whose retentionPolicy is Retain (its reclaimPolicy should be
    # Retain); empty means such sandboxes must name a class themselves.
    retain_storage_class: str = ""
    # Bound on a pod's terminationGracePeriodSeconds (spec.timeout, or the default for warm pods):
    # how long a deleted sandbox's code may keep running after SIGTERM.
    max_termination_grace_seconds: int = Field(C.DEFAULT_MAX_TERMINATION_GRACE_SECONDS, ge=1)
    # Hook request bodies over this many bytes are answered 413 (read by the HTTP layer only).
    max_request_bytes: int = Field(DEFAULT_MAX_REQUEST_BYTES, ge=MIN_MAX_REQUEST_BYTES)

    # Image of the per-namespace egress proxy (backend "proxy" only).
    egress_proxy_image: str = Field(C.DEFAULT_EGRESS_PROXY_IMAGE, min_length=1)
    # hostUsers: false (a user namespace per pod): "auto" for levels without a runtime class
    # (gVisor refuses it), "on" for all, "off" where the nodes cannot (Kubernetes >= 1.33, Linux
    # >= 6.3, containerd >= 2.0 or CRI-O >= 1.25; docs/install.md).
    user_namespaces: str = C.USER_NAMESPACES_AUTO
    # Ed25519 public keys of the API component (gateway), base64 of the raw 32 bytes, two during a
    # rotation: every sandbox and warm pod's runtime gets them (LLMSS_GATEWAY_PUBLIC_KEYS) and
    # accepts only calls signed by one of them. Empty: runtimes refuse every authenticated call.
    gateway_public_keys: tuple[str, ...] = ()

    @field_validator("egress_backend")
    @classmethod
    def _egress_backend(cls, value: str) -> str:
        if value not in C.EGRESS_BACKENDS:
            raise ValueError(f"must be one of {', '.join(C.EGRESS_BACKENDS)}")
        return value

    @field_validator("user_namespaces", mode="before")
    @classmethod
    def _user_namespaces(cls, value: Any) -> Any:
        value = value.lower() if isinstance(value, str) else value
        if value not in C.USER_NAMESPACES_MODES:
            raise ValueError(f"must be one of {', '.join(C.USER_NAMESPACES_MODES)}")
        return value

    @field_validator("high_security_runtime_class")
    @classmethod
    def _runtime_class(cls, value: str) -> str:
        if not is_dns_subdomain(value):
            raise ValueError(f"must be a DNS-1123 subdomain (a RuntimeClass name: lower-case letters, digits, '-', '.', "
                             f"at most {C.MAX_DNS_SUBDOMAIN} characters)")
        return value

    @field_validator("retain_storage_class")
    @classmethod
    def _storage_class(cls, value: str) -> str:
        if value and not is_dns_subdomain(value):
            raise ValueError("must be empty or a DNS-1123 subdomain (a StorageClass name)")
        return value

    @field_validator("api_namespace", "dns_namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if not is_dns_label(value):
            raise ValueError(f"must be a namespace name, a DNS-1123 label (lower-case letters, digits, '-', "
                             f"1 to {C.MAX_DNS_LABEL} characters)")
        return value

    @field_validator("image_registry_allowlist", mode="before")
    @classmethod
    def _registries(cls, value: Any) -> Any:
        items = _items(value)
        for item in items:
            if not isinstance(item, str) or not _REGISTRY.fullmatch(item):
                raise ValueError(f"entries must be a registry host, optionally :port and /path (e.g. ghcr.io), got {item!r}")
        return tuple(sorted(items)) if isinstance(value, str) else items

    @field_validator("gateway_public_keys", mode="before")
    @classmethod
    def _gateway_keys(cls, value: Any) -> Any:
        items = _items(value)
        for item in items:
            try:
                raw = base64.b64decode(item, validate=True) if isinstance(item, str) else b""
            except (binascii.Error, ValueError):
                raw = b""
            if len(raw) != 32:
                raise ValueError(f"entries must be the standard base64 of a raw 32-byte Ed25519 public key, got {item!r}")
        return tuple(items)

    @field_validator("node_local_dns_addresses", mode="before")
    @classmethod
    def _addresses(cls, value: Any) -> Any:
        out = []
        for item in _items(value):
            try:
                out.append(str(ipaddress.ip_address(item)))
            except ValueError:
                raise ValueError(f"entries must be IP addresses (no prefix), got {item!r}") from None
        return tuple(sorted(set(out))) if isinstance(value, str) else tuple(out)

    @field_validator("dns_pod_labels", mode="before")
    @classmethod
    def _dns_pod_labels(cls, value: Any) -> Any:
        pairs = []
        for item in _items(value):
            if isinstance(item, str):
                key, sep, label = item.partition("=")
                if not sep:
                    raise ValueError(f"entries must be key=value, got {item!r}")
                item = (key.strip(), label.strip())
            pairs.append(tuple(item))
        if not pairs:
            raise ValueError("must hold at least one key=value label: an empty selector would let sandboxes "
                             "reach every pod of the DNS namespace")
        for key, label in pairs:
            found = qualified_name_problem(key)
            if found:
                raise ValueError(f"key {key!r} is not a qualified name: {found}")
            found = label_value_problem(label)
            if found:
                raise ValueError(f"value {label!r} is not a label value: {found}")
        return tuple(sorted(pairs)) if isinstance(value, str) else tuple(pairs)

    @staticmethod
    def from_env(env: Mapping[str, str] | None = None) -> "Config":
        """The settings in `env` (default os.environ); unset variables keep their defaults.
        Raises ConfigError naming the first bad variable."""
        return _validated(Config, os.environ if env is None else env, ENV_PREFIX)


DEFAULT_CONFIG = Config()


class ServerSettings(BaseModel):
    """What hooks/server/gunicorn_conf.py and the HTTP layer read besides Config (no LLMSS_ prefix)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    workers: int = Field(2, ge=1, le=64)  # WORKERS
    gunicorn_threads: int = Field(64, ge=1, le=1024)  # GUNICORN_THREADS (hooks/server/gunicorn_worker.py)
    gunicorn_timeout: int = Field(30, ge=1, le=3600)  # GUNICORN_TIMEOUT
    metrics_port: Optional[int] = Field(None, ge=1, le=65535)  # METRICS_PORT; unset or empty: none
    metrics_path: str = "/metrics"  # METRICS_PATH; empty: none on the hook port
    log_level: str = "INFO"  # LOG_LEVEL

    @field_validator("metrics_port", mode="before")
    @classmethod
    def _empty_port(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("metrics_path")
    @classmethod
    def _path(cls, value: str) -> str:
        if value and not value.startswith("/"):
            raise ValueError("must be empty or start with '/'")
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.upper() not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return value.upper()

    @staticmethod
    def from_env(env: Mapping[str, str] | None = None) -> "ServerSettings":
        return _validated(ServerSettings, os.environ if env is None else env, "")


def check_env(env: Mapping[str, str] | None = None) -> Config:
    """Every setting the server reads, validated (ConfigError naming the first bad variable)."""
    env = os.environ if env is None else env
    ServerSettings.from_env(env)
    return Config.from_env(env)


def _validated(model: Any, env: Mapping[str, str], prefix: str) -> Any:
    names = {field: prefix + field.upper() for field in model.model_fields}
    raw = {field: env[var].strip() for field, var in names.items() if var in env}
    try:
        return model(**raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else ""
        rule = error["msg"].removeprefix("Value error, ")
        value = raw.get(field, "")
        got = "" if repr(value) in rule else f"; got {value!r}"  # a list's bad entry is named already
        raise ConfigError(f"{names.get(field, field)}: {rule}{got}") from None
