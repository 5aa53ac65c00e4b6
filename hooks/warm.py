"""The Sandbox's side of the warm-pod protocol (docs/warm-pools.md, "The protocol"), and what the
sandbox and the pool share.

The sandbox only ever *reads* warm pods. It computes the pool that may serve it (a Choice; every
pool computes the same one from the same offers, so a pool assigns on seeing the new sandbox),
adopts the WarmPod that pool bound to its UID once the WarmPod reports its pod ready, and points
its Service and NetworkPolicies at the pod's serving selector, a label the pod carries from its
creation; or it falls back to a cold start after a bounded wait. The WarmPool hook is the single
writer of assignments."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import orjson

from . import constants as C
from .conditions import find_condition
from .config import Config
from .meta import MAPPING, add_seconds, annotations, created, is_deleting, name, namespace, objects, uid
from .quantity import parse_quantity
from .resolve import Effective
from .validators import EnvFromSource, EnvVar, SandboxSpec, SpecError, WarmPoolOfferSpec, WarmPoolSpec, parse_spec, validate_cached

# Sandbox.status.warmPodUsed: True = served by a warm pod, False = cold start; absent = undecided.
# WarmPod phases (written by hooks/warmpod_sync.py).
WARM_PHASE_READY = "Ready"
WARM_PHASE_ASSIGNED = "Assigned"
WARM_PHASE_FAILED = "Failed"
WARM_PHASE_TERMINATING = "Terminating"


@dataclass  # per call, never edited; not frozen for speed (see conditions.Condition)
class WarmDecision:
    mode: str  # "none" (warm pod not requested), "waiting", "warm", "cold"
    pool: Optional[str] = None
    warm_pod: Optional[Mapping[str, Any]] = None
    reason: str = ""
    message: str = ""
    resync_after: Optional[float] = None
    extra: dict[str, Any] = field(default_factory=dict)
    # mode "warm": what the sandbox's Service and NetworkPolicies select (the warm pod's serving
    # selector, or its UID label for a WarmPod made before it), and every selector known to select
    # the pod now (Running needs the observed ones among them).
    selector: Optional[dict[str, str]] = None
    accepted: tuple[dict[str, str], ...] = ()


def requested(spec: SandboxSpec, parent: Mapping[str, Any]) -> bool:
    return spec.warm_pool_ref is not None or annotations(parent).get(C.ANNOTATION_USE_WARM_POD) == "true"


def asks_for_warm_pod(sandbox: Mapping[str, Any]) -> bool:
    """`requested` from the raw object (the pool reads sandboxes it need not validate)."""
    spec = sandbox.get("spec") if isinstance(sandbox.get("spec"), MAPPING) else {}
    return isinstance(spec, MAPPING) and isinstance(spec.get("warmPoolRef"), MAPPING) \
        or annotations(sandbox).get(C.ANNOTATION_USE_WARM_POD) == "true"


@dataclass(frozen=True)
class Offer:
    """What a pool's warm pods are: the pool states it in its WarmPoolOffer child (sandboxes read
    that, never the pool, whose status changes with every assignment)."""
    pool: str
    runtime: str  # the pool's runtime, resolved to a RuntimeEnvironment name
    spec: WarmPoolOfferSpec

    def wire(self) -> dict[str, Any]:
        return self.spec.wire()


def env_digest(env: Sequence[EnvVar], env_from: Sequence[EnvFromSource]) -> Optional[str]:
    """sha256 of an environment in wire form (order kept: a later variable may refer to an earlier
    one), or None for none. The offer carries this, never the values or Secret references."""
    if not env and not env_from:
        return None
    body = orjson.dumps({"env": [e.wire() for e in env], "envFrom": [e.wire() for e in env_from]}, option=orjson.OPT_SORT_KEYS)
    return "sha256:" + hashlib.sha256(body).hexdigest()


def make_offer(pool: str, runtime_name: str, pool_spec: WarmPoolSpec) -> Offer:
    offer: dict[str, Any] = {"poolRef": {"name": pool}, "runtime": runtime_name, "securityLevel": pool_spec.security_level,
                             "resources": pool_spec.resources.wire()}
    digest = env_digest(pool_spec.env or (), pool_spec.env_from or ())
    if digest is not None:  # absent otherwise: offers of pools without env are what they were
        offer["envDigest"] = digest
    return Offer(pool, runtime_name, validate_cached(WarmPoolOfferSpec, offer))


def read_offer(obj: Mapping[str, Any]) -> Offer:
    """The offer a WarmPoolOffer object states; SpecError when it is not one its pool made."""
    spec: WarmPoolOfferSpec = parse_spec(WarmPoolOfferSpec, dict(obj))
    if not owned_by_pool(obj, spec.pool_ref.name):
        # Only the pool's own offer counts: an object someone else made cannot steer sandboxes.
        raise SpecError(f"not made by WarmPool {spec.pool_ref.name!r}")
    return Offer(spec.pool_ref.name, spec.runtime, spec)


def pool_shape_fits(offer: Offer, eff: Effective) -> Optional[str]:
    """Why this pool cannot serve the sandbox, or None when it can. A warm pod is built with the
    pool's settings and the defaults for everything else, so the sandbox must ask for no more."""
    if offer.runtime != eff.runtime_name:
        return f"pool runtime {offer.runtime!r} is not the sandbox's {eff.runtime_name!r}"
    if offer.spec.security_level != eff.security_level:
        return f"pool security level {offer.spec.security_level!r} differs from the sandbox's {eff.security_level!r}"
    if eff.persistent:
        return "sandboxes with persistent storage always start cold"
    if eff.cpu_pinning:
        return "sandboxes with CPU pinning always start cold"
    if eff.seccomp.type != C.SECCOMP_RUNTIME_DEFAULT:
        return "warm pods use the RuntimeDefault seccomp profile"
    why = timeout_fits(eff.timeout)
    if why is not None:
        return why
    if (eff.run_as_user, eff.run_as_group) != (C.DEFAULT_RUN_AS_USER, C.DEFAULT_RUN_AS_GROUP):
        return "warm pods run as the default user and group"
    if not set(eff.writable_paths) <= set(C.DEFAULT_WRITABLE_PATHS):
        return "warm pods only have the default writable paths"
    res = offer.spec.resources
    for what, want, have in (("cpu", eff.cpu, res.cpu), ("memory", eff.memory, res.memory),
                             ("ephemeral storage", eff.ephemeral_storage, res.ephemeral_storage)):
        if parse_quantity(want) > parse_quantity(have):
            return f"the sandbox needs {want} {what}, the pool's pods have {have}"
    return env_fits(offer, env_digest(eff.env, eff.env_from))


