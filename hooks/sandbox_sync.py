"""The Sandbox controller's hooks (CompositeController): customize, sync and finalize.

Pure functions of (request, now, config). Children: Pod (cold start only), Service,
ServiceAccount, PersistentVolumeClaim (persistent storage), NetworkPolicies. Related:
RuntimeEnvironments, the SandboxProfile, the WarmPoolOffers of the namespace (what each pool's
pods are) and the WarmPods bound to this sandbox.

Safety rules (ARCHITECTURE.md): an invalid or unresolvable spec never deletes existing children
(they are returned unchanged and the error goes into conditions); internal errors raise, so the
HTTP layer answers 5xx and Metacontroller retries; user labels never override controller labels."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from collections.abc import Mapping
from typing import Any, Optional

from . import constants as C
from . import drift
from . import egress_proxy
from . import suspend
from . import warm
from .builders import cilium_policy
from .builders import cluster_network_policy as cnp
from .builders import network_policy as np
from .builders.pod import PodShape, build_pod
from .builders.service import build_service
from .builders.service_account import build_service_account
from .builders.storage import build_pvc
from .conditions import Condition, find_condition
from .config import DEFAULT_CONFIG, Config
from .meta import (
    MAPPING, add_seconds, annotations, created, dns_label, fmt_time, is_deleting, label_value, name, namespace, objects,
    parse_time, uid, user_labels,
)
from .request import SyncRequest
from .response import FINALIZE_POLL_SECONDS, as_desired, composite_response, finalize_response, parent_of
from .resolve import Effective, ResolutionError, resolve_sandbox
from .validators import SandboxSpec, SpecError

CHILD_KINDS = (C.GVK_POD, C.GVK_SERVICE, C.GVK_SERVICE_ACCOUNT, C.GVK_PVC, C.GVK_NETWORK_POLICY, C.GVK_CILIUM_NETWORK_POLICY)
CREATE_POLL_SECONDS = 5.0
CONDITION_CHILDREN: str = "ChildrenCreated"
# Container waiting reasons of a pod that is on its way; any other one is why it does not start.
STARTING_REASONS = frozenset({"", "ContainerCreating", "PodInitializing"})


# ---------------------------------------------------------------------------------------------
# Names and labels


@dataclass(frozen=True)
class Names:
    base: str  # sandbox-<name>, a DNS-1035 label: Service, Pod, ServiceAccount

    @staticmethod
    def of(parent: Mapping[str, Any]) -> "Names":
        return Names(dns_label("sandbox", name(parent)))

    @property
    def pvc(self) -> str:
        return f"{self.base}-data"

    def policy(self, suffix: str) -> str:
        return f"{self.base}-{suffix}"


def selector(parent: Mapping[str, Any]) -> dict[str, str]:
    """What Service and NetworkPolicies select: the sandbox's UID, which no other object has."""
    return {C.LABEL_APP: C.APP_NAME, C.LABEL_SANDBOX_UID: uid(parent)}


def identity_labels(parent: Mapping[str, Any]) -> dict[str, str]:
    return {
        C.LABEL_SANDBOX_ID: label_value(name(parent)),
        C.LABEL_SANDBOX_UID: uid(parent),
    }


def child_labels(parent: Mapping[str, Any]) -> dict[str, str]:
    # User labels first, controller labels last: a user label can never override ours.
    return {
        **user_labels(parent),
        C.LABEL_APP: C.APP_NAME,
        C.LABEL_COMPONENT: C.COMPONENT_SANDBOX,
        C.LABEL_MANAGED_BY: C.MANAGED_BY,
        **identity_labels(parent),
    }


# ---------------------------------------------------------------------------------------------
# Customize


def customize(request: Mapping[str, Any], now: Optional[datetime] = None, config: Config = DEFAULT_CONFIG) -> dict[str, Any]:
    """Related objects. Depends only on the parent's spec, name and UID: Metacontroller caches the
    answer per (UID, generation)."""
    parent = parent_of(request)
    ns = namespace(parent)
    rules: list[dict[str, Any]] = [
        # Cluster-scoped; resolution by language:version needs all of them (there are few).
        {"apiVersion": C.API_VERSION, "resource": "runtimeenvironments"},
        # The pools' offers, not the pools: a pool's status changes with every assignment, and
        # each change synced every sandbox of the namespace (measured on a real control plane,
        # 30 warm sandboxes created 4 a second: 449 sandbox syncs; 251 reading offers, which
        # change only with the pool's shape).
        {"apiVersion": C.API_VERSION, "resource": "warmpooloffers", "namespace": ns},
        {
            "apiVersion": C.API_VERSION, "resource": "warmpods", "namespace": ns,
            "labelSelector": {"matchLabels": {C.LABEL_SANDBOX_UID: uid(parent)}},
        },
    ]
    spec = parent.get("spec") if isinstance(parent.get("spec"), MAPPING) else {}
    ref = spec.get("profileRef") if isinstance(spec, MAPPING) else None
    if isinstance(ref, MAPPING) and isinstance(ref.get("name"), str) and ref["name"]:
        rules.append({
            "apiVersion": C.API_VERSION, "resource": "sandboxprofiles",
            "namespace": ref.get("namespace") or ns, "names": [ref["name"]],
        })
    return {"relatedResources": rules}


# ---------------------------------------------------------------------------------------------
# Sync: a short list of named steps, each a function below in the order sync calls them


class _Unusable(Exception):
    """The spec cannot be used (invalid, or its runtime or profile does not resolve): existing
    children are kept, the isolation policies of a running pod desired as built, and the reason
    goes into conditions (_unusable)."""

    def __init__(self, reason: str, message: str, waiting: bool) -> None:
        super().__init__(message)
        self.reason, self.message, self.waiting = reason, message, waiting


@dataclass  # per call, never edited; not frozen for speed (see conditions.Condition)
class _Plan:
    """What every step after resolution reads: the request, the resolved spec, the sandbox's names
    and labels, and the pod replacement it requests."""

    req: SyncRequest
    spec: SandboxSpec
    eff: Effective
    names: Names
    labels: dict[str, str]
    selector: dict[str, str]
    config: Config
    now: datetime
    token: str  # llmsafespace.dev/replace-pod of the sandbox ("" for none)
    warm_token: str  # the token its warm pod was bound under (_warm_token)

    @property
    def ns(self) -> str:
        return self.req.namespace


@dataclass  # per call, never edited; not frozen for speed (see conditions.Condition)
class _Serving:
    """What the pod that serves the sandbox (its own, a warm one, or none yet) contributes."""

    phase: str
    ready: Condition
    status: dict[str, Any] = field(default_factory=dict)  # written over the shared status fields
    conditions: list[Condition] = field(default_factory=list)  # SpecApplied, when known
    children: list[dict[str, Any]] = field(default_factory=list)  # account, volume, pod
    resync: list[float] = field(default_factory=list)


