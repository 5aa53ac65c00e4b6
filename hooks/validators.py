"""Pydantic models of every spec of our API group, mirroring the CRD schemas in crds/, plus the
semantic checks a schema cannot express (quantities that parse, CIDRs, domains, paths).

tests/test_crd_model_agreement.py proves that the models and the CRDs agree on field names,
defaults and enums, so a default lives in two places only under test."""
from __future__ import annotations

import functools
import ipaddress
import posixpath
import re
from typing import Any, Literal, Optional

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from . import constants as C
from .quantity import parse_quantity, whole_cpus

SecurityLevel = Literal["standard", "high", "custom"]
Protocol = Literal["TCP", "UDP"]

CPU_PATTERN = r"^([0-9]+m|[0-9]+(\.[0-9]+)?)$"
MEMORY_PATTERN = r"^[0-9]+(Ki|Mi|Gi|Ti)$"
# A lower-case DNS name of at least two labels (a name under a top-level domain), optionally with
# one leading wildcard label ("*.example.com"). The last label starts with a letter, so an IPv4
# literal is no domain; the same shape ClusterNetworkPolicy domainNames and Cilium toFQDNs accept.
DOMAIN_PATTERN = r"^(\*\.)?([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"
_DOMAIN = re.compile(DOMAIN_PATTERN)
# Seccomp Localhost profiles are paths relative to the kubelet's seccomp root.
SECCOMP_PATH_PATTERN = r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$"
_SECCOMP_PATH = re.compile(SECCOMP_PATH_PATTERN)
PACKAGE_PATTERN = r"^[A-Za-z0-9@][A-Za-z0-9._/@+-]*([=<>!~^]=?[A-Za-z0-9.*+-]+)?$"
_PACKAGE = re.compile(PACKAGE_PATTERN)


class Model(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are ignored because the API
    server already prunes them from structural schemas."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)

    def wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


def _check_quantity(value: Optional[str], what: str) -> Optional[str]:
    if value is None:
        return value
    if parse_quantity(value) <= 0:
        raise ValueError(f"{what} must be greater than zero")
    return value


# ---------------------------------------------------------------------------------------------
# Shared parts


class Port(Model):
    port: int = Field(ge=1, le=65535)
    protocol: Protocol = "TCP"


def domain_problem(value: str) -> Optional[str]:
    """Why `value` is not an acceptable egress domain, in words a user can act on; None if it is.
    Sandboxes and profiles share it (NetworkRule), and the CRDs state the same rules."""
    bare = value.removeprefix("*.")
    try:
        ipaddress.ip_address(value.strip("[]"))
        return f"{value!r} is an IP address, not a domain name: write it as a cidr (e.g. {host_cidr(value.strip('[]'))})"
    except ValueError:
        pass
    if value != value.lower():
        return f"{value!r} is not a valid domain name: it must be lower-case ({value.lower()!r})"
    if "*" in bare:
        return f"{value!r} is not a valid domain name: a wildcard is allowed only as a whole leading label, like *.example.com"
    if len(value) > C.MAX_DNS_SUBDOMAIN:
        return f"{value!r} is not a valid domain name: longer than {C.MAX_DNS_SUBDOMAIN} characters"
    labels = bare.split(".")
    if any(len(label) > C.MAX_DNS_LABEL for label in labels):
        return f"{value!r} is not a valid domain name: a label is longer than {C.MAX_DNS_LABEL} characters"
    if len(labels) < 2:
        return (f"{value!r} is not a valid domain name: it needs at least two labels, like example.com "
                "(a wildcard covers the subdomains of such a name: *.example.com)")
    if labels[-1][:1].isdigit():
        return f"{value!r} is not a valid domain name: its last label must start with a letter (like api.example.com)"
    if not _DOMAIN.match(value):
        return f"{value!r} is not a valid domain name (lower-case letters, digits and '-' in dot-separated labels, like api.example.com)"
    return None


def host_cidr(address: str) -> str:
    """A single address as a network: /32 or /128."""
    ip = ipaddress.ip_address(address)
    return f"{ip}/{ip.max_prefixlen}"


class NetworkRule(Model):
    """One egress destination: a domain (resolved through cluster DNS; enforced per the egress
    backend: the public address space under networkpolicy, the name itself under cilium and
    clusternetworkpolicy) or a CIDR, with optional ports."""

    domain: Optional[str] = Field(default=None, max_length=253)
    cidr: Optional[str] = None
    ports: list[Port] = Field(default_factory=list, max_length=64)

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: Optional[str]) -> Optional[str]:
        if value is not None:
            problem = domain_problem(value)
            if problem:
                raise ValueError(problem)
        return value

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, value: Optional[str]) -> Optional[str]:
        if value is not None:
            try:
                ipaddress.ip_network(value, strict=True)
            except ValueError as exc:
                raise ValueError(f"{value!r} is not a valid CIDR ({exc})") from None
        return value

    @model_validator(mode="after")
    def _one_destination(self) -> "NetworkRule":
        if (self.domain is None) == (self.cidr is None):
            raise ValueError("a network rule needs exactly one of domain or cidr")
        return self


