"""What a sandbox's running pod is, read from the pod itself, and how it differs from the spec.

Pods are immutable and Metacontroller never updates a sandbox's pod (OnDelete): after a spec edit
the pod that runs keeps its earlier settings. Status describes that pod (its security level and
runtime) and the condition SpecApplied names every pod setting that differs, with how to apply it:
the annotation llmsafespace.dev/replace-pod on the sandbox (docs/failure-semantics.md, section 7).

Cold pods are compared by reading the same settings from the observed pod and from the pod the
spec would build now, so the builder stays the only definition of a pod. A warm pod is known by its
WarmPod (runtime, image, level, resources); it fits while it offers at least what the spec asks."""
from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Mapping
from typing import Any, Callable, Iterable, Optional

import orjson

from . import constants as C
from .conditions import Condition
from .meta import MAPPING, name, namespace
from .quantity import parse_quantity
from .resolve import Effective

CONDITION: str = "SpecApplied"
REASON_UP_TO_DATE = "PodUpToDate"
REASON_OUTDATED = "PodOutdated"
REASON_REPLACING = "PodReplacing"


@dataclass(frozen=True)
class PodSettings:
    """The settings of a sandbox pod that a spec edit can change, as the pod states them."""

    security_level: str  # high: a RuntimeClass; custom: a Localhost seccomp profile; else standard
    image: str
    cpu: str
    memory: str
    ephemeral_storage: str
    cpu_pinning: bool
    writable_paths: tuple[str, ...]
    run_as_user: Optional[int]
    run_as_group: Optional[int]
    seccomp: str
    timeout: Optional[int]
    # The container's env and envFrom, canonical JSON: compared, never shown (values, Secret names).
    environment: str = ""


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, MAPPING) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def read_pod(pod: Mapping[str, Any]) -> PodSettings:
    """A pod's settings, from its spec alone. Tolerant of what the API server adds (defaults,
    canonical quantities): only fields our builder writes are read."""
    spec = _mapping(pod.get("spec"))
    containers = [c for c in _list(spec.get("containers")) if isinstance(c, MAPPING)]
    container = next((c for c in containers if c.get("name") == C.SANDBOX_CONTAINER), containers[0] if containers else {})
    limits = _mapping(_mapping(container.get("resources")).get("limits"))
    security = _mapping(spec.get("securityContext"))
    seccomp = _mapping(security.get("seccompProfile"))
    seccomp_text = str(seccomp.get("type") or "")
    if seccomp.get("type") == C.SECCOMP_LOCALHOST:
        seccomp_text += f" {seccomp.get('localhostProfile') or ''}".rstrip()
    scratch = {v.get("name") for v in _list(spec.get("volumes")) if isinstance(v, MAPPING) and "emptyDir" in v}
    paths = tuple(sorted(str(m.get("mountPath")) for m in _list(container.get("volumeMounts"))
                         if isinstance(m, MAPPING) and m.get("name") in scratch))
    if spec.get("runtimeClassName"):
        level = "high"
    elif seccomp.get("type") == C.SECCOMP_LOCALHOST:
        level = "custom"
    else:
        level = "standard"
    grace = spec.get("terminationGracePeriodSeconds")
    return PodSettings(
        security_level=level,
        image=str(container.get("image") or ""),
        cpu=str(limits.get("cpu") or ""),
        memory=str(limits.get("memory") or ""),
        ephemeral_storage=str(limits.get("ephemeral-storage") or ""),
        cpu_pinning=_mapping(spec.get("nodeSelector")).get(C.NODE_SELECTOR_CPU_PINNING) == "true",
        writable_paths=paths,
        run_as_user=security.get("runAsUser") if isinstance(security.get("runAsUser"), int) else None,
        run_as_group=security.get("runAsGroup") if isinstance(security.get("runAsGroup"), int) else None,
        seccomp=seccomp_text,
        timeout=grace if isinstance(grace, int) else None,
        environment=environment(_user_env(container.get("env")), container.get("envFrom")),
    )


def _user_env(env: Any) -> Any:
    """The running container's env without the runtime's variables, which the spec never holds."""
    if not isinstance(env, list):
        return env
    return [e for e in env if not (isinstance(e, dict) and e.get("name") in C.RUNTIME_ENV_NAMES)]