@dataclass  # per call, never edited; not frozen for speed (see conditions.Condition)
class _Creation:
    """ChildrenCreated, and phase and Ready once a pod the API server refuses is accounted for."""

    condition: Condition
    phase: str
    ready: Condition
    resync: list[float]


def sync(request: Mapping[str, Any], now: datetime, config: Config = DEFAULT_CONFIG) -> dict[str, Any]:
    req = SyncRequest.of(request)
    if req.finalizing:
        return _finalize(req, now)
    try:
        plan = _resolve(req, config, now)
    except _Unusable as exc:
        return _unusable(req, exc.reason, exc.message, exc.waiting, now, config)
    status = _shared_status(plan)
    expires = _expires_at(plan)
    if expires is not None:
        status["expiresAt"] = fmt_time(expires)
        if now >= expires:
            return _expired(plan, status)
    suspension = suspend.decide(plan.spec, req.parent, req.previous_status, now)
    decision, serving = _pod_serving(plan, suspension)
    desired = _shared_children(plan, decision) + serving.children
    serving = _check_selected(plan, decision, desired, serving)
    created = _check_created(plan, desired, serving)
    status = {**status, **_pool_status(decision), **serving.status, "phase": created.phase}
    conditions = [_validated(plan.eff), *_warm_conditions(decision), *serving.conditions, created.condition, created.ready,
                  *([suspension.condition] if suspension.condition is not None else [])]
    resync = _next_deadline(expires, decision, serving, created, suspension, now)
    return composite_response(req.parent, req.previous_status, now, status, conditions, desired, resync)


def _pod_serving(plan: _Plan, suspension: suspend.Suspension) -> tuple[warm.WarmDecision, _Serving]:
    """Which pod serves the sandbox (none while suspended, its own, or a warm one) and what it
    contributes."""
    req = plan.req
    cold_pod = req.child(C.GVK_POD, plan.names.base)
    if suspension.suspended:
        decision = warm.suspended(plan.spec, req.parent)
        return decision, _serve_suspended(plan, decision, cold_pod)
    # A cold start has begun once its pod or its ServiceAccount (created one sync before the pod,
    # and only for a cold start or a suspension) is observed: from then on the sandbox stays cold.
    started_cold = cold_pod is not None or req.child(C.GVK_SERVICE_ACCOUNT, plan.names.base) is not None
    decision = warm.decide(plan.spec, req.parent, plan.eff, req.related, started_cold, plan.now, plan.config,
                           replace=bool(plan.token) and plan.token != plan.warm_token,
                           service_uid=_service_warm_uid(req, plan.names))
    return decision, _serve(plan, decision, cold_pod, started_cold)


def _next_deadline(expires: Optional[datetime], decision: warm.WarmDecision, serving: _Serving, created: _Creation,
                   suspension: suspend.Suspension, now: datetime) -> Optional[float]:
    """Seconds until the earliest deadline ahead (lifetime, warm-pod wait, pod checks, idle
    timeout), for resyncAfterSeconds; None without one."""
    resync = ([(expires - now).total_seconds()] if expires is not None else []) \
        + ([decision.resync_after] if decision.resync_after else []) + serving.resync + created.resync \
        + ([suspension.resync] if suspension.resync is not None else [])
    return min(resync) if resync else None


def _resolve(req: SyncRequest, config: Config, now: datetime) -> _Plan:
    """The spec, with its runtime and profile resolved; raises _Unusable when it cannot be used."""
    try:
        resolved = resolve_sandbox(req.parent, req.namespace, req.related_of(C.GVK_RUNTIME), req.related_of(C.GVK_PROFILE),
                                   config.retain_storage_class)
    except SpecError as exc:
        raise _Unusable("InvalidSpec", str(exc), False) from exc
    except ResolutionError as exc:
        raise _Unusable(exc.reason, exc.message, exc.waiting) from exc
    _check_egress_backend(resolved.eff, config)
    token = replace_token(req.parent)
    return _Plan(req, resolved.spec, resolved.eff, Names.of(req.parent), child_labels(req.parent), selector(req.parent), config, now,
                 token, _warm_token(req.previous_status, token))


def _check_egress_backend(eff: Effective, config: Config) -> None:
    """Egress rules the backend cannot express make the spec unusable (a ClusterNetworkPolicy
    holds 25 rules): refused here, with the reason, rather than half enforced."""
    if config.egress_backend == C.EGRESS_BACKEND_CLUSTERNETWORKPOLICY:
        try:
            cnp.egress_rules(eff.egress, config)
        except cnp.TooManyRules as exc:
            raise _Unusable("InvalidSpec", str(exc), False) from exc


def _shared_status(plan: _Plan) -> dict[str, Any]:
    """Status fields every usable sandbox reports, whatever pod serves it."""
    status: dict[str, Any] = {
        "runtimeEnvironment": plan.eff.runtime_name,
        "securityLevel": plan.eff.security_level,
        "serviceName": plan.names.base,
        "endpoint": f"{plan.names.base}.{plan.ns}.svc.cluster.local",
    }
    if plan.eff.profile_name:
        status["profile"] = plan.eff.profile_name
    if plan.config.egress_backend == C.EGRESS_BACKEND_CLUSTERNETWORKPOLICY and plan.eff.egress:
        # What the tenant-namespace decorator turns into the sandbox's ClusterNetworkPolicy (a
        # cluster-scoped object this namespaced parent cannot own). Only controllers write status.
        status["egress"] = [rule.wire() for rule in plan.eff.egress]
    return status


def _lifetime_seconds(plan: _Plan) -> int:
    lifetime = plan.spec.lifetime_seconds
    return lifetime if lifetime is not None else plan.config.default_lifetime_seconds


def _expires_at(plan: _Plan) -> Optional[datetime]:
    """The end of the sandbox's lifetime, if it has one (0: none)."""
    lifetime = _lifetime_seconds(plan)
    return add_seconds(created(plan.req.parent) or plan.now, lifetime) if lifetime else None


def _expired(plan: _Plan, status: dict[str, Any]) -> dict[str, Any]:
    """After its lifetime every child but a retained volume goes; the object stays for inspection."""
    eff, names = plan.eff, plan.names
    kept = [build_pvc(names.pvc, plan.ns, plan.labels, eff.volume_size, eff.storage_class_name)] \
        if eff.persistent and eff.retention_policy == C.RETENTION_RETAIN else []
    ended = Condition("Ready", "False", "LifetimeExpired",
                      f"the sandbox's lifetime of {_lifetime_seconds(plan)}s ended at {status['expiresAt']}")
    return composite_response(plan.req.parent, plan.req.previous_status, plan.now, {**status, "phase": C.PHASE_TERMINATED},
                              [_validated(eff), ended], kept, None)


def _serve(plan: _Plan, decision: warm.WarmDecision, cold_pod: Optional[Mapping[str, Any]], started_cold: bool) -> _Serving:
    """The sandbox on its own pod, on a warm pod, or waiting for one (no pod of its own, but the
    shared children, its policies among them, are in place already)."""
    if decision.mode in ("none", "cold"):
        return _serve_cold(plan, decision, cold_pod, started_cold)
    if decision.mode == "warm":
        return _serve_warm(plan, decision)
    return _Serving(C.PHASE_PENDING, Condition("Ready", "False", "WaitingForWarmPod", decision.message))


