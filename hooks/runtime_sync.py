"""The RuntimeEnvironment controller's sync hook (CompositeController, cluster-scoped parent, no
children): validates the spec and writes status.available, status.lastValidated and the
Available condition.

Pure function of (request, now, config). The checks and their reasons follow the original
reconcileRuntimeEnvironment, in its order; the first failing step decides:

    ImageValidationFailed     image reference syntax; registry allowlist (config)
    CompatibilityCheckFailed  spec shape, language, version, packageManager, resourceRequirements,
                              preInstalledPackages
    SecurityValidationFailed  securityFeatures outside the known set
    ValidationSucceeded       available

The original also checked that the image exists in its registry; a pure hook cannot, so a
missing image surfaces as ImagePullBackOff on the sandbox pod instead.

Determinism: Metacontroller re-syncs on every status change, so lastValidated moves only when the
verdict (available, reason) changes; otherwise the observed value is carried over.

User namespaces: the customize hook relates every Node, and status.userNamespaces says whether
every node a sandbox can be scheduled on reports user-namespace support for the default runtime
handler (node.status.runtimeHandlers[name=""].features.userNamespaces, which the kubelet takes from
its container runtime: containerd >= 2.0 with runc >= 1.2). With LLMSS_USER_NAMESPACES=auto, pods
ask for hostUsers: false only where that holds: a kubelet whose runtime lacks them refuses such a
pod and it waits in ContainerCreating until the sandbox's startup timeout (docs/install.md)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from collections.abc import Mapping
from typing import Any, Optional

from . import constants as C
from . import image_reference
from .conditions import Condition, find_condition, generation, render
from .config import DEFAULT_CONFIG, Config
from .meta import fmt_time, name, objects
from .quantity import parse_quantity
from .response import parent_of
from .validators import RuntimeEnvironmentSpec, SpecError, check_package, parse_spec

# Lower-case identifiers: "python", "nodejs", "c++" would need escaping nowhere we use them.
LANGUAGE_PATTERN = re.compile(r"^[a-z][a-z0-9+._-]{0,62}$")
# "3.10", "20", "1.21.4", "3.13.0rc1", "lts"; no ":" because sandboxes reference "language:version".
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,62}$")
PACKAGE_MANAGER_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")

IMAGE_FAILED = "ImageValidationFailed"
COMPATIBILITY_FAILED = "CompatibilityCheckFailed"
SECURITY_FAILED = "SecurityValidationFailed"
SUCCEEDED = "ValidationSucceeded"


@dataclass(frozen=True)
class Verdict:
    available: bool
    reason: str
    message: str


class _Failed(Exception):
    def __init__(self, reason: str, prefix: str, detail: str) -> None:
        super().__init__(detail)
        self.verdict = Verdict(False, reason, f"{prefix}: {detail}")


def validate(spec: Any, config: Config) -> Verdict:
    """The verdict on one RuntimeEnvironment spec (the raw `spec` object)."""
    try:
        _check_image(spec, config)
        model = _check_compatibility(spec)
        _check_security(model)
    except _Failed as failed:
        return failed.verdict
    return Verdict(True, SUCCEEDED, "Runtime environment is valid and available")


def _check_image(spec: Any, config: Config) -> None:
    prefix = "Runtime image validation failed"
    image = spec.get("image") if isinstance(spec, Mapping) else None
    if not isinstance(image, str) or not image:
        raise _Failed(IMAGE_FAILED, prefix, "spec.image is required")
    try:
        ref = image_reference.parse(image)
    except image_reference.InvalidReference as exc:
        raise _Failed(IMAGE_FAILED, prefix, f"spec.image {image!r}: {exc}") from None
    allowed = {image_reference.normalise_registry(r) for r in config.image_registry_allowlist}
    if allowed and ref.registry not in allowed:
        raise _Failed(IMAGE_FAILED, prefix, f"registry {ref.registry!r} of spec.image is not in the allowlist ({', '.join(sorted(allowed))})")


def _check_compatibility(spec: Any) -> RuntimeEnvironmentSpec:
    prefix = "Runtime compatibility check failed"
    try:
        model: RuntimeEnvironmentSpec = parse_spec(RuntimeEnvironmentSpec, {"spec": spec})
    except SpecError as exc:
        raise _Failed(COMPATIBILITY_FAILED, prefix, str(exc)) from None
    problems: list[str] = []
    if not LANGUAGE_PATTERN.match(model.language):
        problems.append(f"spec.language {model.language!r} must be a lower-case identifier such as python or nodejs")
    if model.version is not None and not VERSION_PATTERN.match(model.version):
        problems.append(f"spec.version {model.version!r} must be letters, digits and . _ + - (e.g. 3.10)")
    if model.package_manager is not None:
        known = C.PACKAGE_MANAGERS.get(model.language)
        if known is not None and model.package_manager not in known:
            problems.append(f"spec.packageManager {model.package_manager!r} is not a {model.language} package manager ({', '.join(known)})")
        elif known is None and not PACKAGE_MANAGER_PATTERN.match(model.package_manager):
            problems.append(f"spec.packageManager {model.package_manager!r} is not a valid name")
    problems.extend(_resource_problems(model))
    bad = [p for p in model.pre_installed_packages if not check_package(p)]
    if bad:
        problems.append(f"spec.preInstalledPackages: invalid package names {bad[:5]}" + (f" and {len(bad) - 5} more" if len(bad) > 5 else ""))
    if problems:
        raise _Failed(COMPATIBILITY_FAILED, prefix, "; ".join(problems))
    return model


def _resource_problems(model: RuntimeEnvironmentSpec) -> list[str]:
    req = model.resource_requirements
    parsed: dict[str, Any] = {}
    problems: list[str] = []
    for field, value in (("minCpu", req.min_cpu), ("recommendedCpu", req.recommended_cpu),
                         ("minMemory", req.min_memory), ("recommendedMemory", req.recommended_memory)):
        if value is None:
            continue
        try:
            quantity = parse_quantity(value)
        except ValueError as exc:
            problems.append(f"spec.resourceRequirements.{field}: {exc}")
            continue
        if quantity <= 0:
            problems.append(f"spec.resourceRequirements.{field} {value!r} must be greater than zero")
            continue
        parsed[field] = quantity
    for resource in ("Cpu", "Memory"):
        low, high = parsed.get(f"min{resource}"), parsed.get(f"recommended{resource}")
        if low is not None and high is not None and low > high:
            problems.append(
                f"spec.resourceRequirements.min{resource} {getattr(req, 'min_' + resource.lower())!r} exceeds "
                f"recommended{resource} {getattr(req, 'recommended_' + resource.lower())!r}"
            )
    return problems


def _check_security(model: RuntimeEnvironmentSpec) -> None:
    unknown = sorted({f for f in model.security_features if f not in C.RUNTIME_SECURITY_FEATURES})
    if unknown:
        raise _Failed(
            SECURITY_FAILED, "Runtime security validation failed",
            f"unknown security features {unknown}; known: {', '.join(C.RUNTIME_SECURITY_FEATURES)}",
        )


def sync(request: Mapping[str, Any], now: datetime, config: Config = DEFAULT_CONFIG) -> dict[str, Any]:
    parent = parent_of(request)
    previous = observed_status(parent)
    verdict = validate(parent.get("spec"), config)
    support = user_namespace_support(request.get("related"))
    status: dict[str, Any] = {
        "available": verdict.available,
        "lastValidated": _last_validated(previous, verdict, now),
        "userNamespaces": {"supported": support.supported},
        "conditions": render(
            [Condition(C.CONDITION_AVAILABLE, "True" if verdict.available else "False", verdict.reason, verdict.message),
             Condition(C.CONDITION_USER_NAMESPACES, "True" if support.supported else "False", support.reason, support.message)],
            previous, now, generation(parent),
        ),
    }
    # No childResources: an empty list is exactly what Metacontroller observes.
    return {"status": status, "children": []}


def customize(request: Mapping[str, Any], now: Optional[datetime] = None, config: Config = DEFAULT_CONFIG) -> dict[str, Any]:
    """Every Node (user_namespace_support reads their taints and runtime handlers). Constant, as
    Metacontroller's per-(UID, generation) cache of this answer wants."""
    return {"relatedResources": [{"apiVersion": "v1", "resource": "nodes"}]}


