"""The SandboxProfile controller's hooks (CompositeController with no children): customize and
sync. Validates the profile and writes status.validated, status.language and the Validated
condition; the Sandbox hook refuses profiles whose status.validated is false.

Pure functions of (request, now, config). Steps and reasons of the original
reconcileSandboxProfile, in its order; the first failing step decides:

    ValidationFailed          the spec's shape (the pydantic model), except the sections that
                              later steps check: securityLevel, seccompProfile, networkPolicies,
                              resourceDefaults, preInstalledPackages
    RuntimeValidationFailed   no AVAILABLE RuntimeEnvironment of the profile's language
    SecurityValidationFailed  security level, seccomp path, custom needs seccomp, paths overlap
    NetworkValidationFailed   CIDRs, domains, ports, protocols; ingress needs a CIDR; no CIDR
                              inside a private or link-local range
    ResourceValidationFailed  resource defaults parse and are positive
    PackageValidationFailed   package name syntax
    ValidationSucceeded       validated

A profile whose language has RuntimeEnvironments that are not validated yet (and none available)
is not judged on that step: if every other step passes, status.validated is left out and the
condition is Unknown (RuntimeValidationPending). Metacontroller re-syncs the profile when a
related RuntimeEnvironment changes, so the verdict follows as soon as the runtime's does."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from collections.abc import Mapping
from typing import Any, Callable, Optional

from pydantic import ValidationError

from . import constants as C
from .conditions import Condition, generation, render
from .config import DEFAULT_CONFIG, Config
from .meta import objects
from .resolve import forbidden_range, runtime_available
from .runtime_sync import observed_status
from .response import parent_of
from .validators import (
    RuntimeEnvironmentSpec,
    SandboxProfileSpec,
    SpecError,
    check_package,
    check_seccomp_path,
    describe,
    parse_spec,
)

VALIDATION_FAILED = "ValidationFailed"
RUNTIME_FAILED = "RuntimeValidationFailed"
RUNTIME_PENDING = "RuntimeValidationPending"
SECURITY_FAILED = "SecurityValidationFailed"
NETWORK_FAILED = "NetworkValidationFailed"
RESOURCE_FAILED = "ResourceValidationFailed"
PACKAGE_FAILED = "PackageValidationFailed"
SUCCEEDED = "ValidationSucceeded"

# Spec sections a later step validates (camelCase, as on the wire); basic validation skips them.
_DEFERRED = ("securityLevel", "seccompProfile", "networkPolicies", "resourceDefaults", "preInstalledPackages")


@dataclass(frozen=True)
class Verdict:
    validated: Optional[bool]  # None: waiting for a runtime's own validation
    reason: str
    message: str


class _Failed(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


# ---------------------------------------------------------------------------------------------
# Customize


def customize(request: Mapping[str, Any], now: Optional[datetime] = None, config: Config = DEFAULT_CONFIG) -> dict[str, Any]:
    """Every RuntimeEnvironment (cluster-scoped, few; their language is in the spec, not in a
    label, so no selector can narrow them). Constant, so Metacontroller's cache is always right."""
    parent_of(request)
    return {"relatedResources": [{"apiVersion": C.API_VERSION, "resource": "runtimeenvironments"}]}


# ---------------------------------------------------------------------------------------------
# Validation steps


def _section(spec: Mapping[str, Any], key: str) -> dict[str, Any]:
    """A spec holding only `language` and one section, so the model reports that section's
    errors with their full path (spec.networkPolicies[0].rules[1].cidr)."""
    out: dict[str, Any] = {"language": "x"}
    if key in spec:
        out[key] = spec[key]
    return out


def _model_errors(spec: Mapping[str, Any], key: str) -> Optional[str]:
    try:
        SandboxProfileSpec.model_validate(_section(spec, key))
    except ValidationError as exc:
        return describe(exc)
    return None


def _basic(spec: Mapping[str, Any]) -> SandboxProfileSpec:
    try:
        return parse_spec(SandboxProfileSpec, {"spec": {k: v for k, v in spec.items() if k not in _DEFERRED}})
    except SpecError as exc:
        raise _Failed(VALIDATION_FAILED, f"Profile validation failed: {exc}") from None


def _runtimes(language: str, related: Any) -> Optional[str]:
    """None when an available runtime of the language exists; RUNTIME_PENDING when none is
    available but some are not validated yet; raises when there is none to wait for."""
    available, pending, unavailable = [], [], []
    for obj in objects(related, C.GVK_RUNTIME):
        try:
            rte = parse_spec(RuntimeEnvironmentSpec, dict(obj))
        except SpecError:
            continue  # its own hook marks it unavailable
        if rte.language != language:
            continue
        state = runtime_available(obj)
        name = str(obj["metadata"].get("name", ""))
        (available if state else pending if state is None else unavailable).append(name)
    if available:
        return None
    if pending:
        return RUNTIME_PENDING
    detail = (
        f"every RuntimeEnvironment of language {language!r} is unavailable ({', '.join(unavailable)})"
        if unavailable else f"there is no RuntimeEnvironment of language {language!r}"
    )
    raise _Failed(RUNTIME_FAILED, f"Profile is not compatible with any runtime: {detail}")


