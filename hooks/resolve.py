"""From a Sandbox spec, its RuntimeEnvironment and its SandboxProfile, the effective settings
the child builders use. Every default and every precedence rule of the product lives here:

    sandbox field  >  profile default  >  built-in default (the original design's)

except that a sandbox may never weaken its profile: its security level may only be equal or
stricter, its seccomp profile must be the profile's when the profile names one, and it may not make
a path writable that the profile lists as read-only. The runtime's minimum resources are a floor:
an explicit request below it is an error, a defaulted one is raised to it."""
from __future__ import annotations

import dataclasses
import functools
import ipaddress
import re
from dataclasses import dataclass
from collections.abc import Mapping
from typing import Any, Iterable, Optional

import orjson

from . import constants as C
from .meta import MAPPING, name
from .quantity import parse_quantity, whole_cpus
from .validators import (
    EnvFromSource,
    EnvVar,
    NetworkRule,
    Port,
    ResourceDefaults,
    ResourceRequirements,
    RuntimeEnvironmentSpec,
    SandboxProfileSpec,
    SandboxSpec,
    SpecError,
    parse_spec,
    pinning_message,
)

SECURITY_RANK = {"standard": 0, "custom": 1, "high": 2}


class ResolutionError(Exception):
    """The sandbox cannot be built now; reason is a CamelCase condition reason."""

    def __init__(self, reason: str, message: str, *, waiting: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        # waiting: the inputs may still arrive (e.g. a runtime not validated yet); not a user error.
        self.waiting = waiting


@dataclass(frozen=True)
class Seccomp:
    type: str
    localhost_profile: Optional[str] = None


@dataclass(frozen=True)
class Effective:
    """Everything that shapes a sandbox's pod and network, fully defaulted."""

    runtime_name: str
    image: str
    security_level: str
    cpu: str
    memory: str
    ephemeral_storage: str
    cpu_pinning: bool
    writable_paths: tuple[str, ...]
    run_as_user: int
    run_as_group: int
    seccomp: Seccomp
    egress: tuple[NetworkRule, ...]
    ingress: bool
    ingress_rules: tuple[NetworkRule, ...]
    persistent: bool
    volume_size: str
    retention_policy: str
    storage_class_name: Optional[str]
    timeout: int
    profile_name: Optional[str]
    # The sandbox's own (a profile sets none): references only, the kubelet reads the Secrets.
    env: tuple[EnvVar, ...] = ()
    env_from: tuple[EnvFromSource, ...] = ()
    # Whether the nodes sandboxes of this runtime can land on support user namespaces, as the
    # RuntimeEnvironment's status reports (runtime_user_namespaces); "auto" needs it.
    user_namespaces_supported: bool = True


# ---------------------------------------------------------------------------------------------
# Runtime resolution

_VERSION_PART = re.compile(r"(\d+)|(\D+)")


def _version_key(version: str) -> tuple[Any, ...]:
    # "3.10" > "3.9": compare numeric runs as numbers.
    return tuple((0, int(n)) if n else (1, s) for n, s in _VERSION_PART.findall(version or ""))


def runtime_available(rte: Mapping[str, Any]) -> Optional[bool]:
    status = rte.get("status")
    if not isinstance(status, MAPPING) or not isinstance(status.get("available"), bool):
        return None
    return bool(status["available"])


def runtime_user_namespaces(rte: Optional[Mapping[str, Any]]) -> bool:
    """Whether a RuntimeEnvironment's status says its nodes support user namespaces
    (hooks/runtime_sync.py). A status without the field (written by an earlier version, or not yet)
    reads as supported, so an upgrade changes no pod until the runtime's own sync has run."""
    status = rte.get("status") if rte is not None else None
    report = status.get("userNamespaces") if isinstance(status, MAPPING) else None
    supported = report.get("supported") if isinstance(report, MAPPING) else None
    return supported is not False


def runtime_named(runtime_name: str, runtimes: Iterable[Mapping[str, Any]]) -> Optional[Mapping[str, Any]]:
    return next((r for r in runtimes if name(r) == runtime_name), None)


def resolve_runtime(reference: str, runtimes: Iterable[Mapping[str, Any]]) -> tuple[str, RuntimeEnvironmentSpec]:
    """_resolve_runtime, once per distinct input: a WarmPool sync resolves its own runtime and
    that of each distinct sandbox spec, every sync, on the same few RuntimeEnvironments. Keyed by
    the JSON of what it reads (see resolve_sandbox)."""
    runtimes = list(runtimes)
    try:
        key = orjson.dumps([reference, [_read_part(r, ("name",)) for r in runtimes]])
    except TypeError:
        key = b""
    answer = _runtime_resolved(key) if 0 < len(key) <= RESOLUTION_CACHE_MAX_BYTES else _runtime_answer(reference, runtimes)
    if isinstance(answer, _Refused):
        raise answer.error()
    return answer


@functools.lru_cache(maxsize=256)
def _runtime_resolved(key: bytes) -> tuple[str, RuntimeEnvironmentSpec] | _Refused:
    reference, runtimes = orjson.loads(key)
    return _runtime_answer(reference, runtimes)


def _runtime_answer(reference: str, runtimes: list[Mapping[str, Any]]) -> tuple[str, RuntimeEnvironmentSpec] | _Refused:
    try:
        return _resolve_runtime(reference, runtimes)
    except ResolutionError as exc:
        return _Refused(exc.reason, exc.message, exc.waiting)


def _resolve_runtime(reference: str, runtimes: Iterable[Mapping[str, Any]]) -> tuple[str, RuntimeEnvironmentSpec]:
    """Resolve `spec.runtime` to one RuntimeEnvironment.

    1. A RuntimeEnvironment whose name equals the reference wins.
    2. Otherwise `language:version` matches spec.language and spec.version; a bare `language`
       matches every version of it and the highest version wins.
    3. Otherwise the runtimes whose spec.tags contain the reference.
    Among several candidates the available ones win, then the highest version, then the
    lexicographically smallest name, so the choice is deterministic."""
    parsed: list[tuple[str, RuntimeEnvironmentSpec, Mapping[str, Any]]] = []
    for rte in runtimes:
        try:
            parsed.append((name(rte), parse_spec(RuntimeEnvironmentSpec, dict(rte)), rte))
        except SpecError:
            continue  # an invalid runtime is reported on the runtime itself, never chosen here
    exact = [p for p in parsed if p[0] == reference]
    if exact:
        candidates = exact
    else:
        language, _, version = reference.partition(":")
        candidates = [
            p for p in parsed
            if p[1].language == language and (not version or (p[1].version or "") == version)
        ]
    if not candidates:
        # 3. A tag: every runtime that lists it (spec.tags), e.g. "data-science".
        candidates = [p for p in parsed if reference in p[1].tags]
    if not candidates:
        raise ResolutionError("RuntimeNotFound", f"no RuntimeEnvironment matches runtime {reference!r} (by name, as language:version, or by tag)")
    # Stable sorts, least significant key first: name, then highest version, then availability.
    candidates.sort(key=lambda p: p[0])
    candidates.sort(key=lambda p: _version_key(p[1].version or ""), reverse=True)
    candidates.sort(key=lambda p: runtime_available(p[2]) is not True)
    chosen_name, spec, obj = candidates[0]
    available = runtime_available(obj)
    if available is None:
        raise ResolutionError("RuntimeNotValidated", f"RuntimeEnvironment {chosen_name!r} has not been validated yet", waiting=True)
    if not available:
        raise ResolutionError("RuntimeUnavailable", f"RuntimeEnvironment {chosen_name!r} is not available: {_status_message(obj)}")
    return chosen_name, spec


def _status_message(obj: Mapping[str, Any]) -> str:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(cond, MAPPING) and cond.get("status") == "False" and cond.get("message"):
            return str(cond["message"])
    return "see its status"


# ---------------------------------------------------------------------------------------------
# Profile lookup


def find_profile(spec: SandboxSpec, sandbox_ns: str, profiles: Iterable[Mapping[str, Any]]) -> Optional[tuple[str, SandboxProfileSpec]]:
    if spec.profile_ref is None:
        return None
    ns = spec.profile_ref.namespace or sandbox_ns
    for obj in profiles:
        meta = obj.get("metadata") or {}
        if meta.get("name") == spec.profile_ref.name and meta.get("namespace", sandbox_ns) == ns:
            try:
                profile = parse_spec(SandboxProfileSpec, dict(obj))
            except SpecError as exc:
                raise ResolutionError("ProfileInvalid", f"SandboxProfile {ns}/{spec.profile_ref.name} is invalid: {exc}") from None
            validated = (obj.get("status") or {}).get("validated") if isinstance(obj.get("status"), MAPPING) else None
            if validated is False:
                raise ResolutionError("ProfileInvalid", f"SandboxProfile {ns}/{spec.profile_ref.name} failed validation: {_status_message(obj)}")
            if validated is None:
                # Like a runtime: wait for the profile controller's verdict before building on it.
                raise ResolutionError("ProfileNotValidated", f"SandboxProfile {ns}/{spec.profile_ref.name} has not been validated yet", waiting=True)
            return f"{ns}/{spec.profile_ref.name}", profile
    raise ResolutionError("ProfileNotFound", f"SandboxProfile {ns}/{spec.profile_ref.name} not found")


# ---------------------------------------------------------------------------------------------
# Merging


_LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
_PRIVATE = tuple(ipaddress.ip_network(c) for c in C.PRIVATE_CIDRS + C.PRIVATE_CIDRS_V6) + _LOOPBACK
_IPV4_EMBEDDING = tuple(ipaddress.ip_network(c) for c in C.IPV4_EMBEDDING_CIDRS_V6)
_IPV4_MAPPED = ipaddress.ip_network(C.IPV4_MAPPED_CIDR_V6)
_PUBLIC_V6 = ipaddress.ip_network(C.PUBLIC_CIDR_V6)


def forbidden_range(cidr: str) -> Optional[str]:
    """Why a rule may not name `cidr` (it lies in a range no rule reaches), or None. IPv6
    spellings of IPv4 addresses are refused whole: whether ::ffff:169.254.169.254 reaches the
    metadata service depends on the CNI and the node, so only the IPv4 form is checked."""
    net = ipaddress.ip_network(cidr, strict=False)
    if any(net.version == p.version and net.subnet_of(p) for p in _PRIVATE):  # type: ignore[arg-type]
        return "lies in a private or link-local address range"
    if net.version == 6 and any(net.subnet_of(p) for p in _IPV4_EMBEDDING):  # type: ignore[arg-type]
        return "spells IPv4 addresses in IPv6 (IPv4-mapped, IPv4-compatible, NAT64 or 6to4): write the IPv4 form"
    if net.version == 6 and _IPV4_MAPPED.subnet_of(net) and not _PUBLIC_V6.subnet_of(net):  # type: ignore[arg-type]
        # ::/64 and the like: only special-purpose addresses, and the IPv4-mapped ones cannot be excepted.
        return f"holds IPv4-mapped addresses ({C.IPV4_MAPPED_CIDR_V6}) and no public ones ({C.PUBLIC_CIDR_V6})"
    return None


def _floor(explicit: Optional[str], defaulted: str, minimum: Optional[str], what: str) -> str:
    if minimum is None:
        return explicit or defaulted
    try:
        floor = parse_quantity(minimum)
    except ValueError:
        return explicit or defaulted  # an unparsable minimum is reported on the runtime itself
    if explicit is not None:
        if parse_quantity(explicit) < floor:
            raise ResolutionError("BelowRuntimeMinimum", f"spec.resources.{what} {explicit} is below the runtime's minimum {minimum}")
        return explicit
    return minimum if parse_quantity(defaulted) < floor else defaulted


def check_security_features(level: str, runtime_name: str, runtime: RuntimeEnvironmentSpec) -> None:
    """A level needs the runtime to declare the features it relies on (spec.securityFeatures):
    an image that does not run under gVisor must not be offered as `high`."""
    missing = [f for f in C.LEVEL_SECURITY_FEATURES.get(level, ()) if f not in runtime.security_features]
    if missing:
        raise ResolutionError(
            "RuntimeLacksSecurityFeature",
            f"securityLevel {level} needs a runtime whose spec.securityFeatures lists {', '.join(repr(f) for f in missing)}; "
            f"RuntimeEnvironment {runtime_name!r} lists {list(runtime.security_features)}",
        )


def _usable(quantity: Optional[str]) -> Optional[str]:
    """A runtime's recommendation, when it is a positive quantity (a bad one is reported on the runtime)."""
    if quantity is None:
        return None
    try:
        return quantity if parse_quantity(quantity) > 0 else None
    except ValueError:
        return None


def _cpu_source(spec: SandboxSpec, defaults: Optional[ResourceDefaults], req: ResourceRequirements, cpu: str) -> str:
    """Where the effective CPU came from, for the message of a refusal."""
    if spec.resources.cpu is not None:
        return "spec.resources.cpu"
    if req.min_cpu is not None and cpu == req.min_cpu:
        return "the runtime's minCpu"
    if defaults is not None and defaults.cpu is not None:
        return "the profile's resourceDefaults.cpu"
    if _usable(req.recommended_cpu) is not None:
        return "the runtime's recommendedCpu"
    return "the built-in default"


def _dedupe_rules(rules: Iterable[NetworkRule]) -> tuple[NetworkRule, ...]:
    seen: dict[str, NetworkRule] = {}
    for rule in rules:
        ports = tuple(sorted({(p.port, p.protocol) for p in rule.ports}))
        canon = NetworkRule(domain=rule.domain, cidr=rule.cidr, ports=[Port(port=p, protocol=q) for p, q in ports])
        seen.setdefault(canon.model_dump_json(), canon)
    return tuple(seen[k] for k in sorted(seen))


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def merge(
    spec: SandboxSpec,
    runtime_name: str,
    runtime: RuntimeEnvironmentSpec,
    profile: Optional[tuple[str, SandboxProfileSpec]],
    retain_storage_class: str = "",
) -> Effective:
    prof = profile[1] if profile else None
    if prof and prof.language != runtime.language:
        raise ResolutionError("ProfileLanguageMismatch", f"the profile is for language {prof.language!r}, the runtime {runtime_name!r} is {runtime.language!r}")

    # Security level: the profile's is a floor.
    level = spec.security_level or (prof.security_level if prof else C.DEFAULT_SECURITY_LEVEL)
    if prof and SECURITY_RANK[level] < SECURITY_RANK[prof.security_level]:
        raise ResolutionError("SecurityWeakening", f"securityLevel {level!r} is weaker than the profile's {prof.security_level!r}")

    check_security_features(level, runtime_name, runtime)

    # Seccomp: a profile's Localhost profile is binding.
    sc = spec.security_context.seccomp_profile
    if prof and prof.seccomp_profile:
        if sc is not None and (sc.type != C.SECCOMP_LOCALHOST or sc.localhost_profile != prof.seccomp_profile):
            raise ResolutionError("SecurityWeakening", f"the profile requires seccomp profile {prof.seccomp_profile!r}; the sandbox may not replace it")
        seccomp = Seccomp(C.SECCOMP_LOCALHOST, prof.seccomp_profile)
    elif sc is not None:
        seccomp = Seccomp(sc.type, sc.localhost_profile)
    else:
        seccomp = Seccomp(C.SECCOMP_RUNTIME_DEFAULT)
    if level == "custom" and seccomp.type != C.SECCOMP_LOCALHOST:
        raise ResolutionError("InvalidSpec", "securityLevel custom needs a Localhost seccomp profile, from the sandbox or its profile")

    # Resources: sandbox > profile > the runtime's recommendation > built-in, then the runtime's minimum.
    defaults = prof.resource_defaults if prof else None
    req = runtime.resource_requirements
    cpu = _floor(spec.resources.cpu, (defaults and defaults.cpu) or _usable(req.recommended_cpu) or C.DEFAULT_CPU, req.min_cpu, "cpu")
    memory = _floor(spec.resources.memory, (defaults and defaults.memory) or _usable(req.recommended_memory) or C.DEFAULT_MEMORY,
                    req.min_memory, "memory")
    ephemeral = spec.resources.ephemeral_storage or (defaults and defaults.ephemeral_storage) or C.DEFAULT_EPHEMERAL_STORAGE
    if spec.resources.cpu_pinning and not whole_cpus(cpu):
        raise ResolutionError("InvalidSpec", pinning_message(cpu, _cpu_source(spec, defaults, req, cpu)))

    # Filesystem: writable paths may not reach into the profile's read-only paths.
    if spec.filesystem.writable_paths is not None:
        writable = spec.filesystem.writable_paths
    elif prof and prof.filesystem_config.writable_paths:
        writable = prof.filesystem_config.writable_paths
    else:
        writable = list(C.DEFAULT_WRITABLE_PATHS)
    if prof:
        for path in writable:
            for ro in prof.filesystem_config.read_only_paths:
                if _under(path, ro) or _under(ro, path):
                    raise ResolutionError("SecurityWeakening", f"writable path {path!r} overlaps the profile's read-only path {ro!r}")

    # Network: the profile's rules are added to the sandbox's own.
    egress = list(spec.network_access.egress)
    ingress_rules: list[NetworkRule] = []
    if prof:
        for policy in prof.network_policies:
            (egress if policy.type == "egress" else ingress_rules).extend(policy.rules)

    for rule in egress:
        why = forbidden_range(rule.cidr) if rule.cidr else None
        if why:
            raise ResolutionError("InvalidSpec", f"egress to {rule.cidr} is not allowed: it {why}")
    # Profile ingress rules are checked here too, whatever the profile controller said.
    for rule in ingress_rules:
        if rule.domain:
            raise ResolutionError("InvalidSpec", f"ingress from domain {rule.domain!r} is not allowed: a NetworkPolicy can only admit a cidr (a domain would open the sandbox to every public address)")
        why = forbidden_range(rule.cidr) if rule.cidr else None
        if why:
            raise ResolutionError("InvalidSpec", f"ingress from {rule.cidr} is not allowed: it {why}")

    storage = spec.storage
    storage_class = storage.storage_class_name
    if storage.persistent and storage.retention_policy == C.RETENTION_RETAIN and not storage_class:
        if not retain_storage_class:
            raise ResolutionError(
                "InvalidSpec",
                "storage.retentionPolicy Retain needs storage.storageClassName (a class whose reclaimPolicy is Retain), "
                "or the operator's retain storage class (chart value storage.retainStorageClassName)",
            )
        storage_class = retain_storage_class

    return Effective(
        runtime_name=runtime_name,
        image=runtime.image,
        security_level=level,
        cpu=cpu,
        memory=memory,
        ephemeral_storage=ephemeral,
        cpu_pinning=spec.resources.cpu_pinning,
        writable_paths=tuple(sorted(writable)),
        run_as_user=spec.security_context.run_as_user,
        run_as_group=spec.security_context.run_as_group,
        seccomp=seccomp,
        egress=_dedupe_rules(egress),
        ingress=spec.network_access.ingress,
        ingress_rules=_dedupe_rules(ingress_rules),
        persistent=storage.persistent,
        volume_size=storage.volume_size,
        retention_policy=storage.retention_policy,
        storage_class_name=storage_class,
        timeout=spec.timeout,
        profile_name=profile[0] if profile else None,
        env=tuple(spec.env or ()),
        env_from=tuple(spec.env_from or ()),
    )



# ---------------------------------------------------------------------------------------------
# A sandbox's whole resolution, once per distinct input

# Inputs up to this size (as JSON) are resolved once per worker; larger ones are resolved every time.
RESOLUTION_CACHE_MAX_BYTES = 32 * 1024


@dataclass(frozen=True)
class Resolved:
    spec: SandboxSpec
    eff: Effective


@dataclass(frozen=True)
class _Refused:
    """A SpecError (reason None) or a ResolutionError, as data: the cache keeps no exception (nor
    its traceback), and each caller raises a fresh one."""

    reason: Optional[str]
    message: str
    waiting: bool = False

    def error(self) -> Exception:
        if self.reason is None:
            return SpecError(self.message)
        return ResolutionError(self.reason, self.message, waiting=self.waiting)


def resolve_sandbox(parent: Mapping[str, Any], namespace: str, runtimes: list[dict[str, Any]], profiles: list[dict[str, Any]],
                    retain_storage_class: str) -> Resolved:
    """The sandbox's spec validated, its runtime and profile resolved and merged; raises SpecError
    or ResolutionError. Every sync of a sandbox repeats this on the same inputs (about a third of
    a sync): it is a pure function of the parts of them it reads, so those parts, as JSON, key a
    cache of its answers. Values JSON cannot carry are resolved uncached (validators.parse_spec)."""
    key_parts = [parent.get("spec"), namespace, retain_storage_class,
                 [_read_part(r, ("name",)) for r in runtimes], [_read_part(p, ("name", "namespace")) for p in profiles]]
    try:
        key = orjson.dumps(key_parts)
    except TypeError:
        key = b""
    if 0 < len(key) <= RESOLUTION_CACHE_MAX_BYTES:
        answer = _resolved(key)
    else:
        answer = _resolve(parent, namespace, runtimes, profiles, retain_storage_class)
    if isinstance(answer, _Refused):
        raise answer.error()
    return answer


def _read_part(obj: Mapping[str, Any], meta_keys: tuple[str, ...]) -> dict[str, Any]:
    """What resolve_runtime and find_profile read of a related object: metadata's name (and
    namespace), spec and status, each only when present (they read absent ones as defaults)."""
    meta = obj["metadata"]
    part: dict[str, Any] = {"metadata": {k: meta[k] for k in meta_keys if k in meta}}
    for key in ("spec", "status"):
        if key in obj:
            part[key] = obj[key]
    return part


@functools.lru_cache(maxsize=512)
def _resolved(key: bytes) -> Resolved | _Refused:
    spec, namespace, retain, runtimes, profiles = orjson.loads(key)
    return _resolve({"spec": spec}, namespace, runtimes, profiles, retain)


def _resolve(parent: Mapping[str, Any], namespace: str, runtimes: list[dict[str, Any]], profiles: list[dict[str, Any]],
             retain_storage_class: str) -> Resolved | _Refused:
    try:
        spec = parse_spec(SandboxSpec, dict(parent))
    except SpecError as exc:
        return _Refused(None, str(exc))
    try:
        runtime_name, runtime = _resolve_runtime(spec.runtime, runtimes)  # cached as a whole here
        profile = find_profile(spec, namespace, profiles)
        eff = merge(spec, runtime_name, runtime, profile, retain_storage_class)
        if not runtime_user_namespaces(runtime_named(runtime_name, runtimes)):
            eff = dataclasses.replace(eff, user_namespaces_supported=False)
        return Resolved(spec, eff)
    except ResolutionError as exc:
        return _Refused(exc.reason, exc.message, exc.waiting)