ENV_MISMATCH_PREFIX = "environment: "


def env_fits(offer: Offer, digest: Optional[str]) -> Optional[str]:
    """A running pod cannot gain environment variables, and a pod's variables (Secret references
    among them) must never reach a sandbox that did not ask for them: a pool serves a sandbox only
    when both declare exactly the same env and envFrom (both none included). The message names
    neither values nor references."""
    if offer.spec.env_digest == digest:
        return None
    if digest is None:
        return ENV_MISMATCH_PREFIX + "the pool's pods carry env/envFrom the sandbox does not declare"
    if offer.spec.env_digest is None:
        return ENV_MISMATCH_PREFIX + "the sandbox declares env/envFrom and the pool's pods have none (a running pod cannot gain variables)"
    return ENV_MISMATCH_PREFIX + "the pool's env/envFrom differ from the sandbox's (a running pod cannot gain variables)"


def timeout_fits(timeout: int) -> Optional[str]:
    """A warm pod's termination grace period is the default timeout (the pod exists before its
    sandbox, and a pod's spec never changes): a sandbox asking for another one starts cold, so
    its deletion gives its process exactly the time it asked for."""
    if timeout != C.DEFAULT_TIMEOUT_SECONDS:
        return f"warm pods have the default timeout of {C.DEFAULT_TIMEOUT_SECONDS}s (their termination grace period), the sandbox asks for {timeout}s"
    return None


# What a warm-served sandbox runs without, said in its WarmPod condition (docs/warm-pools.md).
WARM_DIFFERENCES = ("it runs under the namespace's default ServiceAccount (no token mounted), "
                    "not the sandbox's own, which is created only for a cold start")


