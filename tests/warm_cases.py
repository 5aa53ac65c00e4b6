"""Representative WarmPool and WarmPod hook requests, shared by the golden, schema and table tests.

Each case is a function returning a request; POOL_CASES / WARMPOD_CASES map a case name (the
golden file's name) to (builder, hook)."""
from __future__ import annotations

from typing import Any, Callable

from hooks import constants as C
from hooks import warmpod_sync, warmpool_sync
from tests.factory import NOW, runtime, sandbox
from tests.warm_factory import (
    RTE, ago, observed_child, own_offer, pool, pool_request, ready_pod_status, waiting_sandbox, warm_pod, warmpod_parent,
    warmpod_request,
)

AUTOSCALE = {"enabled": True, "targetUtilization": 50, "scaleDownDelay": 300}


def running_warm(name: str, pod: str = "python-0", pool_name: str = "python") -> dict[str, Any]:
    """A sandbox running on a warm pod of `pool_name`."""
    return sandbox(name, spec={"runtime": "python-3.11"}, annotations={C.ANNOTATION_USE_WARM_POD: "true"},
                   status={"phase": C.PHASE_RUNNING, "warmPool": pool_name, "warmPodUsed": True,
                           "warmPodRef": {"name": pod, "namespace": "demo"}})


# ---------------------------------------------------------------------------------------------
# WarmPool


def empty() -> dict[str, Any]:
    return pool_request(pool(minSize=2))


def refill() -> dict[str, Any]:
    p = pool(minSize=2)
    return pool_request(p, [warm_pod(p, 0)])


def steady() -> dict[str, Any]:
    p = pool(minSize=2, status={"lastScaleTime": ago(3600)})
    return pool_request(p, [warm_pod(p, 0), warm_pod(p, 1, created="2026-11-22T11:01:00Z")])