class Resources(Model):
    # No schema default for the quantities: a profile's resourceDefaults must be able to fill
    # them, and an API-server default would be indistinguishable from a user's choice. The
    # effective defaults (500m / 512Mi / 1Gi, as in the original) are applied in hooks/resolve.py.
    cpu: Optional[str] = Field(default=None, max_length=32, pattern=CPU_PATTERN)
    memory: Optional[str] = Field(default=None, pattern=MEMORY_PATTERN)
    ephemeral_storage: Optional[str] = Field(default=None, pattern=MEMORY_PATTERN)
    cpu_pinning: bool = False

    @field_validator("cpu", "memory", "ephemeral_storage")
    @classmethod
    def _positive(cls, value: Optional[str]) -> Optional[str]:
        return _check_quantity(value, "a resource quantity")

    @model_validator(mode="after")
    def _pinning_needs_whole_cpus(self) -> "Resources":
        # Mirrors the CRD's CEL rule on spec.resources; an unset cpu is checked once resolved.
        if self.cpu_pinning and self.cpu is not None and not whole_cpus(self.cpu):
            raise ValueError(pinning_message(self.cpu, "spec.resources.cpu"))
        return self


def pinning_message(cpu: str, source: str) -> str:
    return (f"cpuPinning needs a whole number of CPUs in resources.cpu (e.g. 1, 2 or 2000m), got {cpu} ({source}): "
            "the static CPU manager pins only Guaranteed pods with integer CPUs, a fractional CPU would run unpinned")


class SeccompProfile(Model):
    type: Literal["RuntimeDefault", "Localhost"] = C.SECCOMP_RUNTIME_DEFAULT
    localhost_profile: Optional[str] = Field(default=None, max_length=255, pattern=SECCOMP_PATH_PATTERN)

    @model_validator(mode="after")
    def _localhost_needs_path(self) -> "SeccompProfile":
        if self.type == C.SECCOMP_LOCALHOST and not self.localhost_profile:
            raise ValueError("seccompProfile.type Localhost needs localhostProfile")
        if self.type != C.SECCOMP_LOCALHOST and self.localhost_profile:
            raise ValueError("seccompProfile.localhostProfile is only allowed with type Localhost")
        return self


class SecurityContext(Model):
    # Non-root is not optional: uid/gid 0 are rejected by the schema (minimum 1).
    run_as_user: int = Field(default=C.DEFAULT_RUN_AS_USER, ge=1, le=2147483647)
    run_as_group: int = Field(default=C.DEFAULT_RUN_AS_GROUP, ge=1, le=2147483647)
    # Default RuntimeDefault applied in hooks/resolve.py, after the profile's seccompProfile.
    seccomp_profile: Optional[SeccompProfile] = None


def _check_paths(paths: list[str]) -> list[str]:
    seen: set[str] = set()
    for path in paths:
        if not path.startswith("/") or posixpath.normpath(path) != path or path == "/":
            raise ValueError(f"{path!r} must be an absolute, normalised path other than /")
        if path in seen:
            raise ValueError(f"{path!r} is listed twice")
        seen.add(path)
    return paths


# ---------------------------------------------------------------------------------------------
# Environment (spec.env / spec.envFrom of Sandboxes, WarmPools and WarmPods; docs/environment.md).
# Shaped like a container's, restricted to Secrets of the object's own namespace: the references
# have no namespace field, and a Pod can only reference Secrets of its own namespace anyway.

# A Secret's name: a DNS-1123 subdomain.
SECRET_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


