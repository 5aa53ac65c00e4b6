"""The WarmPool controller's hooks (CompositeController): customize, sync and finalize.

Children: WarmPods named `<pool>-<k>`, and its WarmPoolOffer. Related: the Sandboxes and the
WarmPoolOffers of the pool's namespace and every RuntimeEnvironment. Pure functions of (pool,
observed WarmPods, related objects, now, config).

The pool is the single writer of warm-pod assignments (docs/warm-pools.md, "The protocol"): it
pairs the undecided sandboxes that choose it (warm.Choice, computed from their spec and the
offers exactly as their own hook computes it, so a new sandbox is served on sight, before it
wrote anything) oldest first with Ready, unassigned WarmPods (oldest first) and writes
`spec.assignment` plus the sandbox's identity labels into the WarmPod. An assignment is copied
unchanged forever (the CRD makes it immutable); a WarmPod that served a sandbox is never returned
to the pool: once its sandbox is gone, deleting, fell back to a cold start, ended or runs on
another pool's pod, the WarmPod is omitted from the children and Metacontroller deletes it.

Sizing (the original design's section 2, made level-based):
  * unassigned = available (WarmPod phase Ready) + pending (anything else not assigned);
  * demand = compatible waiting sandboxes left without a Ready pod in this sync;
  * keep unassigned >= max(minSize, demand), and <= maxSize when maxSize > 0 (maxSize bounds the
    idle pods, not the pods sandboxes use: a busy pool still keeps its minimum ready);
  * autoscaling: utilisation = assigned / (assigned + unassigned) * 100; the pool wants
    ceil((assigned + demand) / (targetUtilization / 100)) pods in total, i.e. that minus assigned
    idle ones (with no demand, the original formula);
  * growing happens at once; shrinking waits autoScaling.scaleDownDelay seconds after
    status.lastScaleTime (pool creation if none), removing pending pods first (newest first: least
    work lost), then the oldest available ones; excess over maxSize goes at once;
  * ttl > 0: an available pod expires at a per-name point between 80 % and 100 % of ttl, keeps
    serving until a replacement is Ready (replacements start at most _surge at a time), then goes
    (not a scale event);
  * unassigned pods built from an older pool spec (another runtime, image, resources, preload
    scripts) are recycled too: a WarmPod's spec, hence its Pod's, never changes after creation.

Names: k is the smallest integer whose name no observed WarmPod (terminating ones included) has,
so a dropped pod's name is not reused while it exists and a stale cache re-emits the same names
(Metacontroller then finds them already there)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from collections.abc import Mapping
from typing import Any, Optional

import orjson

from . import constants as C
from . import warm
from .conditions import Condition
from .config import DEFAULT_CONFIG, Config
from .meta import MAPPING, created, dns_label, fmt_time, is_deleting, label_value, name, namespace, parse_time, uid
from .request import SyncRequest
from .resolve import ResolutionError, check_security_features, merge, resolve_runtime, runtime_named, runtime_user_namespaces
from .response import as_desired, composite_response, finalize_response, parent_of
from .validators import RuntimeEnvironmentSpec, SandboxSpec, SpecError, WarmPodSpec, WarmPoolSpec, parse_spec, validate_cached

CHILD_KINDS = (C.GVK_WARMPOD,)
PHASE_READY = "Ready"  # WarmPod phases, written by hooks/warmpod_sync.py
PHASE_FAILED = "Failed"
PHASE_TERMINATING = "Terminating"
_ENDED = (C.PHASE_TERMINATED, C.PHASE_FAILED)
_SUSPENDED = (C.PHASE_SUSPENDING, C.PHASE_SUSPENDED)
_NEVER = datetime.max.replace(tzinfo=timezone.utc)


# ---------------------------------------------------------------------------------------------
# Observed WarmPods


@dataclass  # per call, never edited; not frozen for speed (see conditions.Condition)
class Member:
    obj: Mapping[str, Any]
    name: str
    created: datetime
    phase: Optional[str]
    assigned: bool
    sandbox_uid: Optional[str]  # None when assigned with an unreadable assignment: never reusable
    deleting: bool

    @property
    def order(self) -> tuple[datetime, str]:
        return self.created, self.name

    @property
    def spec(self) -> Mapping[str, Any]:
        spec = self.obj.get("spec")
        return spec if isinstance(spec, MAPPING) else {}


def _member(obj: Mapping[str, Any]) -> Member:
    spec = obj.get("spec") if isinstance(obj.get("spec"), MAPPING) else {}
    status = obj.get("status") if isinstance(obj.get("status"), MAPPING) else {}
    assignment = spec.get("assignment") if isinstance(spec, MAPPING) else None
    sandbox_uid = assignment.get("sandboxUid") if isinstance(assignment, MAPPING) else None
    phase = status.get("phase") if isinstance(status, MAPPING) else None
    return Member(
        obj=obj,
        name=name(obj),
        created=created(obj) or _NEVER,
        phase=phase if isinstance(phase, str) else None,
        assigned=assignment is not None,
        sandbox_uid=sandbox_uid if isinstance(sandbox_uid, str) and sandbox_uid else None,
        deleting=is_deleting(obj),
    )


def member_name(pool_name: str, k: int) -> str:
    """`<pool>-<k>`, shortened with a hash for long or unusual pool names (the Pod of the WarmPod
    gets the same name, and a Pod's name is its hostname: a DNS label)."""
    return dns_label(pool_name, str(k))


def _free_names(pool_name: str, taken: set[str], count: int) -> list[str]:
    out: list[str] = []
    k = 0
    while len(out) < count:
        candidate = member_name(pool_name, k)
        if candidate not in taken:
            out.append(candidate)
            taken.add(candidate)
        k += 1
    return out


# ---------------------------------------------------------------------------------------------
# Customize


def customize(request: Mapping[str, Any], now: Optional[datetime] = None, config: Config = DEFAULT_CONFIG) -> dict[str, Any]:
    """Related objects; depends only on the pool's namespace (Metacontroller caches the answer
    per (UID, generation))."""
    parent = parent_of(request)
    return {"relatedResources": [
        {"apiVersion": C.API_VERSION, "resource": "sandboxes", "namespace": namespace(parent)},
        {"apiVersion": C.API_VERSION, "resource": "runtimeenvironments"},
        # Every pool's offer (its own among them): a new sandbox's choice (warm.Choice) depends on
        # which pools sort before this one, and the pool computes it as the sandbox does, so it
        # assigns on seeing the sandbox. Offers change only with a pool's shape.
        {"apiVersion": C.API_VERSION, "resource": "warmpooloffers", "namespace": namespace(parent)},
    ]}


# ---------------------------------------------------------------------------------------------
# Sync: a short list of named steps (the module docstring explains the rules they follow)


class _Unusable(Exception):
    """The pool's spec cannot be used: nothing is created, replaced or assigned (_unusable)."""

    def __init__(self, reason: str, message: str, waiting: bool) -> None:
        super().__init__(message)
        self.reason, self.message, self.waiting = reason, message, waiting


@dataclass  # per call, never edited; not frozen for speed (see conditions.Condition)
class _Idle:
    """The pool's working state: its live, unassigned WarmPods of the current template, by state
    (oldest first); assignment and sizing take pods out of it."""

    available: list[Member]  # Ready
    expired: list[Member]  # Ready, past their ttl: they serve until replaced
    pending: list[Member]  # not Ready yet
    recycled: int  # failed or outdated ones, left out of the children
    ages: dict[str, float]  # seconds since creation, of the Ready ones


@dataclass  # per call, never edited; not frozen for speed (see conditions.Condition)
class _Assignment:
    new: list[tuple[Member, Mapping[str, Any]]]  # (Ready WarmPod, the waiting sandbox it now serves)
    unserved: list[str]  # waiting sandboxes this pool's pods cannot serve, and why
    demand: int  # compatible sandboxes left waiting: no Ready pod was left for them


@dataclass  # per call, never edited; not frozen for speed (see conditions.Condition)
class _Sizing:
    idle: _Idle  # what stays: removals applied, expired pods cut to the stand-ins still needed
    created: int  # new WarmPods to create
    capped: bool  # maxSize cut the target
    last_scale: Optional[str]  # status.lastScaleTime
    resync: list[float]


def sync(request: Mapping[str, Any], now: datetime, config: Config = DEFAULT_CONFIG) -> dict[str, Any]:
    req = SyncRequest.of(request)
    if req.finalizing:
        return _finalize(req, now)
    members = [_member(o) for o in req.children_of(C.GVK_WARMPOD)]
    sandboxes = {uid(s): s for s in req.related_of(C.GVK_SANDBOX) if uid(s) and namespace(s) in ("", req.namespace)}
    # 1. Assigned WarmPods: kept with their assignment while their sandbox uses them or may take
    # them, else dropped (also by a pool that cannot serve: a sandbox's deletion waits for its
    # warm pod).
    live = [m for m in members if not m.deleting]  # terminating ones are on their way out
    holders = _holders(live, sandboxes, req.name)
    kept_assigned = [m for sandbox_uid, held in holders.items() for m in _the_adopted(held, sandboxes[sandbox_uid])]
    try:
        spec, runtime_name, runtime = _resolve(req)
    except _Unusable as exc:
        return _unusable(req, live, kept_assigned, exc.reason, exc.message, exc.waiting, now)
    user_namespaces = runtime_user_namespaces(runtime_named(runtime_name, req.related_of(C.GVK_RUNTIME)))
    template = _template(req.name, runtime_name, runtime.image, spec, user_namespaces)
    # What sandboxes see of this pool: its offer (a child, so they need not watch the pool).
    offer = warm.make_offer(req.name, runtime_name, spec)
    idle = _sort_idle(live, template, spec.ttl, now)  # 2.
    offers, _ = warm.read_offers(req.related, req.namespace)  # what the sandboxes choose from
    assignment = _assign(idle, sandboxes, holders, req.name, _Offers(offer, offers), req.related_of(C.GVK_RUNTIME), config)  # 3.
    idle = _without_assigned(idle, assignment)
    assigned_count = len(kept_assigned) + len(assignment.new)
    sizing = _size(idle, spec, assigned_count, assignment.demand, req, now)  # 4.
    desired = _desired(req, offer, template, kept_assigned, assignment, sizing, members)  # 5.
    status = _pool_status(sizing, assigned_count, runtime_name, runtime.image)
    conditions = _pool_conditions(spec, runtime_name, runtime.image, status, assignment.unserved, sizing.capped)
    return composite_response(req.parent, req.previous_status, now, status, conditions, desired,
                              min(sizing.resync) if sizing.resync else None)


def _resolve(req: SyncRequest) -> tuple[WarmPoolSpec, str, RuntimeEnvironmentSpec]:
    """The pool's spec and its resolved runtime; raises _Unusable when the pool cannot serve."""
    try:
        spec: WarmPoolSpec = parse_spec(WarmPoolSpec, dict(req.parent))
    except SpecError as exc:
        raise _Unusable("InvalidSpec", str(exc), False) from exc
    if spec.security_level == "custom":
        # securityLevel custom means a Localhost seccomp profile chosen per sandbox; warm pods run
        # RuntimeDefault, so such a pool could never serve anyone (warm.pool_shape_fits).
        raise _Unusable("UnsupportedSecurityLevel",
                        "securityLevel custom is not supported for warm pools: warm pods use the RuntimeDefault seccomp profile", False)
    try:
        runtime_name, runtime = resolve_runtime(spec.runtime, req.related_of(C.GVK_RUNTIME))
        check_security_features(spec.security_level, runtime_name, runtime)
    except ResolutionError as exc:
        raise _Unusable(exc.reason, exc.message, exc.waiting) from exc
    return spec, runtime_name, runtime


def _sort_idle(live: list[Member], template: Mapping[str, Any], ttl: int, now: datetime) -> _Idle:
    """2. Unassigned WarmPods: failed and outdated ones are recycled; (ttl) expired idle ones keep
    serving until replaced (step 4)."""
    recycled = 0
    available: list[Member] = []
    expired: list[Member] = []
    pending: list[Member] = []
    ages: dict[str, float] = {}
    current = _TemplateCheck(template)
    for m in sorted((m for m in live if not m.assigned), key=lambda m: m.order):
        if m.phase in (PHASE_FAILED, PHASE_TERMINATING) or not current.matches(m.spec):
            recycled += 1
        elif m.phase == PHASE_READY:
            ages[m.name] = (now - m.created).total_seconds() if m.created is not _NEVER else 0.0
            (expired if ttl and ages[m.name] >= expiry_seconds(ttl, m.name) else available).append(m)
        else:
            pending.append(m)
    return _Idle(available, expired, pending, recycled, ages)


@dataclass  # per call, never edited; not frozen for speed (see conditions.Condition)
class _Offers:
    own: warm.Offer  # what this pool's pods are now (its spec, resolved)
    observed: list[warm.Offer]  # the namespace's offers as sandboxes see them, this pool's among them


def _assign(idle: _Idle, sandboxes: Mapping[str, Mapping[str, Any]], holders: Mapping[str, list[Member]], pool_name: str,
            offers: _Offers, runtimes: list[dict[str, Any]], config: Config) -> _Assignment:
    """3. The undecided sandboxes that choose this pool (_chooses), oldest first, get the oldest
    Ready pods (expired ones first: they are the oldest). Compatible ones left without are demand
    (step 4)."""
    choices = _Choices(offers.observed, runtimes, config)
    # Filtered before sorting: most sandboxes of a busy namespace have decided or ask for no pod.
    candidates = sorted(
        (s for s in sandboxes.values() if _undecided(s) and uid(s) not in holders and _chooses(s, pool_name, choices)),
        key=lambda s: (created(s) or _NEVER, name(s)),
    )
    ready = sorted(idle.expired + idle.available, key=lambda m: m.order)
    new: list[tuple[Member, Mapping[str, Any]]] = []
    unserved: list[str] = []
    demand = 0
    verdicts: dict[bytes, Optional[str]] = {}  # sandboxes with the same spec get the same verdict
    for sandbox in candidates:
        # Checked again against what the pods are now: either side may have been edited since.
        why = _incompatible_cached(verdicts, sandbox, offers.own, runtimes, config)
        if why is not None:
            unserved.append(f"{name(sandbox)} ({why})")
        elif ready:
            new.append((ready.pop(0), sandbox))
        else:
            demand += 1
    return _Assignment(new, unserved, demand)


def _chooses(sandbox: Mapping[str, Any], pool_name: str, choices: "_Choices") -> bool:
    """Whether the sandbox takes a pod of this pool: its status names the pool (the sandbox adopts
    from the pool it recorded choosing too, hooks/warm.py), or it has recorded no choice yet and
    computes this pool. A sandbox recording another pool is left to that one, even when this
    pool's view of the offers says otherwise for a moment."""
    if not warm.asks_for_warm_pod(sandbox):
        return False
    spec = sandbox.get("spec") if isinstance(sandbox.get("spec"), MAPPING) else {}
    ref = spec.get("warmPoolRef") if isinstance(spec, MAPPING) else None
    if isinstance(ref, MAPPING) and ref.get("name") != pool_name:
        return False  # the user named another pool (also after an edit its status does not show yet)
    recorded = _status(sandbox).get("warmPool")
    if isinstance(recorded, str) and recorded:
        return recorded == pool_name
    return choices.of(sandbox) == pool_name


class _Choices:
    """warm.Choice of each sandbox as the pool computes it: the same function of the sandbox's
    spec and the namespace's offers the sandbox's own hook evaluates, so the pool need not wait
    for the sandbox to write its choice (status.warmPool) before assigning. Memoised per spec."""

    def __init__(self, offers: list[warm.Offer], runtimes: list[dict[str, Any]], config: Config) -> None:
        self.offers, self.runtimes, self.config = offers, runtimes, config
        self.memo: dict[bytes, Optional[str]] = {}

    def of(self, sandbox: Mapping[str, Any]) -> Optional[str]:
        """The pool the sandbox chooses, or None (none fits, it asks for no warm pod, its spec
        cannot be read, or it has a profile: profiles are not related objects of the pool, so only
        the sandbox can compute its choice, and it is served once its status names a pool)."""
        spec = sandbox.get("spec")
        if not warm.asks_for_warm_pod(sandbox) or (isinstance(spec, MAPPING) and spec.get("profileRef")):
            return None
        try:
            key = orjson.dumps(spec)
        except TypeError:  # not JSON (never from Metacontroller): no memo
            return self._compute(sandbox)
        if key not in self.memo:
            self.memo[key] = self._compute(sandbox)
        return self.memo[key]

    def _compute(self, sandbox: Mapping[str, Any]) -> Optional[str]:
        try:
            spec: SandboxSpec = parse_spec(SandboxSpec, dict(sandbox))
            runtime_name, runtime = resolve_runtime(spec.runtime, self.runtimes)
            eff = merge(spec, runtime_name, runtime, None, self.config.retain_storage_class)
        except (SpecError, ResolutionError):
            return None  # the sandbox cannot use its spec either: it chooses nothing
        return warm.choose(spec, eff, self.offers).pool


def _without_assigned(idle: _Idle, assignment: _Assignment) -> _Idle:
    """The Ready pods just assigned are no longer idle (only Ready ones are ever assigned)."""
    taken = {m.name for m, _ in assignment.new}
    return replace(idle, available=[m for m in idle.available if m.name not in taken],
                   expired=[m for m in idle.expired if m.name not in taken])


def _size(idle: _Idle, spec: WarmPoolSpec, assigned: int, demand: int, req: SyncRequest, now: datetime) -> _Sizing:
    """4. Sizing of the idle (unassigned) part; expired pods do not count as idle, they only stand
    in for missing ones."""
    target, capped = _target(spec, assigned, demand)
    removed, deferred, remaining = _scale_down(idle, target, spec, req, now)
    gone = {m.name for m in removed}
    available = [m for m in idle.available if m.name not in gone]
    pending = [m for m in idle.pending if m.name not in gone]
    # Replace before removing: expired pods stand in for the Ready pods the pool lacks (the
    # youngest kept, the oldest go first), and at most `surge` replacements start at a time.
    stand_in = min(len(idle.expired), max(0, target - len(available)))
    expired = idle.expired[len(idle.expired) - stand_in:]
    missing = max(0, target - len(available) - stand_in - len(pending))  # not covered at all
    wanted_pending = target - len(available) - stand_in + min(stand_in, _surge(target))
    created_count = max(0, wanted_pending - len(pending))
    scale_event = missing > idle.recycled or bool(removed)
    resync: list[float] = []
    if deferred:
        # The rest of the excess goes when the delay, counted from the last scale event, has passed.
        resync.append(float(spec.auto_scaling.scale_down_delay) if scale_event else remaining)
    if spec.ttl:
        resync += [expiry_seconds(spec.ttl, m.name) - idle.ages[m.name] for m in available]
    stamp = parse_time(req.previous_status.get("lastScaleTime"))
    last_scale = fmt_time(now) if scale_event else (fmt_time(stamp) if stamp else None)
    kept = replace(idle, available=available, expired=expired, pending=pending)
    return _Sizing(kept, created_count, capped, last_scale, resync)


def _scale_down(idle: _Idle, target: int, spec: WarmPoolSpec, req: SyncRequest, now: datetime) -> tuple[list[Member], bool, float]:
    """Idle pods over the target to remove now, whether the rest waits for the scale-down delay,
    and how long it still runs. Excess over maxSize goes at once."""
    count = len(idle.available) + len(idle.pending)
    if count <= target:
        return [], False, 0.0
    excess = count - target
    over_max = max(0, count - spec.max_size) if spec.max_size else 0
    since = parse_time(req.previous_status.get("lastScaleTime")) or created(req.parent) or now
    remaining = spec.auto_scaling.scale_down_delay - (now - since).total_seconds()
    deferred = remaining > 0 and excess > over_max
    # Pending pods first (newest first: least work lost), then the oldest available ones.
    victims = sorted(idle.pending, key=lambda m: m.order, reverse=True) + idle.available
    return victims[: over_max if deferred else excess], deferred, remaining


def _desired(req: SyncRequest, offer: warm.Offer, template: Mapping[str, Any], kept_assigned: list[Member],
             assignment: _Assignment, sizing: _Sizing, members: list[Member]) -> list[dict[str, Any]]:
    """5. The offer, the WarmPods sandboxes use, the idle ones kept, and the new ones."""
    pool_name, ns = req.name, req.namespace
    desired: list[dict[str, Any]] = [_offer(offer, ns)]
    for m in kept_assigned:
        desired.append(_warm_pod(m.name, pool_name, ns, dict(m.spec), m.spec.get("assignment")))
    for m, sandbox in assignment.new:
        bound = {"sandboxName": name(sandbox), "sandboxUid": uid(sandbox)}
        desired.append(_warm_pod(m.name, pool_name, ns, {**template, "assignment": bound}, bound))
    for m in sizing.idle.available + sizing.idle.expired + sizing.idle.pending:
        desired.append(_warm_pod(m.name, pool_name, ns, dict(template), None))
    for new_name in _free_names(pool_name, {m.name for m in members}, sizing.created):
        desired.append(_warm_pod(new_name, pool_name, ns, dict(template), None))
    return desired


def _pool_status(sizing: _Sizing, assigned_count: int, runtime_name: str, image: str) -> dict[str, Any]:
    idle = sizing.idle
    status: dict[str, Any] = {
        "availablePods": len(idle.available) + len(idle.expired),
        "pendingPods": len(idle.pending) + sizing.created,
        "assignedPods": assigned_count,
        "runtimeEnvironment": runtime_name,
        "image": image,
    }
    if sizing.last_scale:
        status["lastScaleTime"] = sizing.last_scale
    return status


def _pool_conditions(spec: WarmPoolSpec, runtime_name: str, image: str, status: Mapping[str, Any], unserved: list[str],
                     capped: bool) -> list[Condition]:
    return [
        Condition("Validated", "True", "Valid", f"runtime {runtime_name} ({image}), security level {spec.security_level}"),
        _ready(status["availablePods"], status["pendingPods"], spec.min_size, unserved),
        Condition("ScalingLimited", "True", "MaxSizeReached", f"the pool wants more idle pods than maxSize ({spec.max_size})")
        if capped else Condition("ScalingLimited", "False", "WithinLimits", "the pool is within its size limits"),
    ]


def _template(pool_name: str, runtime_name: str, image: str, spec: WarmPoolSpec, user_namespaces: bool) -> dict[str, Any]:
    """The spec of a new WarmPod of this pool (everything explicit, so it equals what the API
    server stores after defaulting). When the runtime's nodes lose or gain user namespace support,
    idle pods no longer match and are replaced (assigned ones are kept)."""
    return {
        "poolRef": {"name": pool_name},
        "runtime": runtime_name,
        "image": image,
        "securityLevel": spec.security_level,
        "resources": spec.resources.wire(),
        "preloadScripts": [p.wire() for p in spec.preload_scripts],
        # Only when set, so the WarmPods of pools without env are what they were before env existed.
        **({"env": [e.wire() for e in spec.env]} if spec.env else {}),
        **({"envFrom": [e.wire() for e in spec.env_from]} if spec.env_from else {}),
        **({} if user_namespaces else {"userNamespaces": False}),
    }


def _matches(observed_spec: Mapping[str, Any], template: Mapping[str, Any]) -> bool:
    try:
        have = WarmPodSpec.model_validate(dict(observed_spec)).wire()
    except Exception:  # an unreadable spec is outdated by definition
        return False
    have.pop("assignment", None)
    return have == WarmPodSpec.model_validate(dict(template)).wire()


class _TemplateCheck:
    """_matches against one template, with the template validated once per sync and a shortcut
    for the common case: an observed spec (without assignment) that already equals the template's
    canonical form would validate to itself, so _matches would say True."""

    def __init__(self, template: Mapping[str, Any]) -> None:
        self.template = template
        self.wire: Optional[dict[str, Any]] = None
        try:
            self.wire = validate_cached(WarmPodSpec, dict(template)).wire()
        except Exception:  # never with a template built from a valid pool: keep _matches' behaviour
            self.wire = None

    def matches(self, observed_spec: Mapping[str, Any]) -> bool:
        if self.wire is None:
            return _matches(observed_spec, self.template)
        if observed_spec.get("assignment") is None and len(observed_spec) - ("assignment" in observed_spec) == len(self.wire) \
                and all(k == "assignment" or self.wire.get(k, _MISSING) == v for k, v in observed_spec.items()):
            return True
        try:
            have = WarmPodSpec.model_validate(dict(observed_spec)).wire()
        except Exception:  # an unreadable spec is outdated by definition
            return False
        have.pop("assignment", None)
        return have == self.wire


_MISSING = object()


def _target(spec: WarmPoolSpec, assigned: int, demand: int) -> tuple[int, bool]:
    """Idle pods wanted, and whether maxSize cut that number. `demand`: compatible sandboxes
    waiting with no Ready pod left for them; they count as pods about to be assigned, so with no
    one waiting this is the original formula."""
    target = max(spec.min_size, demand)
    if spec.auto_scaling.enabled and assigned + demand:
        # ceil((assigned + demand) / (t / 100)) pods in total, in integers to stay exact.
        total = -(-(assigned + demand) * 100 // spec.auto_scaling.target_utilization)
        target = max(target, total - assigned)
    if spec.max_size and target > spec.max_size:
        return spec.max_size, True
    return target, False


def expiry_seconds(ttl: int, member: str) -> float:
    """The age at which an idle WarmPod of this name expires: between (100 - spread) % and 100 %
    of ttl, a deterministic point derived from the name, so pods created together (a pool's
    fill, a burst's refill) do not all expire in one sync."""
    fraction = int.from_bytes(hashlib.sha256(member.encode()).digest()[:8], "big") / 2**64
    return ttl * (1 - C.WARM_TTL_SPREAD_PERCENT / 100 * fraction)


def _surge(target: int) -> int:
    """Replacements of expired pods that may start at a time."""
    return max(1, -(-target * C.WARM_TTL_SURGE_PERCENT // 100))


def _status(sandbox: Mapping[str, Any]) -> Mapping[str, Any]:
    status = sandbox.get("status")
    return status if isinstance(status, MAPPING) else {}


def _still_used(sandbox: Optional[Mapping[str, Any]], pool_name: str) -> bool:
    """Whether an assigned WarmPod stays: its sandbox exists, is not deleting, did not decide
    against it (a cold start, or a warm pod of another pool) and did not end. Until the sandbox
    decides, the pod stays whatever the pool now thinks the sandbox chooses: the sandbox may take
    it in any sync, and only facts it wrote itself tell the pool it never will (a choice the pool
    computes can change with the offers while the sandbox already runs on the pod). A sandbox
    reported Failed while it runs on the warm pod (warmPodUsed true: e.g. an invalid spec edit)
    keeps it, as an invalid spec never deletes a sandbox's pod."""
    if sandbox is None or is_deleting(sandbox):
        return False
    status = _status(sandbox)
    used = status.get("warmPodUsed")
    if used is False or (used is True and status.get("warmPool") != pool_name):
        return False
    phase = status.get("phase")
    if phase == C.PHASE_TERMINATED or (phase == C.PHASE_FAILED and used is not True):
        return False
    if used is None and not warm.asks_for_warm_pod(sandbox):
        return False  # it no longer asks for a warm pod: it will not take one
    # A suspended sandbox releases its warm pod (it also writes warmPodUsed false; either suffices).
    return phase not in _SUSPENDED


def _holders(live: list[Member], sandboxes: Mapping[str, Mapping[str, Any]], pool_name: str) -> dict[str, list[Member]]:
    """Sandbox UID -> the assigned WarmPods its sandbox still uses (see _still_used)."""
    holders: dict[str, list[Member]] = {}
    for m in live:
        if m.assigned and m.sandbox_uid and _still_used(sandboxes.get(m.sandbox_uid), pool_name):
            holders.setdefault(m.sandbox_uid, []).append(m)
    return holders


def _the_adopted(held: list[Member], sandbox: Mapping[str, Any]) -> list[Member]:
    """The WarmPods kept for one sandbox. Two can only happen after a stale cache. Once the
    sandbox runs on one, keep the one it reports (else the one hooks/warm.py would pick, first by
    name); before it decides keep them all, since it may be taking any of them (the pool keeps
    what the sandbox could be running on, never guesses)."""
    status = _status(sandbox)
    if status.get("warmPodUsed") is not True:
        return sorted(held, key=lambda m: m.name)
    ref = status.get("warmPodRef")
    for m in held:
        if isinstance(ref, MAPPING) and ref.get("name") == m.name:
            return [m]
    return sorted(held, key=lambda m: m.name)[:1]


def _undecided(sandbox: Mapping[str, Any]) -> bool:
    """A sandbox that may still take a warm pod: no warmPodUsed yet, not deleting, not ended or
    suspended."""
    status = _status(sandbox)
    return (
        "warmPodUsed" not in status
        and not is_deleting(sandbox)
        and status.get("phase") not in _ENDED + _SUSPENDED
        # Asked to suspend: never bind a pod it would release at once (its status may lag).
        and not (isinstance(sandbox.get("spec"), Mapping) and sandbox["spec"].get("operatingMode") == C.OPERATING_MODE_SUSPENDED)
    )


def _incompatible(sandbox: Mapping[str, Any], offer: warm.Offer, runtimes: list[dict[str, Any]], config: Config) -> Optional[str]:
    """Why this pool's pods cannot serve the sandbox now (its status may predate an edit of
    either side), or None. Without the sandbox's profile (not a related object of the pool) only
    what the sandbox itself says is checked; it checked the rest when it chose the pool."""
    try:
        spec: SandboxSpec = parse_spec(SandboxSpec, dict(sandbox))
        runtime_name, runtime = resolve_runtime(spec.runtime, runtimes)
        if spec.profile_ref is None:
            return warm.pool_shape_fits(offer, merge(spec, runtime_name, runtime, None, config.retain_storage_class))
    except SpecError as exc:
        return f"invalid spec: {exc}"
    except ResolutionError as exc:
        return exc.message
    if runtime_name != offer.runtime:
        return f"runtime {runtime_name!r} is not the pool's"
    if spec.security_level is not None and spec.security_level != offer.spec.security_level:
        return f"security level {spec.security_level!r} is not the pool's"
    if spec.storage.persistent or spec.resources.cpu_pinning:
        return "persistent storage and CPU pinning always start cold"
    return warm.timeout_fits(spec.timeout) or warm.env_fits(offer, warm.env_digest(spec.env or (), spec.env_from or ()))


def _incompatible_cached(verdicts: dict[bytes, Optional[str]], sandbox: Mapping[str, Any], offer: warm.Offer,
                         runtimes: list[dict[str, Any]], config: Config) -> Optional[str]:
    """_incompatible depends on the sandbox only through its spec: compute it once per distinct
    spec (same JSON, same key order) in one sync."""
    try:
        key = orjson.dumps(sandbox.get("spec"))
    except TypeError:  # not JSON (never from Metacontroller): no caching
        return _incompatible(sandbox, offer, runtimes, config)
    if key not in verdicts:
        verdicts[key] = _incompatible(sandbox, offer, runtimes, config)
    return verdicts[key]


def _ready(available: int, pending: int, min_size: int, unserved: list[str]) -> Condition:
    text = f"{available} warm pod(s) ready, {pending} starting, minSize {min_size}"
    if unserved:
        text += "; not served: " + ", ".join(unserved)
    if available >= min_size:
        return Condition("Ready", "True", "PoolReady", text)
    return Condition("Ready", "False", "Filling", text)


def _offer(offer: warm.Offer, ns: str) -> dict[str, Any]:
    """The pool's WarmPoolOffer child: named like the pool, changed only when what it offers does."""
    labels = {C.LABEL_APP: C.APP_NAME, C.LABEL_COMPONENT: C.COMPONENT_WARMPOOL_OFFER, C.LABEL_MANAGED_BY: C.MANAGED_BY,
              C.LABEL_WARMPOOL: label_value(offer.pool)}
    return {
        "apiVersion": C.API_VERSION,
        "kind": C.KIND_WARMPOOL_OFFER,
        "metadata": {"name": offer.pool, "namespace": ns, "labels": dict(sorted(labels.items()))},
        "spec": offer.spec.wire(),
    }


def _warm_pod(child_name: str, pool_name: str, ns: str, spec: dict[str, Any], assignment: Any) -> dict[str, Any]:
    labels = {
        C.LABEL_APP: C.APP_NAME,
        C.LABEL_COMPONENT: C.COMPONENT_WARMPOD,
        C.LABEL_MANAGED_BY: C.MANAGED_BY,
        C.LABEL_WARMPOOL: label_value(pool_name),
    }
    if isinstance(assignment, MAPPING):
        # The sandbox's customize hook selects WarmPods by this label: without it, no adoption.
        labels[C.LABEL_SANDBOX_UID] = label_value(str(assignment.get("sandboxUid", "")))
        labels[C.LABEL_SANDBOX_ID] = label_value(str(assignment.get("sandboxName", "")))
    return {
        "apiVersion": C.API_VERSION,
        "kind": C.KIND_WARMPOD,
        "metadata": {"name": child_name, "namespace": ns, "labels": dict(sorted(labels.items()))},
        "spec": spec,
    }


# ---------------------------------------------------------------------------------------------
# Unusable spec: keep idle WarmPods and the ones sandboxes run on, assign nothing, report why


def _counts(members: list[Member]) -> dict[str, int]:
    live = [m for m in members if not m.deleting]
    return {
        "availablePods": sum(1 for m in live if not m.assigned and m.phase == PHASE_READY),
        "pendingPods": sum(1 for m in live if not m.assigned and m.phase != PHASE_READY),
        "assignedPods": sum(1 for m in live if m.assigned),
    }


def _unusable(req: SyncRequest, live: list[Member], kept_assigned: list[Member], reason: str, message: str, waiting: bool,
              now: datetime) -> dict[str, Any]:
    """No offer (it is left out, so deleted): no sandbox chooses this pool meanwhile. Idle pods
    and pods sandboxes run on are kept as they are (nothing is created, replaced or assigned);
    pods released by their sandbox (deleting, gone, ended, cold) are dropped as by a usable pool,
    since a sandbox's deletion waits for its warm pod and must not wait for the pool's repair."""
    parent, previous = req.parent, req.previous_status
    kept = [m for m in live if not m.assigned] + kept_assigned
    status: dict[str, Any] = _counts(kept)
    stamp = parse_time(previous.get("lastScaleTime"))
    if stamp:
        status["lastScaleTime"] = fmt_time(stamp)
    conditions = [
        Condition("Validated", "Unknown" if waiting else "False", reason, message),
        Condition("Ready", "False", reason, "the pool cannot create or assign warm pods (see the Validated condition); "
                  "idle ones and the ones sandboxes run on are kept, released ones are deleted"),
    ]
    desired = [as_desired(m.obj) for m in sorted(kept, key=lambda m: m.name)]
    return composite_response(parent, previous, now, status, conditions, desired, None)


# ---------------------------------------------------------------------------------------------
# Finalize


def finalize(request: Mapping[str, Any], now: datetime, config: Config = DEFAULT_CONFIG) -> dict[str, Any]:
    """A deleted pool drops every WarmPod (sandboxes running on one fall back to a cold start)
    and is finalized once none is observed."""
    return _finalize(SyncRequest.of(request), now)


def _finalize(req: SyncRequest, now: datetime) -> dict[str, Any]:
    parent, previous = req.parent, req.previous_status
    members = [_member(o) for o in req.children_of(C.GVK_WARMPOD)]
    status: dict[str, Any] = _counts(members)
    stamp = parse_time(previous.get("lastScaleTime"))
    if stamp:
        status["lastScaleTime"] = fmt_time(stamp)
    if members:
        cond = Condition("Ready", "False", "Deleting", f"waiting for {len(members)} warm pod(s) to be deleted")
        return finalize_response(parent, previous, now, status, cond, [], False)
    cond = Condition("Ready", "False", "Deleted", "every warm pod is gone")
    return finalize_response(parent, previous, now, status, cond, [], True)


# ---------------------------------------------------------------------------------------------