def _account_and_volume(plan: _Plan) -> list[dict[str, Any]]:
    """The sandbox's own ServiceAccount and its volume, for a cold pod and while suspended alike."""
    eff, names, ns, labels = plan.eff, plan.names, plan.ns, plan.labels
    children = [build_service_account(names.base, ns, labels)]
    if eff.persistent:
        children.append(build_pvc(names.pvc, ns, labels, eff.volume_size, eff.storage_class_name))
    else:
        # The CRD forbids turning persistence off; should it happen anyway (an older CRD, a
        # direct etcd edit), the volume and its data are kept, never deleted by an edit.
        children.extend(_observed_claims(plan.req.children))
    return children


def _serve_cold(plan: _Plan, decision: warm.WarmDecision, cold_pod: Optional[Mapping[str, Any]], started_cold: bool) -> _Serving:
    eff, names, ns, labels, previous = plan.eff, plan.names, plan.ns, plan.labels, plan.req.previous_status
    children = _account_and_volume(plan)
    # A failed warm pod was this sandbox's first pod: its cold pod is a replacement.
    floor = 1 if decision.reason == warm.REASON_WARM_POD_FAILED else 0
    outcome = _cold_pod(cold_pod, previous, floor, plan.spec.startup_timeout_seconds, plan.now, plan.token)
    pod = build_pod(names.base, ns, labels, _pod_annotations(plan.req.parent, outcome.pod_number, plan.token), _shape(eff, names, egress_proxy.pod_env(ns, plan.config)), plan.config)
    # The API server refuses a Pod whose ServiceAccount does not exist yet, and Metacontroller
    # creates the children of one answer in no particular order: the Pod is desired only once its
    # account is observed (the account's creation triggers the next sync). Until the pod is
    # observed the status is the same before and after the account exists: one status write fewer
    # per sandbox (every write costs Metacontroller a GET and a PUT). Likewise a new pod waits for
    # its default deny, and for every observed policy to select it (not a warm pod it ran on): it
    # must never start outside its isolation, whatever order the writes land in or fail. (A pod
    # that exists stays desired: leaving it out would delete it.)
    if started_cold and outcome.keep_pod and (cold_pod is not None or _isolated(plan.req, plan.names, plan.selector)):
        children.append(pod)
    status: dict[str, Any] = {}
    if decision.mode == "cold":
        status["warmPodUsed"] = False
    if outcome.restarts:
        status["restarts"] = outcome.restarts
    if cold_pod is not None:
        status.update(_pod_status(cold_pod))
    applied = _cold_applied(plan.req.parent, cold_pod, pod, eff, plan.req.related_of(C.GVK_RUNTIME), previous, plan.token,
                            decision, status)
    return _Serving(outcome.phase, outcome.ready, status, [applied] if applied is not None else [], children,
                    [outcome.resync] if outcome.resync is not None else [])


def _serve_suspended(plan: _Plan, decision: warm.WarmDecision, cold_pod: Optional[Mapping[str, Any]]) -> _Serving:
    """A suspended sandbox (docs/suspend.md): no pod is desired, so Metacontroller deletes its own
    pod gracefully (its termination grace period), and its pool deletes a warm one (warmPodUsed
    false); the volume (the claim, never left out: built, or kept as observed), the account and,
    through _shared_children, the Service and policies stay. The account makes the resume a cold
    start (see sync). Phase Suspended only once no pod with its identity is left."""
    children, previous = _account_and_volume(plan), plan.req.previous_status
    status: dict[str, Any] = {}
    if decision.mode == "cold":
        status["warmPodUsed"] = False
    restarts = _stored_restarts(previous)
    if restarts:  # the replacements counted so far stay counted across a suspension
        status["restarts"] = restarts
    going = [f"pod {name(cold_pod)}"] if cold_pod is not None else []
    for wp in plan.req.related_of(C.GVK_WARMPOD):  # any state: the WarmPod goes after its pod
        assignment = (wp.get("spec") or {}).get("assignment") if isinstance(wp.get("spec"), Mapping) else None
        if isinstance(assignment, Mapping) and assignment.get("sandboxUid") == plan.req.uid:
            going.append(f"warm pod {name(wp)}")
    if going:
        if cold_pod is not None:
            status.update(_pod_status(cold_pod))
        ready = Condition("Ready", "False", "Suspending",
                          f"the sandbox is being suspended: waiting for {', '.join(going)} to terminate; {suspend.KEPT}")
        return _Serving(C.PHASE_SUSPENDING, ready, status, [], children, [FINALIZE_POLL_SECONDS])
    ready = Condition("Ready", "False", "Suspended", f"the sandbox is suspended: no pod runs, {suspend.KEPT}")
    return _Serving(C.PHASE_SUSPENDED, ready, status, [], children)


def _serve_warm(plan: _Plan, decision: warm.WarmDecision) -> _Serving:
    assert decision.warm_pod is not None
    wp, ns, previous = decision.warm_pod, plan.ns, plan.req.previous_status
    wp_status = wp.get("status") or {}
    status: dict[str, Any] = {
        # With its UID: the label its pod carries (the gateway checks a warm pod by it).
        "warmPodRef": {"name": name(wp), "namespace": namespace(wp) or ns, "uid": uid(wp)},
        "warmPodUsed": True,
        "podName": wp_status.get("podName"),
        "podNamespace": wp_status.get("podNamespace") or ns,
    }
    # The start of the sandbox on this warm pod: kept from status while it is the same warm pod.
    ref = previous.get("warmPodRef")
    start = previous.get("startTime") if isinstance(ref, MAPPING) and ref.get("name") == name(wp) else None
    status["startTime"] = start if isinstance(start, str) else fmt_time(plan.now)
    applied = _warm_applied(plan.req.parent, wp, plan.eff, plan.req.related_of(C.GVK_RUNTIME), previous, plan.warm_token, status)
    if warm.pod_ready(wp):
        ready = Condition("Ready", "True", "WarmPodReady", f"warm pod {name(wp)} is ready")
    else:  # a serving warm pod that is not ready for now: it stays this sandbox's pod
        ready = Condition("Ready", "False", "WarmPodNotReady", f"warm pod {name(wp)} is {wp_status.get('phase') or 'not ready'}")
    return _Serving(C.PHASE_RUNNING, ready, status, [applied])