def reserved_env_name(name: str) -> Optional[str]:
    """Why a variable name may not be set by a user, or None."""
    if name in C.RESERVED_ENV_NAMES:
        return f"{name} is reserved: the platform sets the proxy variables itself (the proxy egress backend)"
    for prefix in C.RESERVED_ENV_PREFIXES:
        if name.startswith(prefix):
            return f"{name} is reserved: names starting with {prefix} belong to the platform"
    return None


class SecretKeySelector(Model):
    name: str = Field(min_length=1, max_length=C.MAX_DNS_SUBDOMAIN, pattern=SECRET_NAME_PATTERN)
    key: str = Field(min_length=1, max_length=C.MAX_DNS_SUBDOMAIN, pattern=C.SECRET_KEY_PATTERN)
    optional: Optional[bool] = None


class EnvVarSource(Model):
    # Only Secrets: a ConfigMap's values can go in `value`, and the pod's own fields (fieldRef)
    # are nothing a sandbox needs.
    secret_key_ref: SecretKeySelector


class EnvVar(Model):
    name: str = Field(min_length=1, max_length=C.ENV_NAME_MAX, pattern=C.ENV_NAME_PATTERN)
    value: Optional[str] = Field(default=None, max_length=C.ENV_VALUE_MAX)
    value_from: Optional[EnvVarSource] = None

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        why = reserved_env_name(value)
        if why is not None:
            raise ValueError(why)
        return value

    @model_validator(mode="after")
    def _one_source(self) -> "EnvVar":
        if self.value is not None and self.value_from is not None:
            raise ValueError("an env entry takes value or valueFrom, not both")
        return self


class SecretEnvSource(Model):
    name: str = Field(min_length=1, max_length=C.MAX_DNS_SUBDOMAIN, pattern=SECRET_NAME_PATTERN)
    optional: Optional[bool] = None


class EnvFromSource(Model):
    prefix: Optional[str] = Field(default=None, max_length=C.ENV_NAME_MAX, pattern=C.ENV_NAME_PATTERN)
    secret_ref: SecretEnvSource

    @field_validator("prefix")
    @classmethod
    def _not_reserved(cls, value: Optional[str]) -> Optional[str]:
        for reserved in C.RESERVED_ENV_PREFIXES:
            if value is not None and value.startswith(reserved):
                raise ValueError(f"prefix {value} is reserved: names starting with {reserved} belong to the platform")
        return value


def check_env(env: Optional[list[EnvVar]]) -> Optional[list[EnvVar]]:
    if env is not None:
        names = [e.name for e in env]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"env names must be unique, listed twice: {', '.join(duplicates)}")
    return env


# ---------------------------------------------------------------------------------------------
# Sandbox


class NetworkAccess(Model):
    egress: list[NetworkRule] = Field(default_factory=list, max_length=128)
    ingress: bool = False