@dataclass(frozen=True)
class UserNamespaceSupport:
    supported: bool
    reason: str
    message: str


def user_namespace_support(related: Any) -> UserNamespaceSupport:
    """Whether every schedulable node (not cordoned, no NoSchedule/NoExecute taint: where a
    sandbox pod, which tolerates no taint, can land) reports user namespaces for its default
    runtime handler. Not supported without a schedulable node: nothing says a pod would start."""
    nodes = sorted(objects(related, C.GVK_NODE), key=name)
    schedulable = [n for n in nodes if _schedulable(n)]
    if not schedulable:
        return UserNamespaceSupport(False, C.REASON_NO_SCHEDULABLE_NODES,
                                    f"no schedulable node seen ({len(nodes)} nodes, none untainted and uncordoned; "
                                    "the controller needs list and watch on nodes): pods run without hostUsers: false")
    lacking = [name(n) for n in schedulable if not _node_user_namespaces(n)]
    if lacking:
        shown = ", ".join(lacking[:5]) + (f" and {len(lacking) - 5} more" if len(lacking) > 5 else "")
        return UserNamespaceSupport(False, C.REASON_NOT_SUPPORTED_BY_NODES,
                                    f"{len(lacking)} of {len(schedulable)} schedulable nodes do not report user-namespace support "
                                    f"({shown}; needs containerd >= 2.0 and runc >= 1.2): pods run without hostUsers: false")
    return UserNamespaceSupport(True, C.REASON_SUPPORTED_BY_NODES,
                                f"all {len(schedulable)} schedulable nodes report user-namespace support: pods get hostUsers: false")