def _shared_children(plan: _Plan, decision: warm.WarmDecision) -> list[dict[str, Any]]:
    """The Service and the NetworkPolicies, selecting the pod that serves the sandbox. None while
    it waits for a warm pod: no pod has its identity yet, and they are created pointing at the
    pod that will serve it (a warm pod or its own), not created and then pointed elsewhere."""
    if decision.mode == "waiting":
        return []
    names, ns, labels, eff = plan.names, plan.ns, plan.labels, plan.eff
    sel = _policy_selector(plan, decision)
    desired: list[dict[str, Any]] = [
        build_service(names.base, ns, labels, _service_selector(sel, decision)),
        *_isolation(names, ns, labels, sel, plan.config),
    ]
    desired.extend(_egress_policies(plan, sel))
    if eff.ingress or eff.ingress_rules:
        desired.append(np.ingress(names.policy("ingress"), ns, labels, sel, eff.ingress_rules, eff.ingress))
    return desired


def _policy_selector(plan: _Plan, decision: warm.WarmDecision) -> dict[str, str]:
    """What the NetworkPolicies select: the warm pod's serving selector (its warmpod-uid label, set
    when the pod was created), else the sandbox's UID label, which its own pods carry."""
    return dict(decision.selector) if decision.mode == "warm" and decision.selector else plan.selector


def _service_selector(sel: dict[str, str], decision: warm.WarmDecision) -> dict[str, str]:
    """The Service's selector. On the sandbox's UID label it also names the kind of pod that serves:
    in the moment a sandbox falls back to a cold start just as its pool binds a warm pod, both pods
    may carry its UID (the warm one once relabelled), and traffic must go to the one it runs on.
    NetworkPolicies select both, so both stay isolated. A serving selector is one pod's already."""
    if C.LABEL_WARMPOD_UID in sel:
        return sel
    return {**sel, C.LABEL_COMPONENT: C.COMPONENT_WARMPOD if decision.mode == "warm" else C.COMPONENT_SANDBOX}


def _service_warm_uid(req: SyncRequest, names: Names) -> Optional[str]:
    """The WarmPod UID the observed Service selects: only this sandbox writes its Service, so it
    remembers an adoption even when the status in the cache is older (warm.adopted)."""
    service = req.child(C.GVK_SERVICE, names.base)
    spec = service.get("spec") if service is not None and isinstance(service.get("spec"), MAPPING) else {}
    selected = spec.get("selector") if isinstance(spec, MAPPING) else None
    value = selected.get(C.LABEL_WARMPOD_UID) if isinstance(selected, MAPPING) else None
    return value if isinstance(value, str) and value else None


def _egress_policies(plan: _Plan, sel: dict[str, str]) -> list[dict[str, Any]]:
    """The egress rules as the backend enforces them. networkpolicy: every rule in a NetworkPolicy
    (a domain as the public IPv4 space). proxy: a domain as the namespace's egress proxy. cilium and clusternetworkpolicy: CIDR rules only, the
    domains by name elsewhere (a NetworkPolicy opening the public space would undo the names:
    policies add up). cilium's CiliumNetworkPolicy is a child of the sandbox; the
    ClusterNetworkPolicy comes from the tenant-namespace decorator (see _shared_status)."""
    names, ns, labels, eff, config = plan.names, plan.ns, plan.labels, plan.eff, plan.config
    if config.egress_backend == C.EGRESS_BACKEND_NETWORKPOLICY:
        return [np.egress(names.policy("egress"), ns, labels, sel, eff.egress)] if eff.egress else []
    if config.egress_backend == C.EGRESS_BACKEND_PROXY:  # the domains through the namespace's proxy
        return [np.egress(names.policy("egress"), ns, labels, sel, eff.egress, via_proxy=True)] if eff.egress else []
    cidr_rules = [rule for rule in eff.egress if rule.cidr]
    out = [np.egress(names.policy("egress"), ns, labels, sel, cidr_rules)] if cidr_rules else []
    if config.egress_backend == C.EGRESS_BACKEND_CILIUM:
        fqdn = cilium_policy.fqdn_policy(names.policy("fqdn"), ns, labels, sel, eff.egress, config)
        if fqdn is not None:
            out.append(fqdn)
    return out


def isolation_policies(parent: Mapping[str, Any], config: Config, sel: Optional[dict[str, str]] = None) -> list[dict[str, Any]]:
    """Default deny, API access and DNS: they depend only on the sandbox's name, UID, labels, the
    config and the pod they select (`sel`: a warm pod's serving selector; by default its own
    pods'), never on its spec, so they are desired even while the spec cannot be used."""
    return _isolation(Names.of(parent), namespace(parent), child_labels(parent), sel or selector(parent), config)


def _isolation(names: Names, ns: str, labels: dict[str, str], sel: dict[str, str], config: Config) -> list[dict[str, Any]]:
    return [
        np.default_deny(names.policy("default-deny"), ns, labels, sel),
        np.api_access(names.policy("api-access"), ns, labels, sel, config),
        np.dns(names.policy("dns"), ns, labels, sel, config),
    ]


def _check_created(plan: _Plan, desired: list[dict[str, Any]], serving: _Serving) -> _Creation:
    """Desired children not observed yet: ChildrenCreated, and a pod the API server keeps refusing
    turns phase and Ready (see _pod_not_created)."""
    missing = _missing(desired, plan.req)
    # Metacontroller swallows AlreadyExists without retrying: a child whose name is still held by
    # another owner (a same-named sandbox's leftovers) would otherwise never be created.
    resync = [CREATE_POLL_SECONDS] if missing else []
    condition, since = _children_condition(missing, plan.req.parent, plan.eff, plan.req.previous_status, plan.config, plan.now)
    phase, ready = serving.phase, serving.ready
    if since is not None and ("Pod", plan.names.base) in missing:
        phase, ready = _pod_not_created(condition, since, plan.spec.startup_timeout_seconds, plan.now) or (phase, ready)
    return _Creation(condition, phase, ready, resync)


# What a child kind that selects pods is observed under.
_SELECTING = {"Service": C.GVK_SERVICE, "NetworkPolicy": C.GVK_NETWORK_POLICY, "CiliumNetworkPolicy": C.GVK_CILIUM_NETWORK_POLICY}


def _selector_of(child: Mapping[str, Any]) -> Any:
    """The labels a Service or a (Cilium)NetworkPolicy selects pods by (None for other kinds)."""
    spec = child.get("spec") if isinstance(child.get("spec"), MAPPING) else {}
    if child.get("kind") == "Service":
        return spec.get("selector")
    inner = spec.get("endpointSelector" if child.get("kind") == "CiliumNetworkPolicy" else "podSelector")
    return inner.get("matchLabels") if isinstance(inner, MAPPING) else None


def _isolated(req: SyncRequest, names: Names, sel: Mapping[str, str]) -> bool:
    """The sandbox's default deny is observed, and no observed NetworkPolicy of it selects other
    pods than `sel` does."""
    deny = req.child(C.GVK_NETWORK_POLICY, names.policy("default-deny"))
    return deny is not None and not is_deleting(deny) and all(_selector_of(p) == sel for p in req.children_of(C.GVK_NETWORK_POLICY))