def _busy(p: dict[str, Any], assigned: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    sandboxes = [running_warm(f"busy-{i}", pod=warmpool_sync.member_name(p["metadata"]["name"], i)) for i in range(assigned)]
    pods = [warm_pod(p, i, phase="Assigned", assigned_to=s) for i, s in enumerate(sandboxes)]
    return pods, sandboxes


def autoscale_up() -> dict[str, Any]:
    """4 assigned + 1 idle = 80 % > 50 %: wants ceil(4 / 0.5) = 8 pods, so 4 idle: 3 more."""
    p = pool(minSize=1, autoScaling=AUTOSCALE, status={"lastScaleTime": ago(3600)})
    pods, sandboxes = _busy(p, 4)
    return pool_request(p, pods + [warm_pod(p, 4)], related=[RTE, *sandboxes])


def at_max() -> dict[str, Any]:
    """Same demand, maxSize 3: idle pods capped at 3 (ScalingLimited)."""
    p = pool(minSize=1, maxSize=3, autoScaling=AUTOSCALE, status={"lastScaleTime": ago(3600)})
    pods, sandboxes = _busy(p, 4)
    return pool_request(p, pods + [warm_pod(p, 4)], related=[RTE, *sandboxes])


def _quiet_pool(last_scale_ago: float, **spec: Any) -> dict[str, Any]:
    p = pool(**{"minSize": 1, "autoScaling": AUTOSCALE, **spec}, status={"lastScaleTime": ago(last_scale_ago)})
    pods = [warm_pod(p, 0, created="2026-11-22T11:00:00Z"), warm_pod(p, 1, created="2026-11-22T10:30:00Z"),
            warm_pod(p, 2, created="2026-11-22T11:30:00Z"), warm_pod(p, 3, phase="Pending", created="2026-11-22T11:59:00Z")]
    return pool_request(p, pods)


def scale_down_waiting() -> dict[str, Any]:
    """4 idle, 0 assigned, minSize 1: 3 too many, but the last scale was 100 s ago (delay 300)."""
    return _quiet_pool(100)


def scale_down_due() -> dict[str, Any]:
    """Delay passed: the pending pod goes first, then the two oldest available ones."""
    return _quiet_pool(400)


def over_max() -> dict[str, Any]:
    """maxSize lowered to 2 under 4 idle pods: the excess over maxSize goes at once, the delay
    only guards the shrink towards minSize."""
    return _quiet_pool(100, maxSize=2)


def ttl_expired() -> dict[str, Any]:
    """ttl 600: python-0 (700 s old) is recycled; python-1 (100 s) stays and sets the next resync."""
    p = pool(minSize=2, ttl=600, status={"lastScaleTime": ago(3600)})
    return pool_request(p, [warm_pod(p, 0, created=ago(700)), warm_pod(p, 1, created=ago(100))])


def assign_oldest_first() -> dict[str, Any]:
    """Three waiting sandboxes, two Ready pods: the two oldest sandboxes get the two oldest pods,
    the third keeps waiting; the pool refills to minSize."""
    p = pool(minSize=2, status={"lastScaleTime": ago(3600)})
    pods = [warm_pod(p, 0, created="2026-11-22T11:00:00Z"), warm_pod(p, 1, created="2026-11-22T10:30:00Z"),
            warm_pod(p, 2, phase="Pending", created="2026-11-22T11:59:00Z")]
    sandboxes = [waiting_sandbox("zulu", created=ago(30)), waiting_sandbox("alpha", created=ago(20)),
                 waiting_sandbox("mike", created=ago(10))]
    return pool_request(p, pods, related=[RTE, *sandboxes])


def incompatible_sandbox() -> dict[str, Any]:
    """The older sandbox needs more CPU than the pool's pods have (its status predates an edit):
    not assigned; the younger, compatible one is."""
    p = pool(minSize=1, status={"lastScaleTime": ago(3600)})
    greedy = waiting_sandbox("greedy", created=ago(30), spec={"resources": {"cpu": "2"}})
    fine = waiting_sandbox("fine", created=ago(10))
    high = waiting_sandbox("strict", created=ago(20), spec={"securityLevel": "high"})
    return pool_request(p, [warm_pod(p, 0)], related=[RTE, greedy, fine, high])


def sandbox_deleted() -> dict[str, Any]:
    """python-0 served a sandbox that is gone: dropped (never reused), and its name is not reused
    while it exists; the pool refills with python-2."""
    p = pool(minSize=2, status={"lastScaleTime": ago(3600)})
    gone = running_warm("gone")
    return pool_request(p, [warm_pod(p, 0, phase="Assigned", assigned_to=gone), warm_pod(p, 1, phase="Pending")])


def sandbox_deleting_and_terminating() -> dict[str, Any]:
    """python-0 (served a sandbox being deleted) is dropped; python-1 is already terminating and
    keeps its name reserved; python-2 is new."""
    p = pool(minSize=2, status={"lastScaleTime": ago(3600)})
    leaving = sandbox("leaving", deleting=True, status={"phase": C.PHASE_TERMINATING, "warmPool": "python", "warmPodUsed": True})
    other = running_warm("other", pod="python-1")
    return pool_request(p, [warm_pod(p, 0, phase="Assigned", assigned_to=leaving),
                            warm_pod(p, 1, phase="Assigned", assigned_to=other, deleting=True),
                            warm_pod(p, 3, phase="Ready")], related=[RTE, leaving, other])


def cold_fallback() -> dict[str, Any]:
    """The pool bound python-0 after the sandbox had given up (warmPodUsed false): dropped."""
    p = pool(minSize=1, status={"lastScaleTime": ago(3600)})
    cold = sandbox("cold", status={"phase": C.PHASE_RUNNING, "warmPool": "python", "warmPodUsed": False})
    return pool_request(p, [warm_pod(p, 0, phase="Assigned", assigned_to=cold), warm_pod(p, 1)], related=[RTE, cold])


def running_keeps_pod() -> dict[str, Any]:
    """A sandbox running on python-0 keeps it, also when an invalid edit made it Failed."""
    p = pool(minSize=1, status={"lastScaleTime": ago(3600)})
    running = running_warm("running")
    broken = running_warm("broken", pod="python-1")
    broken["status"]["phase"] = C.PHASE_FAILED
    return pool_request(p, [warm_pod(p, 0, phase="Assigned", assigned_to=running),
                            warm_pod(p, 1, phase="Assigned", assigned_to=broken), warm_pod(p, 2)],
                        related=[RTE, running, broken])


def duplicate_assignment() -> dict[str, Any]:
    """After a stale cache two WarmPods are bound to one sandbox: the one it adopted stays."""
    p = pool(minSize=1, status={"lastScaleTime": ago(3600)})
    s = running_warm("twice", pod="python-1")
    return pool_request(p, [warm_pod(p, 0, phase="Assigned", assigned_to=s), warm_pod(p, 1, phase="Assigned", assigned_to=s),
                            warm_pod(p, 2)], related=[RTE, s])


def outdated_spec() -> dict[str, Any]:
    """The pool's resources changed: the idle pod of the old shape is replaced, the assigned one
    keeps its spec (a warm pod's spec never changes)."""
    p = pool(minSize=1, resources={"cpu": "1", "memory": "1Gi"}, status={"lastScaleTime": ago(3600)})
    s = running_warm("user")
    return pool_request(p, [warm_pod(p, 0, phase="Assigned", assigned_to=s), warm_pod(p, 1)], related=[RTE, s])


def invalid_with_children() -> dict[str, Any]:
    """minSize > maxSize: the idle WarmPod and the one a sandbox runs on are kept as they are;
    python-2, whose sandbox is gone, is released (a deletion never waits for a pool's repair)."""
    p = pool(minSize=5, maxSize=2, status={"lastScaleTime": ago(3600), "runtimeEnvironment": "python-3.11"})
    user = running_warm("user")
    return pool_request(p, [warm_pod(p, 0, phase="Assigned", assigned_to=user), warm_pod(p, 1),
                            warm_pod(p, 2, phase="Assigned", assigned_to=running_warm("gone", pod="python-2"))],
                        related=[RTE, user])


def runtime_missing() -> dict[str, Any]:
    p = pool(runtime="cobol:85", minSize=1)
    return pool_request(p, [warm_pod(p, 0)])


def runtime_not_validated() -> dict[str, Any]:
    p = pool(minSize=1)
    return pool_request(p, [], related=[runtime(available=None)])


def custom_level() -> dict[str, Any]:
    return pool_request(pool(minSize=1, securityLevel="custom"))


def long_name() -> dict[str, Any]:
    p = pool(name="a-very-long-warm-pool-name-that-goes-on.and-on-with-dots-and-more-words", minSize=2)
    return pool_request(p, [warm_pod(p, 0)])


def preload_and_high() -> dict[str, Any]:
    return pool_request(pool(minSize=1, securityLevel="high",
                             preloadScripts=[{"name": "import-numpy", "script": "python -c 'import numpy'"}]))


POOL_ENV = [{"name": "MODE", "value": "analysis"}, {"name": "OPENAI_API_KEY", "valueFrom": {"secretKeyRef": {"name": "llm-keys", "key": "openai"}}}]


def environment() -> dict[str, Any]:
    """A pool declaring env: its warm pods carry it, its offer only a digest of it; of two waiting
    sandboxes only the one declaring the same env is served."""
    p = pool(minSize=1, env=POOL_ENV, status={"lastScaleTime": ago(3600)})
    same = waiting_sandbox("same", created=ago(20), spec={"env": POOL_ENV})
    bare = waiting_sandbox("bare", created=ago(30))
    return pool_request(p, [warm_pod(p, 0, spec_overrides={"env": POOL_ENV})], related=[RTE, same, bare])


def new_sandbox(name: str, created: str = "2026-11-22T11:59:59Z", spec: dict[str, Any] | None = None) -> dict[str, Any]:
    """A sandbox asking for a warm pod as the pool first sees it: just created, no status yet."""
    return sandbox(name, spec={"runtime": "python-3.11", **(spec or {})}, created=created,
                   annotations={C.ANNOTATION_USE_WARM_POD: "true"})


def assign_on_sight() -> dict[str, Any]:
    """A new sandbox, before its own hook wrote anything: the pool computes its choice (this pool,
    the only offer) from its spec and annotation and assigns at once."""
    p = pool(minSize=1, status={"lastScaleTime": ago(3600)})
    return pool_request(p, [warm_pod(p, 0)], related=[RTE, new_sandbox("eager")])


def another_pool_first() -> dict[str, Any]:
    """Pool alpha sorts first and fits too: a sandbox asking only for some warm pod chooses alpha,
    so this pool leaves it (and counts no demand for it); the one naming this pool is served."""
    p = pool(minSize=1, status={"lastScaleTime": ago(3600)})
    offers = own_offer(pool("alpha", minSize=1)) + own_offer(p)
    anyone = new_sandbox("anyone", created=ago(20))
    mine = new_sandbox("mine", created=ago(10), spec={"warmPoolRef": {"name": "python"}})
    return pool_request(p, [warm_pod(p, 0)], related=[RTE, anyone, mine], offers=offers)


def views_differ() -> dict[str, Any]:
    """The sandbox's status says it chose alpha, the pool's view of the offers says python: no
    assignment until the views agree (the sandbox would not take the pod now)."""
    p = pool(minSize=1, status={"lastScaleTime": ago(3600)})
    other = waiting_sandbox("elsewhere", pool_name="alpha")
    return pool_request(p, [warm_pod(p, 0)], related=[RTE, other])


def undecided_keeps_its_pod() -> dict[str, Any]:
    """python-0 was bound to a sandbox that has not decided yet; since then pool alpha appeared and
    sorts first. The pod stays bound: the sandbox may be taking it right now, and only what the
    sandbox writes (warmPodUsed) releases it."""
    p = pool(minSize=1, status={"lastScaleTime": ago(3600)})
    s = new_sandbox("undecided", created=ago(5))
    offers = own_offer(pool("alpha", minSize=1)) + own_offer(p)
    return pool_request(p, [warm_pod(p, 0, assigned_to=s), warm_pod(p, 1)], related=[RTE, s], offers=offers)


def profile_waits_for_its_choice() -> dict[str, Any]:
    """A sandbox with a profile is served once its status names the pool (profiles are not related
    objects of the pool, so only the sandbox can compute its choice); a new one is not yet."""
    p = pool(minSize=2, status={"lastScaleTime": ago(3600)})
    fresh = new_sandbox("fresh", created=ago(20), spec={"profileRef": {"name": "data-science"}})
    chose = waiting_sandbox("chose", created=ago(10), spec={"profileRef": {"name": "data-science"}})
    return pool_request(p, [warm_pod(p, 0), warm_pod(p, 1)], related=[RTE, fresh, chose])


def finalize_waiting() -> dict[str, Any]:
    p = pool(minSize=1, deleting=True, status={"lastScaleTime": ago(3600)})
    return pool_request(p, [warm_pod(p, 0), warm_pod(p, 1, phase="Assigned", assigned_to=running_warm("user", pod="python-1"))],
                        finalizing=True)


def finalize_done() -> dict[str, Any]:
    return pool_request(pool(minSize=1, deleting=True), [], finalizing=True)


POOL_SYNC = [
    empty, refill, steady, autoscale_up, at_max, scale_down_waiting, scale_down_due, over_max, ttl_expired,
    assign_oldest_first, incompatible_sandbox, sandbox_deleted, sandbox_deleting_and_terminating, cold_fallback,
    running_keeps_pod, duplicate_assignment, outdated_spec, invalid_with_children, runtime_missing,
    runtime_not_validated, custom_level, long_name, preload_and_high, environment, assign_on_sight, another_pool_first,
    views_differ, undecided_keeps_its_pod, profile_waits_for_its_choice,
]
POOL_FINALIZE = [finalize_waiting, finalize_done]


def _case_name(fn: Callable[..., Any]) -> str:
    return fn.__name__.replace("_", "-")


Case = tuple[Callable[[], dict[str, Any]], Callable[..., dict[str, Any]]]
POOL_CASES: dict[str, Case] = {
    **{_case_name(f): (f, warmpool_sync.sync) for f in POOL_SYNC},
    **{_case_name(f): (f, warmpool_sync.finalize) for f in POOL_FINALIZE},
}


# ---------------------------------------------------------------------------------------------
# WarmPod


def _first_pod(parent: dict[str, Any]) -> dict[str, Any]:
    """The Pod the WarmPod hook emits for `parent` (alive) with no children observed."""
    alive = {**parent, "metadata": {k: v for k, v in parent["metadata"].items() if k != "deletionTimestamp"}}
    out = warmpod_sync.sync(warmpod_request(alive), NOW)
    return next(c for c in out["children"] if c["kind"] == "Pod")


def _policy(parent: dict[str, Any]) -> dict[str, Any]:
    alive = {**parent, "metadata": {k: v for k, v in parent["metadata"].items() if k != "deletionTimestamp"}}
    out = warmpod_sync.sync(warmpod_request(alive), NOW)
    return next(c for c in out["children"] if c["kind"] == "NetworkPolicy")


def _with_pod(parent: dict[str, Any], labels_from: dict[str, Any] | None = None, **pod_status: Any) -> dict[str, Any]:
    """A request where the pod exists, with the labels the hook gave it for `labels_from` (e.g.
    the unassigned WarmPod, before the relabel) and the given pod status."""
    source = labels_from or parent
    pod = observed_child(_first_pod(parent), parent, labels=_first_pod(source)["metadata"]["labels"], **pod_status)
    return warmpod_request(parent, [pod, observed_child(_policy(parent), parent)])


SANDBOX = sandbox("user")
OTHER = sandbox("someone-else")


def wpod_new() -> dict[str, Any]:
    return warmpod_request(warmpod_parent())


def wpod_starting() -> dict[str, Any]:
    return _with_pod(warmpod_parent(), **{"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]})


def wpod_ready() -> dict[str, Any]:
    return _with_pod(warmpod_parent(), **ready_pod_status())


def wpod_relabel() -> dict[str, Any]:
    """Just assigned: the pod still has the idle labels, its serving selector among them, so it
    serves at once; the hook adds the sandbox's identity (for what identifies pods by it)."""
    return _with_pod(warmpod_parent(assigned_to=SANDBOX), labels_from=warmpod_parent(), **ready_pod_status())


def wpod_relabel_old_pod() -> dict[str, Any]:
    """Just assigned, and the pod was made before the warmpod-uid label existed: it gets that label
    and the sandbox's identity in one in-place update, and is Assigned once it carries either."""
    request = _with_pod(warmpod_parent(assigned_to=SANDBOX), labels_from=warmpod_parent(), **ready_pod_status())
    for pod in request["children"][C.GVK_POD].values():
        pod["metadata"]["labels"].pop(C.LABEL_WARMPOD_UID)
    return request


def wpod_assigned() -> dict[str, Any]:
    return _with_pod(warmpod_parent(assigned_to=SANDBOX), **ready_pod_status())


def wpod_label_conflict() -> dict[str, Any]:
    """The pod carries another sandbox's UID (cannot happen through the pool): never relabelled."""
    return _with_pod(warmpod_parent(assigned_to=SANDBOX), labels_from=warmpod_parent(assigned_to=OTHER), **ready_pod_status())


def wpod_pod_failed() -> dict[str, Any]:
    return _with_pod(warmpod_parent(), phase="Failed", message="evicted")


def wpod_preload_high() -> dict[str, Any]:
    return warmpod_request(warmpod_parent(spec_overrides={
        "securityLevel": "high",
        "preloadScripts": [{"name": "import-numpy", "script": "python -c 'import numpy'"},
                           {"name": "compile", "script": "python -m compileall -q /opt/app"}],
    }))


def wpod_long_name() -> dict[str, Any]:
    return warmpod_request(warmpod_parent(pool_name="a-very-long-warm-pool-name-that-goes-on-and-on-with-more-words-x"))


def wpod_invalid_spec() -> dict[str, Any]:
    parent = warmpod_parent()
    request = _with_pod(parent, **ready_pod_status())
    del request["parent"]["spec"]["image"]
    return request


def wpod_finalize_pod() -> dict[str, Any]:
    request = _with_pod(warmpod_parent(assigned_to=SANDBOX, deleting=True), **ready_pod_status())
    request["finalizing"] = True
    return request


def wpod_finalize_policy() -> dict[str, Any]:
    """The pod is gone; its default-deny policy is still observed."""
    parent = warmpod_parent(deleting=True)
    return warmpod_request(parent, [observed_child(_policy(parent), parent)], finalizing=True)


def wpod_finalize_done() -> dict[str, Any]:
    return warmpod_request(warmpod_parent(deleting=True), [], finalizing=True)


def wpod_environment() -> dict[str, Any]:
    return warmpod_request(warmpod_parent(spec_overrides={"env": POOL_ENV, "envFrom": [{"secretRef": {"name": "agent-config"}}]}))


WARMPOD_SYNC = [wpod_environment, wpod_new, wpod_starting, wpod_ready, wpod_relabel, wpod_relabel_old_pod, wpod_assigned,
                wpod_label_conflict, wpod_pod_failed, wpod_preload_high, wpod_long_name, wpod_invalid_spec]
WARMPOD_FINALIZE = [wpod_finalize_pod, wpod_finalize_policy, wpod_finalize_done]
WARMPOD_CASES: dict[str, Case] = {
    **{_case_name(f).removeprefix("wpod-"): (f, warmpod_sync.sync) for f in WARMPOD_SYNC},
    **{_case_name(f).removeprefix("wpod-"): (f, warmpod_sync.finalize) for f in WARMPOD_FINALIZE},
}