def _schedulable(node: Mapping[str, Any]) -> bool:
    spec = node.get("spec") if isinstance(node.get("spec"), Mapping) else {}
    if spec.get("unschedulable") is True:
        return False
    taints = spec.get("taints") if isinstance(spec.get("taints"), list) else []
    return not any(isinstance(t, Mapping) and t.get("effect") in ("NoSchedule", "NoExecute") for t in taints)


def _node_user_namespaces(node: Mapping[str, Any]) -> bool:
    status = node.get("status") if isinstance(node.get("status"), Mapping) else {}
    handlers = status.get("runtimeHandlers") if isinstance(status.get("runtimeHandlers"), list) else []
    default = next((h for h in handlers if isinstance(h, Mapping) and h.get("name", "") == ""), None)
    features = default.get("features") if isinstance(default, Mapping) else None
    return isinstance(features, Mapping) and features.get("userNamespaces") is True


def observed_status(parent: Mapping[str, Any]) -> dict[str, Any]:
    """The parent's observed status, with a malformed `conditions` dropped: a status someone
    edited by hand is no reason to fail the sync (it is replaced by this answer anyway)."""
    status = parent.get("status")
    if not isinstance(status, Mapping):
        return {}
    out = dict(status)
    conditions = out.get("conditions")
    out["conditions"] = [c for c in conditions if isinstance(c, Mapping)] if isinstance(conditions, list) else []
    return out


def _last_validated(previous: Mapping[str, Any], verdict: Verdict, now: datetime) -> str:
    stamp = previous.get("lastValidated")
    if isinstance(stamp, str) and previous.get("available") is verdict.available and _previous_reason(previous) == verdict.reason:
        return stamp
    return fmt_time(now)


def _previous_reason(previous: Mapping[str, Any]) -> Optional[str]:
    cond = find_condition(previous, C.CONDITION_AVAILABLE)
    reason = cond.get("reason") if cond is not None else None
    return reason if isinstance(reason, str) else None