def _check_selected(plan: _Plan, decision: warm.WarmDecision, desired: list[dict[str, Any]], serving: _Serving) -> _Serving:
    """Running only once the Service and every policy, as observed, select the pod that serves:
    Metacontroller writes the status even when a child's write failed, so a status computed from
    the desired children alone could claim a pod is reachable and isolated when it is not. A warm
    pod is accepted under each selector known to select it (warm.warm_selectors)."""
    if serving.phase != C.PHASE_RUNNING:
        return serving
    accepted = decision.accepted if decision.mode == "warm" else (plan.selector,)
    for_service = [_service_selector(dict(a), decision) for a in accepted]
    # One pass over what is observed (a running sandbox's every sync comes here).
    seen = {(o.get("kind"), name(o)): o for gvk in _SELECTING.values() for o in plan.req.children_of(gvk)}
    unselected = []
    for child in desired:
        if child["kind"] not in _SELECTING:
            continue
        observed = seen.get((child["kind"], child["metadata"]["name"]))
        have = _selector_of(observed) if observed is not None and not is_deleting(observed) else None
        if have is None or have not in (for_service if child["kind"] == "Service" else accepted):
            unselected.append(f"{child['kind']} {child['metadata']['name']}")
    if not unselected:
        return serving
    pod = serving.status.get("podName") or plan.names.base
    ready = Condition("Ready", "False", "PodNotSelected",
                      f"pod {pod} is ready to serve; waiting for these to select it: {', '.join(unselected)}")
    return replace(serving, phase=C.PHASE_CREATING, ready=ready)


def _pool_status(decision: warm.WarmDecision) -> dict[str, Any]:
    return {"warmPool": decision.pool} if decision.mode != "none" and decision.pool else {}


def _warm_conditions(decision: warm.WarmDecision) -> list[Condition]:
    return [_warm_condition(decision)] if decision.mode != "none" else []


def _validated(eff: Effective) -> Condition:
    return Condition("Validated", "True", "Valid", _valid_message(eff))


def _missing(desired: list[dict[str, Any]], req: SyncRequest) -> list[tuple[str, str]]:
    """(kind, name) of every desired child not observed, in the order desired."""
    observed = req.observed_names(CHILD_KINDS)
    return [(c["kind"], c["metadata"]["name"]) for c in desired if (c["kind"], c["metadata"]["name"]) not in observed]


# ---------------------------------------------------------------------------------------------
# Children the API server refuses


def _false_since(previous: Any, type_: str) -> Optional[datetime]:
    """When an earlier sync turned condition `type_` False (its lastTransitionTime), if it did."""
    cond = find_condition(previous, type_, "False")
    return parse_time(cond.get("lastTransitionTime")) if cond is not None else None


def _likely_causes(kind: str, eff: Effective, config: Config) -> str:
    if kind == "Pod":
        runtime_class = f'its RuntimeClass "{config.high_security_runtime_class}" does not exist, ' if eff.security_level == "high" else ""
        return ("the namespace's ResourceQuota (cpu, memory, ephemeral-storage, pods) is used up or its LimitRange refuses "
                f"the pod's resources, {runtime_class}Pod Security admission refuses the pod, or an admission webhook does")
    if kind == "PersistentVolumeClaim":
        return ("the namespace's ResourceQuota (requests.storage, persistentvolumeclaims) is used up, its LimitRange refuses "
                "the volume size, or an admission webhook refuses the claim")
    return "the namespace's ResourceQuota on object counts is used up, or an admission webhook refuses it"


def _children_condition(missing: list[tuple[str, str]], parent: Mapping[str, Any], eff: Effective, previous: Any,
                        config: Config, now: datetime) -> tuple[Condition, Optional[datetime]]:
    """ChildrenCreated, and since when a child is missing. Its lastTransitionTime is the memory of
    "since when": a stale status only makes the grace period start later. Messages are the same
    sync after sync (no elapsed time in them): every status change costs a write and a sync."""
    if not missing:
        return Condition(CONDITION_CHILDREN, "True", "ChildrenCreated", "every child of the sandbox exists"), None
    since = _false_since(previous, CONDITION_CHILDREN) or now
    # Missing this long after it was asked for, a child was most likely refused (quota, admission).
    if (now - since).total_seconds() < config.child_create_grace_seconds:
        return Condition(CONDITION_CHILDREN, "False", "ChildrenCreating", "the sandbox's children are being created"), since
    named = "; ".join(f"{kind} {child} (likely: {_likely_causes(kind, eff, config)})" for kind, child in missing)
    message = (f"not created {config.child_create_grace_seconds}s after it was asked for: {named}; or its name is held by an "
               f"object of another owner. The API server's answer is in the sandbox's events: "
               f"kubectl describe sandbox {name(parent)} -n {namespace(parent)}. Creation is retried every "
               f"{int(CREATE_POLL_SECONDS)}s")
    return Condition(CONDITION_CHILDREN, "False", "ChildNotCreated", message), since


def _pod_not_created(created_cond: Condition, since: datetime, startup_timeout: int, now: datetime) -> Optional[tuple[str, Condition]]:
    """Phase and Ready of a sandbox whose pod the API server does not create: its refusal reported
    after the grace period, Failed at the startup deadline (creation is still retried)."""
    if created_cond.reason != "ChildNotCreated":
        return None
    if (now - since).total_seconds() >= startup_timeout:
        return C.PHASE_FAILED, Condition("Ready", "False", "StartupTimeout",
                                         f"the sandbox pod did not start within {startup_timeout}s (spec.startupTimeoutSeconds): {created_cond.message}")
    return C.PHASE_CREATING, Condition("Ready", "False", "PodNotCreated", created_cond.message)


def _shape(eff: Effective, names: Names, proxy_env: tuple[dict[str, str], ...]) -> PodShape:
    return PodShape(
        image=eff.image,
        security_level=eff.security_level,
        cpu=eff.cpu,
        memory=eff.memory,
        ephemeral_storage=eff.ephemeral_storage,
        writable_paths=eff.writable_paths,
        run_as_user=eff.run_as_user,
        run_as_group=eff.run_as_group,
        seccomp_type=eff.seccomp.type,
        seccomp_localhost_profile=eff.seccomp.localhost_profile,
        cpu_pinning=eff.cpu_pinning,
        termination_grace_seconds=eff.timeout,
        persistent_claim=names.pvc if eff.persistent else None,
        service_account=names.base,
        env=tuple(e.wire() for e in eff.env) + proxy_env,
        env_from=tuple(e.wire() for e in eff.env_from),
        user_namespaces_supported=eff.user_namespaces_supported,
    )


def _pod_annotations(parent: Mapping[str, Any], restarts: int = 0, token: str = "") -> dict[str, str]:
    out = {C.ANNOTATION_SANDBOX: f"{namespace(parent)}/{name(parent)}"}
    if restarts:  # absent on a first pod, so pods of earlier versions are emitted byte for byte
        out[C.ANNOTATION_POD_RESTARTS] = str(restarts)
    if token:  # likewise: only pods made while a replacement was requested carry it
        out[C.ANNOTATION_REPLACE_POD] = token
    return out


# ---------------------------------------------------------------------------------------------
# Spec edits the running pod does not have (docs/failure-semantics.md, section 7)