def _security(spec: Mapping[str, Any], basic: SandboxProfileSpec) -> None:
    problems: list[str] = []
    level = spec.get("securityLevel", C.DEFAULT_SECURITY_LEVEL)
    if level not in C.SECURITY_LEVELS:
        problems.append(f"spec.securityLevel {level!r} is not one of {list(C.SECURITY_LEVELS)}")
    seccomp = spec.get("seccompProfile")
    if seccomp is not None:
        if not isinstance(seccomp, str) or not seccomp or len(seccomp) > 255 or not check_seccomp_path(seccomp):
            problems.append(
                f"spec.seccompProfile {seccomp!r} must be a relative path under the kubelet's seccomp "
                "directory (letters, digits, . _ -; no '..', no leading '/')"
            )
    elif level == "custom":
        problems.append("spec.securityLevel custom needs spec.seccompProfile (a Localhost seccomp profile)")
    # A writable path inside (or around) a read-only one would make every sandbox that takes the
    # profile's defaults fail with SecurityWeakening; catch it here, once.
    fs = basic.filesystem_config
    for path in fs.writable_paths:
        for ro in fs.read_only_paths:
            if path == ro or path.startswith(ro.rstrip("/") + "/") or ro.startswith(path.rstrip("/") + "/"):
                problems.append(f"spec.filesystemConfig: writable path {path!r} overlaps read-only path {ro!r}")
    if problems:
        raise _Failed(SECURITY_FAILED, "Profile security validation failed: " + "; ".join(problems))


def _network(spec: Mapping[str, Any]) -> None:
    errors = _model_errors(spec, "networkPolicies")
    if errors:
        raise _Failed(NETWORK_FAILED, f"Profile network policy validation failed: {errors}")
    model = SandboxProfileSpec.model_validate(_section(spec, "networkPolicies"))
    problems: list[str] = []
    for i, policy in enumerate(model.network_policies):
        for j, rule in enumerate(policy.rules):
            where = f"spec.networkPolicies[{i}].rules[{j}]"
            if policy.type == "ingress" and rule.domain is not None:
                # A NetworkPolicy cannot match a source by name; a domain would become 0.0.0.0/0.
                problems.append(f"{where}: ingress rules need a cidr, not a domain ({rule.domain!r})")
            why = forbidden_range(rule.cidr) if rule.cidr is not None else None
            if why:
                problems.append(f"{where}: {rule.cidr} {why}")
    if problems:
        raise _Failed(NETWORK_FAILED, "Profile network policy validation failed: " + "; ".join(problems))


def _resources(spec: Mapping[str, Any]) -> None:
    errors = _model_errors(spec, "resourceDefaults")
    if errors:
        raise _Failed(RESOURCE_FAILED, f"Profile resource defaults validation failed: {errors}")


def _packages(spec: Mapping[str, Any]) -> None:
    errors = _model_errors(spec, "preInstalledPackages")
    if errors:
        raise _Failed(PACKAGE_FAILED, f"Profile package validation failed: {errors}")
    packages = spec.get("preInstalledPackages") or []
    bad = [p for p in packages if not check_package(p)]
    dupes = sorted({p for p in packages if packages.count(p) > 1})
    problems = []
    if bad:
        problems.append(f"invalid package names {bad[:5]}" + (f" and {len(bad) - 5} more" if len(bad) > 5 else ""))
    if dupes:
        problems.append(f"packages listed twice {dupes[:5]}")
    if problems:
        raise _Failed(PACKAGE_FAILED, "Profile package validation failed: spec.preInstalledPackages: " + "; ".join(problems))


def validate(spec: Any, related: Any) -> Verdict:
    if not isinstance(spec, Mapping):
        return Verdict(False, VALIDATION_FAILED, "Profile validation failed: spec: must be an object")
    try:
        basic = _basic(spec)
        pending = _runtimes(basic.language, related)
        later: list[Callable[[], None]] = [
            lambda: _security(spec, basic), lambda: _network(spec), lambda: _resources(spec), lambda: _packages(spec),
        ]
        for step in later:
            step()
        # Whatever the steps missed (none expected) still fails closed.
        parse_spec(SandboxProfileSpec, {"spec": dict(spec)})
    except _Failed as failed:
        return Verdict(False, failed.reason, failed.message)
    except SpecError as exc:
        return Verdict(False, VALIDATION_FAILED, f"Profile validation failed: {exc}")
    if pending:
        return Verdict(None, RUNTIME_PENDING, f"waiting for the RuntimeEnvironments of language {basic.language!r} to be validated")
    return Verdict(True, SUCCEEDED, "Profile is valid and ready to use")


# ---------------------------------------------------------------------------------------------
# Sync


def sync(request: Mapping[str, Any], now: datetime, config: Config = DEFAULT_CONFIG) -> dict[str, Any]:
    parent = parent_of(request)
    previous = observed_status(parent)
    spec = parent.get("spec")
    verdict = validate(spec, request.get("related") or {})
    cond_status = "Unknown" if verdict.validated is None else "True" if verdict.validated else "False"
    status: dict[str, Any] = {
        "conditions": render([Condition(C.CONDITION_VALIDATED, cond_status, verdict.reason, verdict.message)],
                             previous, now, generation(parent)),
    }
    if verdict.validated is not None:
        status["validated"] = verdict.validated
    language = spec.get("language") if isinstance(spec, Mapping) else None
    if isinstance(language, str) and language:
        status["language"] = language
    return {"status": dict(sorted(status.items())), "children": []}