class Filesystem(Model):
    read_only_root: bool = True
    # Default (/tmp, /workspace) applied in hooks/resolve.py, after the profile's writablePaths.
    writable_paths: Optional[list[str]] = Field(default=None, max_length=32)

    @field_validator("read_only_root")
    @classmethod
    def _always_read_only(cls, value: bool) -> bool:
        if not value:
            raise ValueError("readOnlyRoot cannot be disabled; list the directories that must be writable in writablePaths")
        return value

    @field_validator("writable_paths")
    @classmethod
    def _paths(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        return None if value is None else _check_paths(value)


class Storage(Model):
    persistent: bool = False
    volume_size: str = Field(default=C.DEFAULT_VOLUME_SIZE, pattern=MEMORY_PATTERN)
    retention_policy: Literal["Delete", "Retain"] = C.RETENTION_DELETE
    storage_class_name: Optional[str] = Field(default=None, max_length=253)

    @field_validator("volume_size")
    @classmethod
    def _size(cls, value: str) -> str:
        return _check_quantity(value, "volumeSize")  # type: ignore[return-value]


class ProfileRef(Model):
    name: str = Field(min_length=1, max_length=253)
    namespace: Optional[str] = Field(default=None, max_length=63)


class WarmPoolRef(Model):
    name: str = Field(min_length=1, max_length=253)


class SandboxSpec(Model):
    runtime: str = Field(min_length=1, max_length=253)
    # Default "standard" applied in hooks/resolve.py: a profile's level is a floor the sandbox
    # may raise but never lower, so an API-server default would read as a forbidden weakening.
    security_level: Optional[SecurityLevel] = None
    timeout: int = Field(default=C.DEFAULT_TIMEOUT_SECONDS, ge=1, le=C.MAX_TIMEOUT_SECONDS)
    lifetime_seconds: Optional[int] = Field(default=None, ge=0, le=31_536_000)
    startup_timeout_seconds: int = Field(default=C.DEFAULT_STARTUP_TIMEOUT_SECONDS, ge=C.MIN_STARTUP_TIMEOUT_SECONDS,
                                         le=C.MAX_STARTUP_TIMEOUT_SECONDS)
    resources: Resources = Field(default_factory=Resources)
    network_access: NetworkAccess = Field(default_factory=NetworkAccess)
    filesystem: Filesystem = Field(default_factory=Filesystem)
    storage: Storage = Field(default_factory=Storage)
    security_context: SecurityContext = Field(default_factory=SecurityContext)
    profile_ref: Optional[ProfileRef] = None
    warm_pool_ref: Optional[WarmPoolRef] = None
    operating_mode: Literal["Running", "Suspended"] = C.OPERATING_MODE_RUNNING
    idle_timeout_seconds: Optional[int] = Field(default=None, ge=C.MIN_IDLE_TIMEOUT_SECONDS, le=C.MAX_IDLE_TIMEOUT_SECONDS)

    # Variables of the sandbox container (docs/environment.md); None and [] mean none.
    env: Optional[list[EnvVar]] = Field(default=None, max_length=C.ENV_MAX_ITEMS)
    env_from: Optional[list[EnvFromSource]] = Field(default=None, max_length=C.ENV_FROM_MAX_ITEMS)

    _env = field_validator("env")(check_env)

    @model_validator(mode="after")
    def _idle_before_end(self) -> "SandboxSpec":
        # Mirrors the CRD's CEL rule on spec: an idle timeout the lifetime always ends first never fires.
        if self.idle_timeout_seconds is not None and self.lifetime_seconds and self.idle_timeout_seconds >= self.lifetime_seconds:
            raise ValueError(idle_message(self.idle_timeout_seconds, self.lifetime_seconds))
        return self


def idle_message(idle: int, lifetime: int) -> str:
    return (f"idleTimeoutSeconds ({idle}) must be shorter than lifetimeSeconds ({lifetime}): the lifetime would end the "
            "sandbox before it could ever be suspended for inactivity")


# ---------------------------------------------------------------------------------------------
# SandboxProfile


class ProfileNetworkPolicy(Model):
    type: Literal["egress", "ingress"]
    rules: list[NetworkRule] = Field(default_factory=list, max_length=128)


class ResourceDefaults(Model):
    cpu: Optional[str] = Field(default=None, pattern=CPU_PATTERN)
    memory: Optional[str] = Field(default=None, pattern=MEMORY_PATTERN)
    ephemeral_storage: Optional[str] = Field(default=None, pattern=MEMORY_PATTERN)

    @field_validator("cpu", "memory", "ephemeral_storage")
    @classmethod
    def _positive(cls, value: Optional[str]) -> Optional[str]:
        return _check_quantity(value, "a resource default")


class FilesystemConfig(Model):
    read_only_paths: list[str] = Field(default_factory=list, max_length=32)
    writable_paths: list[str] = Field(default_factory=list, max_length=32)

    @field_validator("read_only_paths", "writable_paths")
    @classmethod
    def _paths(cls, value: list[str]) -> list[str]:
        return _check_paths(value)


class SandboxProfileSpec(Model):
    language: str = Field(min_length=1, max_length=63)
    security_level: SecurityLevel = C.DEFAULT_SECURITY_LEVEL  # type: ignore[assignment]
    seccomp_profile: Optional[str] = Field(default=None, max_length=255)
    network_policies: list[ProfileNetworkPolicy] = Field(default_factory=list, max_length=16)
    pre_installed_packages: list[str] = Field(default_factory=list, max_length=512)
    resource_defaults: ResourceDefaults = Field(default_factory=ResourceDefaults)
    filesystem_config: FilesystemConfig = Field(default_factory=FilesystemConfig)


# ---------------------------------------------------------------------------------------------
# RuntimeEnvironment


class ResourceRequirements(Model):
    min_cpu: Optional[str] = None
    min_memory: Optional[str] = None
    recommended_cpu: Optional[str] = None
    recommended_memory: Optional[str] = None


class RuntimeEnvironmentSpec(Model):
    image: str = Field(min_length=1, max_length=1024)
    language: str = Field(min_length=1, max_length=63)
    version: Optional[str] = Field(default=None, max_length=63)
    tags: list[str] = Field(default_factory=list, max_length=64)
    pre_installed_packages: list[str] = Field(default_factory=list, max_length=1024)
    package_manager: Optional[str] = Field(default=None, max_length=63)
    security_features: list[str] = Field(default_factory=list, max_length=32)
    resource_requirements: ResourceRequirements = Field(default_factory=ResourceRequirements)


# ---------------------------------------------------------------------------------------------
# WarmPool and WarmPod


class AutoScaling(Model):
    enabled: bool = False
    target_utilization: int = Field(default=C.DEFAULT_TARGET_UTILIZATION, ge=1, le=100)
    scale_down_delay: int = Field(default=C.DEFAULT_SCALE_DOWN_DELAY_SECONDS, ge=0, le=86_400)


class PreloadScript(Model):
    name: str = Field(min_length=1, max_length=40, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    script: str = Field(min_length=1, max_length=16_384)


class PoolResources(Model):
    cpu: str = Field(default=C.DEFAULT_CPU, pattern=CPU_PATTERN)
    memory: str = Field(default=C.DEFAULT_MEMORY, pattern=MEMORY_PATTERN)
    ephemeral_storage: str = Field(default=C.DEFAULT_EPHEMERAL_STORAGE, pattern=MEMORY_PATTERN)

    @field_validator("cpu", "memory", "ephemeral_storage")
    @classmethod
    def _positive(cls, value: str) -> str:
        return _check_quantity(value, "a resource quantity")  # type: ignore[return-value]


class WarmPoolSpec(Model):
    runtime: str = Field(min_length=1, max_length=253)
    security_level: SecurityLevel = C.DEFAULT_SECURITY_LEVEL  # type: ignore[assignment]
    min_size: int = Field(default=1, ge=0, le=1000)
    max_size: int = Field(default=0, ge=0, le=1000)  # 0 = unbounded
    auto_scaling: AutoScaling = Field(default_factory=AutoScaling)
    ttl: int = Field(default=0, ge=0, le=604_800)  # seconds an idle warm pod lives; 0 = forever
    resources: PoolResources = Field(default_factory=PoolResources)
    preload_scripts: list[PreloadScript] = Field(default_factory=list, max_length=16)
    # The environment of the pool's pods: a sandbox is served by the pool only when it declares
    # exactly this environment (a running pod cannot gain variables; hooks/warm.py).
    env: Optional[list[EnvVar]] = Field(default=None, max_length=C.ENV_MAX_ITEMS)
    env_from: Optional[list[EnvFromSource]] = Field(default=None, max_length=C.ENV_FROM_MAX_ITEMS)

    _env = field_validator("env")(check_env)

    @model_validator(mode="after")
    def _sizes(self) -> "WarmPoolSpec":
        if self.max_size and self.min_size > self.max_size:
            raise ValueError(f"minSize ({self.min_size}) must not exceed maxSize ({self.max_size}); maxSize 0 means unbounded")
        names = [p.name for p in self.preload_scripts]
        if len(names) != len(set(names)):
            raise ValueError("preloadScripts names must be unique")
        return self


class PoolRef(Model):
    name: str = Field(min_length=1, max_length=253)


class Assignment(Model):
    sandbox_name: str = Field(min_length=1, max_length=253)
    sandbox_uid: str = Field(min_length=1, max_length=64)


class WarmPoolOfferSpec(Model):
    """What a WarmPool's pods are (crds/warmpooloffers.yaml), read by Sandboxes choosing a pool."""
    pool_ref: PoolRef
    runtime: str = Field(min_length=1, max_length=253)
    security_level: SecurityLevel = C.DEFAULT_SECURITY_LEVEL  # type: ignore[assignment]
    resources: PoolResources = Field(default_factory=PoolResources)
    # sha256 of the pool's env and envFrom (hooks/warm.py env_digest); absent when it has none.
    env_digest: Optional[str] = Field(default=None, max_length=71, pattern=r"^sha256:[0-9a-f]{64}$")


class WarmPodSpec(Model):
    pool_ref: PoolRef
    runtime: str = Field(min_length=1, max_length=253)
    image: str = Field(min_length=1, max_length=1024)
    security_level: SecurityLevel = C.DEFAULT_SECURITY_LEVEL  # type: ignore[assignment]
    resources: PoolResources = Field(default_factory=PoolResources)
    preload_scripts: list[PreloadScript] = Field(default_factory=list, max_length=16)
    env: Optional[list[EnvVar]] = Field(default=None, max_length=C.ENV_MAX_ITEMS)
    env_from: Optional[list[EnvFromSource]] = Field(default=None, max_length=C.ENV_FROM_MAX_ITEMS)
    # False only: the runtime's nodes lack user namespaces (absent keeps older WarmPods unchanged).
    user_namespaces: Optional[bool] = None
    assignment: Optional[Assignment] = None

    _env = field_validator("env")(check_env)


# ---------------------------------------------------------------------------------------------
# Turning pydantic errors into condition messages


def _location(loc: tuple[Any, ...]) -> str:
    out = "spec"
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += "." + to_camel(str(part)) if "_" in str(part) else "." + str(part)
    return out


def describe(error: ValidationError) -> str:
    """One human-readable line per problem, joined; stable order for deterministic status."""
    lines = []
    for err in error.errors(include_url=False):
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "string_pattern_mismatch" and err["loc"] and err["loc"][0] in ("env", "env_from"):
            # Never the input: it may be a value or a Secret's name, which status does not repeat.
            msg = f"does not match the required pattern {err['ctx']['pattern']}"
        elif err["type"] == "string_pattern_mismatch":
            msg = f"{err.get('input')!r} does not match the required pattern {err['ctx']['pattern']}"
        elif err["type"] == "literal_error":
            msg = f"{err.get('input')!r} is not one of {err['ctx']['expected']}"
        lines.append(f"{_location(tuple(err['loc']))}: {msg}")
    return "; ".join(sorted(set(lines)))


class SpecError(ValueError):
    """A spec that cannot be used; the message is meant for a status condition."""


# Specs up to this size (as JSON) are validated once per worker; a larger one is rare and would
# make the cache's memory depend on what clients send.
SPEC_CACHE_MAX_BYTES = 16 * 1024


def parse_spec(model: type[Model], obj: dict[str, Any]) -> Any:
    """obj["spec"] validated with `model`; raises SpecError with the problems, one per line.

    Every hook validates the same few specs on every sync (the sandbox's, its runtimes', its
    pool's offers): pydantic was the largest single cost of a Sandbox sync. Validation is a pure
    function of the spec's JSON text and the models are frozen, so each (model, JSON) is validated
    once: the same model or the same message comes back. Values JSON cannot carry (NaN, tuples, a
    non-string key, an int beyond 64 bits) never come from the API server; orjson refuses most of
    them, and such specs are validated uncached."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        raise SpecError("spec: must be an object")
    try:
        key = orjson.dumps(spec)
    except TypeError:
        key = b""
    result = _validated(model, key) if 0 < len(key) <= SPEC_CACHE_MAX_BYTES else _validate(model, spec)
    if isinstance(result, str):
        raise SpecError(result)
    return result


def validate_cached(model: type[Model], value: dict[str, Any]) -> Any:
    """model.model_validate(value) through parse_spec's cache: hooks validate objects they built
    themselves (a pool's offer, its warm pods' template) on every sync, from the same inputs. A
    value that does not validate raises pydantic's own ValidationError, as model_validate does."""
    try:
        return parse_spec(model, {"spec": value})
    except SpecError:
        return model.model_validate(value)


def _validate(model: type[Model], spec: dict[str, Any]) -> Model | str:
    """The validated model, or the message of every problem."""
    try:
        return model.model_validate(spec)
    except ValidationError as exc:
        return describe(exc)


@functools.lru_cache(maxsize=2048)
def _validated(model: type[Model], key: bytes) -> Model | str:
    return _validate(model, orjson.loads(key))


def check_package(name: str) -> bool:
    return bool(_PACKAGE.match(name)) and len(name) <= 214


def check_seccomp_path(path: str) -> bool:
    return bool(_SECCOMP_PATH.match(path)) and ".." not in path.split("/")