def replace_token(obj: Mapping[str, Any]) -> str:
    """The replacement a sandbox requests, or the one a pod was made for: "" for none."""
    value = annotations(obj).get(C.ANNOTATION_REPLACE_POD)
    return value if isinstance(value, str) else ""


def _warm_token(previous: Any, token: str) -> str:
    """The request token a warm pod was bound under. Status is its only memory: once status says the
    sandbox runs on its warm pod, the token it recorded then (absent: none); before that, as long as
    status does not say so yet (this sync binds it, or the status is stale), the current token, so
    a stale status can delay a request, never make one: a sandbox created with the annotation keeps
    the warm pod it is given."""
    if isinstance(previous, MAPPING) and previous.get("warmPodUsed") is True:
        recorded = previous.get("replacePodToken")
        return recorded if isinstance(recorded, str) else ""
    return token


def _cold_applied(parent: Mapping[str, Any], observed_pod: Optional[Mapping[str, Any]], pod: Mapping[str, Any], eff: Effective,
                  runtimes: list[dict[str, Any]], previous: Any, token: str, decision: warm.WarmDecision,
                  status: dict[str, Any]) -> Optional[Condition]:
    """SpecApplied of a sandbox on its own pod, and the status fields that describe that pod (level,
    runtime, the request it was made for). None while no pod of its own runs and none is asked for."""
    if observed_pod is None:
        if decision.reason == warm.REASON_REPLACE_REQUESTED:
            return drift.condition(parent, "the warm pod", [], True, token)
        return None
    pod_token = replace_token(observed_pod)
    if pod_token:
        status["replacePodToken"] = pod_token
    replacing = token if token and pod_token != token else None
    if is_deleting(observed_pod) and replacing is None:
        return None  # going for another reason (failed, deleted by hand): a new pod follows
    running, wanted = drift.read_pod(observed_pod), drift.read_pod(pod)
    runtime_name = drift.running_runtime(running.image, eff, runtimes, previous)
    status["securityLevel"] = drift.running_level(running, wanted, eff)
    status["runtimeEnvironment"] = runtime_name
    label = f"pod {name(observed_pod)}"
    return drift.condition(parent, label, drift.cold_differences(running, wanted, runtime_name, eff), False, replacing)


def _warm_applied(parent: Mapping[str, Any], wp: Mapping[str, Any], eff: Effective, runtimes: list[dict[str, Any]],
                  previous: Any, warm_token: str, status: dict[str, Any]) -> Condition:
    """SpecApplied of a warm-served sandbox, and the status fields that describe its warm pod."""
    wp_spec = wp.get("spec") if isinstance(wp.get("spec"), MAPPING) else {}
    level, image = wp_spec.get("securityLevel"), wp_spec.get("image")
    status["securityLevel"] = level if isinstance(level, str) and level else C.DEFAULT_SECURITY_LEVEL
    runtime_name = drift.running_runtime(image if isinstance(image, str) else "", eff, runtimes, previous)
    status["runtimeEnvironment"] = runtime_name
    if warm_token:
        status["replacePodToken"] = warm_token
    return drift.condition(parent, f"warm pod {name(wp)}", drift.warm_differences(wp, runtime_name, eff), True, None)


def _valid_message(eff: Effective) -> str:
    text = f"runtime {eff.runtime_name}, security level {eff.security_level}"
    text += f", profile {eff.profile_name}" if eff.profile_name else ""
    if not eff.user_namespaces_supported and eff.security_level != "high":
        # Said at once: the alternative, hostUsers: false on such nodes, waits in ContainerCreating.
        text += (f"; no user namespace of its own: the nodes of runtime {eff.runtime_name} do not support them "
                 f"(kubectl get runtimeenvironment {eff.runtime_name} -o yaml, condition UserNamespaces)")
    return text


def _warm_condition(decision: warm.WarmDecision) -> Condition:
    if decision.mode == "warm":
        return Condition("WarmPod", "True", decision.reason, decision.message)
    if decision.mode == "waiting":
        return Condition("WarmPod", "Unknown", decision.reason, decision.message)
    return Condition("WarmPod", "False", decision.reason, decision.message)


def pod_ready(pod: Mapping[str, Any]) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if isinstance(cond, MAPPING) and cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def pod_trouble(pod: Mapping[str, Any]) -> Optional[tuple[str, str]]:
    """Why a pod does not run or is not ready, in the scheduler's or kubelet's words: (reason,
    message), or None when nothing is reported. Init containers first: they run first."""
    status = pod.get("status") if isinstance(pod.get("status"), MAPPING) else {}
    unscheduled = find_condition(status, "PodScheduled", "False")
    if unscheduled is not None:
        reason = str(unscheduled.get("reason") or "Unschedulable")
        return reason, str(unscheduled.get("message") or "the pod cannot be scheduled")
    for key in ("initContainerStatuses", "containerStatuses"):
        for cs in status.get(key) or []:
            if not isinstance(cs, MAPPING):
                continue
            waiting = (cs.get("state") or {}).get("waiting") if isinstance(cs.get("state"), MAPPING) else None
            if not isinstance(waiting, MAPPING) or str(waiting.get("reason") or "") in STARTING_REASONS:
                continue
            reason = str(waiting["reason"])
            text = f"container {cs.get('name')}: {reason}" + (f": {waiting['message']}" if waiting.get("message") else "")
            last = (cs.get("lastState") or {}).get("terminated") if isinstance(cs.get("lastState"), MAPPING) else None
            if isinstance(last, MAPPING) and last.get("reason"):
                text += f" (last exit: {last['reason']}, code {last.get('exitCode')})"
            return reason, text
    return None


def _pod_phase(pod: Mapping[str, Any], startup_timeout: Optional[int], now: datetime) -> tuple[str, Condition, Optional[float]]:
    """Phase and Ready of a pod that is neither failed nor being deleted, and when to look again:
    at the startup deadline, while the pod has not reached Running (nothing else wakes the hook up
    when a pod stays in ImagePullBackOff or unschedulable)."""
    pod_phase = (pod.get("status") or {}).get("phase")
    trouble = pod_trouble(pod)
    if pod_phase == "Running":
        if pod_ready(pod):
            return C.PHASE_RUNNING, Condition("Ready", "True", "PodReady", "the sandbox pod is ready"), None
        detail = f": {trouble[1]}" if trouble else ""
        return C.PHASE_RUNNING, Condition("Ready", "False", "PodNotReady", f"the sandbox pod is running but not ready{detail}"), None
    deadline = add_seconds(created(pod) or now, startup_timeout) if startup_timeout else None
    if deadline is not None and now >= deadline:
        why = f"{trouble[0]}: {trouble[1]}" if trouble else "neither the scheduler nor the kubelet reported why"
        return C.PHASE_FAILED, Condition("Ready", "False", "StartupTimeout",
                                         f"the sandbox pod did not start within {startup_timeout}s (spec.startupTimeoutSeconds): {why}"), None
    wait = (deadline - now).total_seconds() if deadline is not None else None
    if trouble:
        return C.PHASE_CREATING, Condition("Ready", "False", trouble[0], f"the sandbox pod cannot start yet: {trouble[1]}"), wait
    return C.PHASE_CREATING, Condition("Ready", "False", "PodPending", "the sandbox pod is starting"), wait