def environment(env: Any, env_from: Any) -> str:
    """env and envFrom as one canonical string, [] and absent alike."""
    return orjson.dumps({"env": _list(env), "envFrom": _list(env_from)}, option=orjson.OPT_SORT_KEYS).decode()


def _effective_environment(eff: Effective) -> str:
    return environment([e.wire() for e in eff.env], [e.wire() for e in eff.env_from])


# What SpecApplied says of an environment that differs: no name, value or Secret reference.
ENV_DIFFERS = "env/envFrom: the running pod's environment differs from the spec's (not shown: it may name Secrets)"


def _same_quantity(a: str, b: str) -> bool:
    try:
        return parse_quantity(a) == parse_quantity(b)
    except ValueError:
        return a == b


def _at_least(have: str, want: str) -> bool:
    try:
        return parse_quantity(have) >= parse_quantity(want)
    except ValueError:
        return have == want


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ", ".join(value) if value else "none"
    return str(value)


# (spec field named in the message, PodSettings attribute, equality); runtime is compared apart.
_COLD_FIELDS: tuple[tuple[str, str, Callable[[Any, Any], bool]], ...] = (
    ("securityLevel", "security_level", lambda a, b: a == b),
    ("resources.cpu", "cpu", _same_quantity),
    ("resources.memory", "memory", _same_quantity),
    ("resources.ephemeralStorage", "ephemeral_storage", _same_quantity),
    ("resources.cpuPinning", "cpu_pinning", lambda a, b: a == b),
    ("filesystem.writablePaths", "writable_paths", lambda a, b: a == b),
    ("securityContext.runAsUser", "run_as_user", lambda a, b: a == b),
    ("securityContext.runAsGroup", "run_as_group", lambda a, b: a == b),
    ("securityContext.seccompProfile", "seccomp", lambda a, b: a == b),
    ("timeout", "timeout", lambda a, b: a == b),
)


def running_runtime(image: str, eff: Effective, runtimes: Iterable[Mapping[str, Any]], previous: Any) -> str:
    """The RuntimeEnvironment a pod running `image` was made from: the resolved one when the image
    is its image, else the first (by name) whose image it is, else what status said before (the
    runtime's image was edited since), else the resolved one."""
    if image == eff.image:
        return eff.runtime_name
    for rte in sorted(runtimes, key=name):
        if _mapping(rte.get("spec")).get("image") == image:
            return name(rte)
    before = previous.get("runtimeEnvironment") if isinstance(previous, MAPPING) else None
    return before if isinstance(before, str) and before else eff.runtime_name


def _runtime_difference(running_name: str, running_image: str, eff: Effective) -> Optional[str]:
    if running_image == eff.image:
        return None
    if running_name != eff.runtime_name:
        return f"runtime: runs {running_name}, spec asks {eff.runtime_name} (image {running_image}, spec's {eff.image})"
    return f"runtime image: runs {running_image}, spec asks {eff.image}"


def cold_differences(running: PodSettings, wanted: PodSettings, running_name: str, eff: Effective) -> list[str]:
    """Every pod setting of the spec that the running cold pod does not have, in a stable order."""
    out = [f"{field}: runs {_text(getattr(running, attr))}, spec asks {_text(getattr(wanted, attr))}"
           for field, attr, same in _COLD_FIELDS if not same(getattr(running, attr), getattr(wanted, attr))]
    runtime = _runtime_difference(running_name, running.image, eff)
    env = [ENV_DIFFERS] if running.environment != wanted.environment else []
    return out[:1] + ([runtime] if runtime else []) + out[1:] + env


def pod_changes(old_pod: Mapping[str, Any], new_pod: Mapping[str, Any]) -> list[str]:
    """The settings a spec edit changes between two desired pods, named by the spec field, in
    the order SpecApplied lists them (`llmsafespace diff`: what a running pod would not get)."""
    old, new = read_pod(old_pod), read_pod(new_pod)
    out = [f"{field}: {_text(getattr(old, attr))} -> {_text(getattr(new, attr))}"
           for field, attr, same in _COLD_FIELDS if not same(getattr(old, attr), getattr(new, attr))]
    image = [f"runtime image: {old.image} -> {new.image}"] if old.image != new.image else []
    env = ["env/envFrom: changed"] if old.environment != new.environment else []
    return out[:1] + image + out[1:] + env