def serving_selector(warmpod_uid: str) -> dict[str, str]:
    """The labels that select the Pod of the WarmPod with this UID, and no other pod: its WarmPod
    hook sets them when it creates the Pod (hooks/warmpod_sync.py). A sandbox served by it points
    its Service and NetworkPolicies here, so no relabelling stands between assignment and serving.
    Computed from the WarmPod's own UID, never taken from a field anyone could write."""
    return {C.LABEL_APP: C.APP_NAME, C.LABEL_WARMPOD_UID: warmpod_uid}


def sandbox_selector(sandbox_uid: str) -> dict[str, str]:
    """The labels of a sandbox's own pods (and, once relabelled, of a warm pod bound to it)."""
    return {C.LABEL_APP: C.APP_NAME, C.LABEL_SANDBOX_UID: sandbox_uid}


# The WarmPod hook's Assigned condition once its Pod carries the sandbox's UID label
# (hooks/warmpod_sync.py; the only state before the upgrade to servingSelector).
REASON_POD_LABELLED = "PodLabelled"


def _assignment(wp: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
    spec = wp.get("spec") if isinstance(wp.get("spec"), MAPPING) else {}
    assignment = spec.get("assignment") if isinstance(spec, MAPPING) else None
    return assignment if isinstance(assignment, MAPPING) else None


def _wp_status(wp: Mapping[str, Any]) -> Mapping[str, Any]:
    status = wp.get("status")
    return status if isinstance(status, MAPPING) else {}


def assigned_to(wp: Mapping[str, Any], parent: Mapping[str, Any]) -> bool:
    """The pool bound this WarmPod to this sandbox's UID (its name is never enough: a re-created
    sandbox of the same name is another sandbox)."""
    assignment = _assignment(wp)
    my_uid = uid(parent)
    return bool(assignment is not None and my_uid and assignment.get("sandboxUid") == my_uid
                and namespace(wp) in ("", namespace(parent)))


def pool_of(wp: Mapping[str, Any]) -> Optional[str]:
    """The WarmPool that controls this WarmPod (its controller owner reference), if any."""
    for ref in wp.get("metadata", {}).get("ownerReferences") or []:
        if isinstance(ref, MAPPING) and ref.get("controller") and ref.get("kind") == C.KIND_WARMPOOL and isinstance(ref.get("name"), str):
            return str(ref["name"])
    return None


def warm_selectors(wp: Mapping[str, Any], sandbox_uid: str) -> tuple[dict[str, str], ...]:
    """The selectors known to select this WarmPod's Pod now, best first: its serving selector once
    the WarmPod reports its Pod carries it (status.servingSelector, compared with what the UID
    gives, never copied), and the sandbox's UID label once the Pod carries that (the relabel, off
    the critical path now; the only one for a WarmPod made before servingSelector existed)."""
    status = _wp_status(wp)
    out: list[dict[str, str]] = []
    own = serving_selector(uid(wp)) if uid(wp) else None
    if own is not None and status.get("servingSelector") == own:
        out.append(own)
    labelled = find_condition(status, "Assigned", "True")
    if labelled is not None and labelled.get("reason") == REASON_POD_LABELLED:
        out.append(sandbox_selector(sandbox_uid))
    return tuple(out)


def pod_ready(wp: Mapping[str, Any]) -> bool:
    """The WarmPod's last word on its Pod: Ready (also as written before the assignment, which
    changes nothing about the Pod) and neither failed nor going."""
    status = _wp_status(wp)
    return (status.get("phase") in (WARM_PHASE_READY, WARM_PHASE_ASSIGNED) and bool(status.get("podName"))
            and find_condition(status, "Ready", "True") is not None)


def adoptable(wp: Mapping[str, Any], sandbox_uid: str) -> bool:
    """A bound WarmPod the sandbox may take now: its Pod is ready and a selector is known to
    select it. The pool wrote the assignment; the WarmPod's status need not have caught up."""
    return not is_deleting(wp) and pod_ready(wp) and bool(warm_selectors(wp, sandbox_uid))


def pod_selector(wp: Mapping[str, Any], sandbox_uid: str) -> tuple[dict[str, str], tuple[dict[str, str], ...]]:
    """(what a sandbox served by this WarmPod's pod points its Service and policies at, every
    selector known to select the pod): the best of warm_selectors; with none reported (a
    readiness blip of a WarmPod made before servingSelector) the sandbox's UID label, which
    selected such a pod."""
    accepted = warm_selectors(wp, sandbox_uid)
    selector = accepted[0] if accepted else sandbox_selector(sandbox_uid)
    return selector, accepted or (selector,)


def _bound(pool: str, wp: Mapping[str, Any], parent: Mapping[str, Any]) -> WarmDecision:
    selector, accepted = pod_selector(wp, uid(parent))
    return WarmDecision("warm", pool, wp, "WarmPodBound", f"served by warm pod {name(wp)} of pool {pool}; {WARM_DIFFERENCES}",
                        selector=selector, accepted=accepted)


@dataclass(frozen=True)
class Choice:
    """The pool that may serve a sandbox: its warmPoolRef's, else the first compatible pool by name
    (pool None: none, `why_not` says why). The sandbox computes it to know whose warm pod it may
    adopt; every pool computes it too, from the same offers, so it can assign on seeing a new
    sandbox without waiting for the sandbox to write its choice: both sides reach the same pool."""
    pool: Optional[str]
    why_not: str = ""


def read_offers(related: Any, ns: str) -> tuple[list[Offer], list[str]]:
    """The offers of a namespace's pools, by pool name, and the objects ignored (and why). A pool
    that cannot serve (invalid, runtime unresolved, deleting) makes none."""
    reasons, offers = [], []
    for obj in objects(related, C.GVK_WARMPOOL_OFFER):
        if namespace(obj) not in ("", ns) or is_deleting(obj):
            continue
        try:
            offers.append(read_offer(obj))
        except SpecError as exc:
            reasons.append(f"{name(obj)}: ignored ({exc})")
    offers.sort(key=lambda o: o.pool)
    return offers, reasons


def choose(spec: SandboxSpec, eff: Effective, offers: Sequence[Offer], ignored: Sequence[str] = ()) -> Choice:
    """The Choice from a namespace's offers (read_offers): deterministic, and nothing a tenant
    names other than its own warmPoolRef enters it."""
    reasons = list(ignored)
    if spec.warm_pool_ref is not None:
        offers = [o for o in offers if o.pool == spec.warm_pool_ref.name]
        if not offers:
            return Choice(None, f"WarmPool {spec.warm_pool_ref.name!r} not found or not ready to serve")
    for offer in offers:
        why = pool_shape_fits(offer, eff)
        if why is None:
            return Choice(offer.pool)
        reasons.append(f"{offer.pool}: {why}")
    if not reasons:
        return Choice(None, "no WarmPool ready to serve in this namespace")
    return Choice(None, "no compatible WarmPool (" + "; ".join(reasons) + ")")


def choose_pool(spec: SandboxSpec, parent: Mapping[str, Any], eff: Effective, related: Any) -> Choice:
    """The sandbox's Choice from the offers it relates to."""
    offers, ignored = read_offers(related, namespace(parent))
    return choose(spec, eff, offers, ignored)


REASON_NO_COMPATIBLE_POOL = "NoCompatiblePool"
# A pool would serve the sandbox but for its environment (env_fits): docs/environment.md.
REASON_ENV_MISMATCH = "EnvironmentMismatch"


def no_pool_reason(why_not: str) -> str:
    """The WarmPod condition's reason for a sandbox no pool can serve: EnvironmentMismatch when the
    environment is what kept some pool from serving it, so the trade-off is visible at a glance."""
    return REASON_ENV_MISMATCH if f": {ENV_MISMATCH_PREFIX}" in why_not else REASON_NO_COMPATIBLE_POOL


def owned_by_pool(warm_pod: Mapping[str, Any], pool: str) -> bool:
    for ref in warm_pod.get("metadata", {}).get("ownerReferences") or []:
        if isinstance(ref, MAPPING) and ref.get("controller") and ref.get("kind") == C.KIND_WARMPOOL and ref.get("name") == pool:
            return True
    return False


def bound_warm_pod(parent: Mapping[str, Any], related: Any, pools: Sequence[str]) -> Optional[Mapping[str, Any]]:
    """The WarmPod bound to this sandbox's UID by one of `pools` (the one it chose), not being
    deleted: first by name if, after a stale cache, a pool bound several (the pool keeps that one
    too). A pool it did not choose may have assigned one in a race (views of the offers differ for
    a moment): the sandbox leaves it, and that pool releases it once the sandbox has decided."""
    for wp in objects(related, C.GVK_WARMPOD):
        if assigned_to(wp, parent) and pool_of(wp) in pools and not is_deleting(wp):
            return wp
    return None


def _status_of(parent: Mapping[str, Any]) -> Mapping[str, Any]:
    status = parent.get("status")
    return status if isinstance(status, MAPPING) else {}


def _serving_name(parent: Mapping[str, Any]) -> Optional[str]:
    """The WarmPod an earlier sync recorded serving this sandbox (status.warmPodUsed, warmPodRef)."""
    previous = parent.get("status") if isinstance(parent.get("status"), MAPPING) else {}
    ref = previous.get("warmPodRef") if isinstance(previous, MAPPING) and previous.get("warmPodUsed") is True else None
    return ref.get("name") if isinstance(ref, MAPPING) and isinstance(ref.get("name"), str) else None


def adopted(parent: Mapping[str, Any], wp: Mapping[str, Any], service_uid: Optional[str]) -> bool:
    """Whether this sandbox took this WarmPod in an earlier sync: its status says so, or its own
    Service selects the WarmPod's serving selector (`service_uid`: the warmpod-uid the observed
    Service selects; only the sandbox writes its Service). Either memory suffices, so one stale
    cache (parent or children) cannot make the sandbox forget its pod."""
    return name(wp) == _serving_name(parent) or bool(service_uid and uid(wp) == service_uid)


def held_warm_pod(parent: Mapping[str, Any], related: Any, service_uid: Optional[str] = None) -> Optional[tuple[str, Mapping[str, Any]]]:
    """(pool, WarmPod) this sandbox already runs on, whichever pool it came from: bound to its UID,
    adopted (see `adopted`), not being deleted and not failed. Such a pod stays the sandbox's pod,
    like a cold pod does: a new or edited pool, a pool missing from the cache, a removed
    annotation or a readiness blip of the pod must never make the sandbox start cold (the pool
    would then delete the pod it runs on)."""
    for wp in objects(related, C.GVK_WARMPOD):
        status = _wp_status(wp)
        pool = pool_of(wp)
        if (assigned_to(wp, parent) and pool is not None and not is_deleting(wp) and status.get("podName")
                and status.get("phase") not in (WARM_PHASE_FAILED, WARM_PHASE_TERMINATING) and adopted(parent, wp, service_uid)):
            return pool, wp
    return None


REASON_WARM_POD_FAILED = "WarmPodFailed"
REASON_REPLACE_REQUESTED = "PodReplaceRequested"
REASON_SUSPENDED = "Suspended"
COLD_REASONS = (REASON_NO_COMPATIBLE_POOL, REASON_ENV_MISMATCH, "WarmPodWaitTimeout", REASON_WARM_POD_FAILED,
               REASON_REPLACE_REQUESTED, REASON_SUSPENDED)
SUSPENDED_MESSAGE = ("the sandbox was suspended: a warm pod bound to it is released (its pool deletes it, it is never reused) "
                     "and the sandbox resumes on a cold-started pod")


def suspended(spec: SandboxSpec, parent: Mapping[str, Any]) -> WarmDecision:
    """The warm side of a suspended sandbox (docs/suspend.md): one that asked for, waited for or ran
    on a warm pod goes cold for good. Its status then says warmPodUsed false, which makes its pool
    drop the WarmPod bound to it (never reuse) and stop counting it as waiting; the condition's
    reason is the memory that its resume is a cold start."""
    previous = parent.get("status") if isinstance(parent.get("status"), Mapping) else {}
    if not (requested(spec, parent) or "warmPool" in previous or "warmPodUsed" in previous):
        return WarmDecision("none")
    return WarmDecision("cold", _recorded_pool(parent), reason=REASON_SUSPENDED, message=SUSPENDED_MESSAGE)


def _recorded_pool(parent: Mapping[str, Any]) -> Optional[str]:
    """status.warmPool, the pool an earlier sync chose, if any."""
    previous = parent.get("status") if isinstance(parent.get("status"), Mapping) else {}
    pool = previous.get("warmPool") if isinstance(previous, Mapping) else None
    return pool if isinstance(pool, str) and pool else None


def lost_warm_pod(parent: Mapping[str, Any], related: Any, started_cold: bool,
                  service_uid: Optional[str] = None) -> Optional[tuple[Optional[str], str, str]]:
    """(pool, WarmPod, what happened to it) when the warm pod this sandbox adopted (see `adopted`)
    can no longer serve it: failed or going, or gone. Called once held_warm_pod found nothing. A
    WarmPod bound but never adopted counts only when it failed (decide): a pool may release an
    assignment the sandbox never took (it chose another pool), which is no failure. After a cold
    start began, only the pod the status says it ran on counts: the pool also deletes a warm pod
    it bound too late to a sandbox that started cold."""
    serving = _serving_name(parent)
    mine = [wp for wp in objects(related, C.GVK_WARMPOD) if assigned_to(wp, parent)]
    for wp in mine:
        phase = _wp_status(wp).get("phase")
        if (adopted(parent, wp, service_uid) and (is_deleting(wp) or phase in (WARM_PHASE_FAILED, WARM_PHASE_TERMINATING))
                and (not started_cold or name(wp) == serving)):
            return pool_of(wp), name(wp), "is being deleted" if is_deleting(wp) else f"is {phase}"
    previous = parent.get("status") if isinstance(parent.get("status"), MAPPING) else {}
    pool = previous.get("warmPool") if isinstance(previous.get("warmPool"), str) else None
    if serving and serving not in {name(wp) for wp in mine}:
        return pool, serving, "is gone"
    if service_uid and not started_cold and service_uid not in {uid(wp) for wp in mine}:
        # Its Service still points at a warm pod whose WarmPod is gone (the status saying so may lag).
        return pool, f"with UID {service_uid}", "is gone"
    return None


def _cold_reason(parent: Mapping[str, Any]) -> Optional[tuple[str, str]]:
    """(reason, message) of the WarmPod condition an earlier sync wrote when it chose a cold start."""
    status = parent.get("status") if isinstance(parent.get("status"), MAPPING) else {}
    for cond in status.get("conditions") or [] if isinstance(status, MAPPING) else []:
        if (isinstance(cond, MAPPING) and cond.get("type") == "WarmPod" and cond.get("status") == "False"
                and cond.get("reason") in COLD_REASONS and isinstance(cond.get("message"), str)):
            return cond["reason"], cond["message"]
    return None


def decide(
    spec: SandboxSpec,
    parent: Mapping[str, Any],
    eff: Effective,
    related: Any,
    started_cold: bool,
    now: datetime,
    config: Config,
    replace: bool = False,
    service_uid: Optional[str] = None,
) -> WarmDecision:
    """Which pod serves the sandbox, warm side. `replace`: the sandbox requests a new pod
    (llmsafespace.dev/replace-pod) that its warm pod, if it runs on one, was not bound under. A
    pool's pod has the pool's settings, so the new pod is a cold-started one; the start is sticky
    (its ServiceAccount), so this happens once. `service_uid`: the warmpod-uid its observed
    Service selects, the memory of an adoption that outlives a stale status (`adopted`)."""
    recorded = _cold_reason(parent)
    if recorded is not None and recorded[0] == REASON_SUSPENDED:
        # Resumed after a suspension: the warm pod it had was released, whether or not its pool
        # has deleted it yet; the sandbox never goes back to it.
        return WarmDecision("cold", _recorded_pool(parent), reason=REASON_SUSPENDED, message=recorded[1])
    held = None if started_cold else held_warm_pod(parent, related, service_uid)
    if held is not None:
        return _keep_held(held, parent, recorded, replace)
    # A sandbox whose warm pod failed goes on cold at once: never back to waiting (Pending). A warm
    # pod its pool releases after a requested replacement did not fail.
    lost = None if recorded or replace else lost_warm_pod(parent, related, started_cold, service_uid)
    if lost is not None:
        return _lost(*lost)
    if not requested(spec, parent):
        return WarmDecision("none")
    choice = choose_pool(spec, parent, eff, related)
    deadline = add_seconds(created(parent) or now, config.warm_pod_wait_seconds)
    if started_cold or (recorded is not None and _status_of(parent).get("warmPodUsed") is False):
        # Decided cold: by a cold start under way, or by what an earlier sync wrote (its account
        # may not be observed yet, or its create failed). Its pool has let go of it since.
        return _stay_cold(parent, choice.pool, choice.why_not, now >= deadline, config)
    if choice.pool is None:
        return WarmDecision("cold", None, reason=no_pool_reason(choice.why_not), message=choice.why_not)
    return _adopt_or_wait(parent, related, choice.pool, spec.warm_pool_ref is None, deadline, now, config)


def _keep_held(held: tuple[str, Mapping[str, Any]], parent: Mapping[str, Any], recorded: Optional[tuple[str, str]],
               replace: bool) -> WarmDecision:
    """A sandbox on its warm pod stays on it, unless it asked for a new pod."""
    pool, wp = held
    # Until its ServiceAccount is observed, status is the memory of a replacement under way:
    # the warm pod, still bound until its pool releases it, is not taken back.
    if replace or (recorded is not None and recorded[0] == REASON_REPLACE_REQUESTED):
        return WarmDecision("cold", pool, reason=REASON_REPLACE_REQUESTED,
                            message=f"a new pod was requested ({C.ANNOTATION_REPLACE_POD}): a cold-started pod replaces warm pod {name(wp)}")
    return _bound(pool, wp, parent)


def _lost(pool: Optional[str], warm_pod: str, what: str) -> WarmDecision:
    of_pool = f" of pool {pool}" if pool else ""
    return WarmDecision("cold", pool, reason=REASON_WARM_POD_FAILED,
                        message=f"warm pod {warm_pod}{of_pool} {what}; the sandbox goes on with a cold-started pod")


def _adopt_or_wait(parent: Mapping[str, Any], related: Any, pool: str, by_offers: bool, deadline: datetime, now: datetime,
                   config: Config) -> WarmDecision:
    """Adopt the WarmPod the chosen pool bound to this sandbox as soon as it can serve, else wait
    until the deadline. `by_offers` (no warmPoolRef): the pool recorded by an earlier sync counts as
    chosen too, since the offers in a cache may change between syncs and that pool bound the pod
    for that choice (it keeps the pod until the sandbox decides); a warmPoolRef is the user's
    word, and only the pool it names counts."""
    recorded = _recorded_pool(parent) if by_offers else None
    wp = bound_warm_pod(parent, related, (pool,) if recorded in (None, pool) else (pool, str(recorded)))
    if wp is not None and _wp_status(wp).get("phase") == WARM_PHASE_FAILED:
        return _lost(pool_of(wp), name(wp), "is Failed")
    if wp is not None and adoptable(wp, uid(parent)):
        return _bound(str(pool_of(wp)), wp, parent)
    if now < deadline:
        what = f"warm pod {name(wp)} is bound, waiting for it to be ready" if wp is not None else f"waiting for pool {pool} to bind a warm pod"
        return WarmDecision("waiting", pool, wp, "WaitingForWarmPod", what, resync_after=(deadline - now).total_seconds())
    return _timed_out(pool, config)


def _timed_out(pool: str, config: Config) -> WarmDecision:
    return WarmDecision("cold", pool, reason="WarmPodWaitTimeout",
                        message=f"no warm pod of pool {pool} was ready within {config.warm_pod_wait_seconds}s; started cold")


def _stay_cold(parent: Mapping[str, Any], pool: Optional[str], why_not: str, waited: bool, config: Config) -> WarmDecision:
    """Sticky: once a cold start began the sandbox stays cold, and the pool releases its pod. The
    condition keeps saying why it began cold: as an earlier sync wrote it, or, when that status is
    not in the cache yet (often, on a real cluster), from the inputs."""
    recorded = _cold_reason(parent)
    if recorded is not None:
        return WarmDecision("cold", pool, reason=recorded[0], message=recorded[1])
    if pool is None:
        return WarmDecision("cold", None, reason=no_pool_reason(why_not), message=why_not)
    if waited:
        return _timed_out(pool, config)
    return WarmDecision("cold", pool, reason="ColdStart", message="running on a cold-started pod")