def _failure(pod: Mapping[str, Any]) -> str:
    status = pod.get("status") if isinstance(pod.get("status"), MAPPING) else {}
    reason, message = status.get("reason"), status.get("message")
    text = ": ".join(str(p) for p in (reason, message) if p)
    return text or f"the pod is {status.get('phase')}"


def _cold_phase(pod: Optional[Mapping[str, Any]], now: datetime) -> tuple[str, Condition]:
    """Phase and Ready from an observed pod alone (no replacement decided): for a sandbox whose
    spec cannot be used, whose pod is kept as it is."""
    if pod is None:
        return C.PHASE_CREATING, Condition("Ready", "False", "PodCreating", "the sandbox pod is being created")
    if is_deleting(pod):
        return C.PHASE_CREATING, Condition("Ready", "False", "PodReplacing", "the sandbox pod is being deleted and will be recreated")
    if (pod.get("status") or {}).get("phase") in ("Failed", "Succeeded"):
        return C.PHASE_FAILED, Condition("Ready", "False", "PodFailed", _failure(pod))
    phase, ready, _ = _pod_phase(pod, None, now)  # no spec, no startup deadline
    return phase, ready


# ---------------------------------------------------------------------------------------------
# Failed pods: replaced a bounded number of times, counted robustly


@dataclass  # per call, never edited; not frozen for speed (see conditions.Condition)
class PodOutcome:
    phase: str
    ready: Condition
    keep_pod: bool  # False: the pod is left out of the desired children, Metacontroller deletes it
    restarts: int  # status.restarts
    pod_number: int  # the restart annotation of the desired pod: the observed pod's own, else restarts
    resync: Optional[float]


def _int(value: Any) -> int:
    if value is None:  # the usual case (no count yet): spares raising and catching a TypeError
        return 0
    try:
        number = int(value)
    except (TypeError, ValueError):
        return 0
    return max(number, 0)


def _stored_restarts(previous: Any) -> int:
    return _int(previous.get("restarts")) if isinstance(previous, MAPPING) else 0


def _cold_pod(pod: Optional[Mapping[str, Any]], previous: Any, floor: int, startup_timeout: int, now: datetime,
              token: str = "") -> PodOutcome:
    """What becomes of the sandbox's own pod. A failed pod (evicted, its node lost) is replaced,
    the volume kept, up to MAX_POD_REPLACEMENTS times; the failure after that is final. The count
    is the larger of status.restarts and the number the pod carries (ANNOTATION_POD_RESTARTS), and
    a failed pod, the evidence of its failure, is deleted only once the status in the cache counts
    it: a stale status can delay a replacement by a sync, never lose a count."""
    stored = _stored_restarts(previous)
    restarts = max(stored, floor)
    if pod is None:
        phase, ready = _cold_phase(None, now)
        return PodOutcome(phase, ready, True, restarts, restarts, None)
    number = _int(pod.get("metadata", {}).get("annotations", {}).get(C.ANNOTATION_POD_RESTARTS))
    restarts = max(restarts, number)
    pod_phase = (pod.get("status") or {}).get("phase")
    if is_deleting(pod) or pod_phase not in ("Failed", "Succeeded"):
        if is_deleting(pod):
            phase, ready = _cold_phase(pod, now)
            return PodOutcome(phase, ready, True, restarts, number, None)
        if token and replace_token(pod) != token:
            return _requested(pod, token, stored, restarts, number)
        phase, ready, wait = _pod_phase(pod, startup_timeout, now)
        return PodOutcome(phase, ready, True, restarts, number, wait)
    if number >= C.MAX_POD_REPLACEMENTS:
        return PodOutcome(C.PHASE_FAILED, Condition(
            "Ready", "False", "PodFailedRepeatedly",
            f"the sandbox pod failed {number + 1} times, the last time: {_failure(pod)}; the last pod is kept for "
            f"inspection (kubectl describe pod {name(pod)})"), True, restarts, number, None)
    counted = max(restarts, number + 1)
    persisted = stored >= number + 1
    ready = Condition("Ready", "False", "PodReplacing",
                      f"the sandbox pod failed ({_failure(pod)}); replacing it (replacement {number + 1} of at most "
                      f"{C.MAX_POD_REPLACEMENTS}), its volume is kept")
    return PodOutcome(C.PHASE_CREATING, ready, not persisted, counted, number, None if persisted else CREATE_POLL_SECONDS)


def _requested(pod: Mapping[str, Any], token: str, stored: int, restarts: int, number: int) -> PodOutcome:
    """A replacement the sandbox's annotation requests for a pod made for another token (or none):
    the pod is left out once status counts the replacements it carries (the new pod takes its
    number from status), like a failed pod; a requested replacement is no failure and not counted.
    The new pod carries the token: seen by any later sync, however stale, it is never replaced again."""
    persisted = stored >= number
    ready = Condition("Ready", "False", "PodReplacing",
                      f"replacing the sandbox pod {name(pod)} as requested ({C.ANNOTATION_REPLACE_POD}={token}); its volume is kept")
    return PodOutcome(C.PHASE_CREATING, ready, not persisted, restarts, number, None if persisted else CREATE_POLL_SECONDS)


def _pod_status(pod: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"podName": name(pod), "podNamespace": namespace(pod)}
    start = (pod.get("status") or {}).get("startTime")
    if isinstance(start, str):
        out["startTime"] = start
    out.update(container_restarts(pod))
    return out


def container_restarts(pod: Mapping[str, Any]) -> dict[str, Any]:
    """The sandbox container's restarts in place, as the kubelet reports them: a container that
    was OOM-killed or crashed once is restarted at once and Ready again within seconds, so without
    this the status would keep no trace of it (found on the real node). Absent until the first."""
    status = pod.get("status") if isinstance(pod.get("status"), MAPPING) else {}
    cs = next((c for c in status.get("containerStatuses") or []
               if isinstance(c, MAPPING) and c.get("name") == C.SANDBOX_CONTAINER), None)
    count = cs.get("restartCount") if isinstance(cs, MAPPING) else None
    if not isinstance(count, int) or isinstance(count, bool) or count <= 0:
        return {}
    out: dict[str, Any] = {"containerRestarts": count}
    last = (cs.get("lastState") or {}).get("terminated") if isinstance(cs.get("lastState"), MAPPING) else None
    if isinstance(last, MAPPING):
        term = {k: last[k] for k, kind in (("reason", str), ("exitCode", int), ("finishedAt", str)) if isinstance(last.get(k), kind)}
        if term:
            out["lastTermination"] = term
    return out


# ---------------------------------------------------------------------------------------------
# Unusable spec: keep what exists, report why