def running_level(running: PodSettings, wanted: PodSettings, eff: Effective) -> str:
    """The security level a running pod has. A pod identical in level to the spec's has the spec's
    level (a standard sandbox with a Localhost seccomp profile runs the very pod a custom one does)."""
    return eff.security_level if running.security_level == wanted.security_level else running.security_level


def warm_differences(warm_pod: Mapping[str, Any], running_name: str, eff: Effective) -> list[str]:
    """What the spec asks that the warm pod (known by its WarmPod) does not give. A warm pod has
    its pool's resources, at least what the sandbox asked when it was bound; every other setting
    is the default (hooks/warm.py, pool_shape_fits)."""
    spec = _mapping(warm_pod.get("spec"))
    res = _mapping(spec.get("resources"))
    out = []
    level = str(spec.get("securityLevel") or C.DEFAULT_SECURITY_LEVEL)
    if level != eff.security_level:
        out.append(f"securityLevel: runs {level}, spec asks {eff.security_level}")
    runtime = _runtime_difference(running_name, str(spec.get("image") or ""), eff)
    if runtime:
        out.append(runtime)
    for field, key, default, want in (("resources.cpu", "cpu", C.DEFAULT_CPU, eff.cpu),
                                      ("resources.memory", "memory", C.DEFAULT_MEMORY, eff.memory),
                                      ("resources.ephemeralStorage", "ephemeralStorage", C.DEFAULT_EPHEMERAL_STORAGE, eff.ephemeral_storage)):
        have = str(res.get(key) or default)
        if not _at_least(have, want):
            out.append(f"{field}: runs {have}, spec asks {want}")
    defaults = (
        ("resources.cpuPinning", False, eff.cpu_pinning),
        ("filesystem.writablePaths", C.DEFAULT_WRITABLE_PATHS, eff.writable_paths),
        ("securityContext.runAsUser", C.DEFAULT_RUN_AS_USER, eff.run_as_user),
        ("securityContext.runAsGroup", C.DEFAULT_RUN_AS_GROUP, eff.run_as_group),
        ("securityContext.seccompProfile", C.SECCOMP_RUNTIME_DEFAULT,
         eff.seccomp.type + (f" {eff.seccomp.localhost_profile}" if eff.seccomp.localhost_profile else "")),
    )
    for field, have_value, want_value in defaults:
        fits = set(want_value) <= set(have_value) if field == "filesystem.writablePaths" else have_value == want_value
        if not fits:
            out.append(f"{field}: runs {_text(have_value)}, spec asks {_text(want_value)}")
    if environment(spec.get("env"), spec.get("envFrom")) != _effective_environment(eff):
        out.append(ENV_DIFFERS)
    return out


def _request_hint(parent: Mapping[str, Any]) -> str:
    return (f"kubectl annotate sandbox {name(parent)} -n {namespace(parent)} {C.ANNOTATION_REPLACE_POD}=<new token> "
            f"--overwrite (any new value, e.g. $(date +%s))")


def condition(parent: Mapping[str, Any], pod_label: str, differences: list[str], warm: bool, replacing: Optional[str]) -> Condition:
    """SpecApplied: True when the running pod has every pod setting of the spec; else which ones it
    lacks and how to apply them, or that the requested replacement is under way."""
    if replacing is not None:
        return Condition(CONDITION, "False", REASON_REPLACING,
                         f"replacing {pod_label} as requested ({C.ANNOTATION_REPLACE_POD}={replacing}); the new pod gets the current spec")
    if not differences:
        return Condition(CONDITION, "True", REASON_UP_TO_DATE, f"{pod_label} has every pod setting of the current spec")
    what = ("A cold-started pod of its own then replaces the warm pod (a pool's pods have the pool's settings)" if warm else
            "The pod is replaced once per token (a persistent volume is kept); the sandbox is unavailable until the new pod is ready")
    return Condition(CONDITION, "False", REASON_OUTDATED,
                     f"{pod_label} was made from an earlier spec: {'; '.join(differences)}. A running pod cannot change; to apply "
                     f"the spec, request a new pod: {_request_hint(parent)}. {what}")