def keep_observed(children: Any) -> list[dict[str, Any]]:
    """Observed children as desired children, minus status and server-managed metadata, so
    Metacontroller changes nothing. Pods and volumes of a running sandbox survive a bad edit."""
    kept = []
    seen: set[tuple[str, str, str]] = set()
    for gvk in CHILD_KINDS:
        for obj in objects(children, gvk):
            if (gvk, namespace(obj), name(obj)) in seen:
                continue  # the same object under a second key: emit it once
            seen.add((gvk, namespace(obj), name(obj)))
            kept.append(as_desired(obj))
    return kept


def _observed_claims(children: Any) -> list[dict[str, Any]]:
    """`[c for c in keep_observed(children) if c["kind"] == "PersistentVolumeClaim"]` without
    converting every other child first (it ran on every sync of a sandbox without storage)."""
    if not isinstance(children, MAPPING):
        return []  # objects() reads no object from it either
    kept = []
    seen: set[tuple[str, str, str]] = set()
    for gvk in CHILD_KINDS:
        group = children.get(gvk)
        if not group:
            continue  # absent or empty: objects() returns nothing
        if isinstance(group, MAPPING) and all(
            not isinstance(o, MAPPING) or not isinstance(o.get("metadata"), MAPPING)  # objects() skips these
            or o.get("kind") != "PersistentVolumeClaim" for o in group.values()
        ):
            continue  # no claim in this group (the usual case): nothing to sort or convert
        for obj in objects(children, gvk):
            if (gvk, namespace(obj), name(obj)) in seen:
                continue
            seen.add((gvk, namespace(obj), name(obj)))
            if obj.get("kind") == "PersistentVolumeClaim":  # as_desired keeps kind; a child without one is no claim
                kept.append(as_desired(obj))
    return kept


def _with(children: list[dict[str, Any]], desired: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`children` with each of `desired` in place of the observed object of its kind and name."""
    replaced = {(d["kind"], d["metadata"]["name"]) for d in desired}
    return [c for c in children if (c.get("kind"), (c.get("metadata") or {}).get("name")) not in replaced] + desired


def _unusable(req: SyncRequest, reason: str, message: str, waiting: bool, now: datetime, config: Config) -> dict[str, Any]:
    parent, previous = req.parent, req.previous_status
    kept = keep_observed(req.children)
    pods = req.children_of(C.GVK_POD)
    status: dict[str, Any] = {}
    validated = Condition("Validated", "Unknown" if waiting else "False", reason, message)
    held = None if pods else warm.held_warm_pod(parent, req.related, _service_warm_uid(req, Names.of(parent)))
    if pods or held is not None:
        # A pod runs: its isolation is desired as built, so a deleted or never-created default
        # deny comes back while the spec stays unusable (issue 13, item 4); on a warm pod, as
        # its adoption pointed it.
        bound = warm.pod_selector(held[1], req.uid)[0] if held is not None else None
        kept = _with(kept, isolation_policies(parent, config, bound))
    if pods:
        phase, ready = _cold_phase(pods[0], now)
        status.update(_pod_status(pods[0]))
    elif held is not None:  # a warm pod still serves this sandbox: it runs, whatever the edit
        wp_status = held[1].get("status") or {}
        phase = C.PHASE_RUNNING
        is_ready = warm.pod_ready(held[1])
        ready = Condition("Ready", "True" if is_ready else "False", "WarmPodReady" if is_ready else "WarmPodNotReady",
                          f"warm pod {name(held[1])} is {'ready' if is_ready else wp_status.get('phase') or 'not ready'}")
        status["podName"] = wp_status.get("podName")
        status["podNamespace"] = wp_status.get("podNamespace") or namespace(parent)
    else:
        phase = C.PHASE_PENDING if waiting else C.PHASE_FAILED
        why = "waiting for its inputs" if waiting else "its spec cannot be used"
        ready = Condition("Ready", "False", reason, f"the sandbox cannot start: {why} (see the Validated condition)")
    # Carry over what the previous, valid spec established (for a sandbox that keeps running).
    if isinstance(previous, MAPPING) and (kept or held is not None):
        for key in ("runtimeEnvironment", "securityLevel", "profile", "serviceName", "endpoint", "warmPool", "warmPodRef", "warmPodUsed",
                    "startTime", "expiresAt", "restarts", "replacePodToken", "egress"):
            if key in previous:
                status.setdefault(key, previous[key])
    status["phase"] = phase
    return composite_response(parent, previous, now, status, [validated, ready], kept, None)


# ---------------------------------------------------------------------------------------------
# Finalize


def finalize(request: Mapping[str, Any], now: datetime, config: Config = DEFAULT_CONFIG) -> dict[str, Any]:
    """Ordered teardown: the pod goes first while its network policies stay in force; the rest
    (policies, Service, account, volume) goes once no pod of this sandbox is observed, and the
    sandbox is finalized once no child at all is observed. A warm
    pod is released by its pool when the pool sees the sandbox deleting; we wait until its
    WarmPod is gone. A volume with retentionPolicy Retain lives on as its PersistentVolume
    (its storage class reclaims with Retain); the claim itself is owned and goes with the sandbox."""
    return _finalize(SyncRequest.of(request), now)


def _finalize(req: SyncRequest, now: datetime) -> dict[str, Any]:
    parent, previous = req.parent, req.previous_status
    pods = req.children_of(C.GVK_POD)
    warm_pods = [
        wp for wp in req.related_of(C.GVK_WARMPOD)
        if isinstance((wp.get("spec") or {}).get("assignment"), MAPPING)
        and wp["spec"]["assignment"].get("sandboxUid") == req.uid
    ]
    keep = [c for c in keep_observed(req.children) if c.get("kind") != "Pod"]
    status = {k: v for k, v in previous.items() if k not in ("conditions", "observedGeneration")}
    if pods or warm_pods:
        waiting_for = [f"pod {name(p)}" for p in pods] + [f"warm pod {name(w)}" for w in warm_pods]
        status["phase"] = C.PHASE_TERMINATING
        cond = Condition("Ready", "False", "Terminating", "waiting for " + ", ".join(waiting_for) + " to terminate")
        return finalize_response(parent, previous, now, status, cond, keep, False)
    if keep:
        # Finalized only once every child is gone: Metacontroller deletes them while its finalizer
        # holds the sandbox. Released earlier, they would be left to the garbage collector, and a
        # new sandbox of the same name would find its children's names taken (seen on a real
        # cluster: it stayed Creating).
        status["phase"] = C.PHASE_TERMINATING
        cond = Condition("Ready", "False", "Terminating", f"the sandbox pod is gone; deleting {len(keep)} remaining child(ren)")
        return finalize_response(parent, previous, now, status, cond, [], False)
    status["phase"] = C.PHASE_TERMINATED
    cond = Condition("Ready", "False", "Terminated", "the sandbox pod and every other child are gone")
    return finalize_response(parent, previous, now, status, cond, [], True)


# ---------------------------------------------------------------------------------------------



