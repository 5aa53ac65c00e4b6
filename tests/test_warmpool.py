"""WarmPool hook: golden desired state, schema checks of every child and status, and table tests
of sizing, TTL, assignment and release rules."""
from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest

from hooks import constants as C
from hooks.server import jsonio
from hooks import warmpool_sync
from hooks.meta import fmt_time
from tests import warm_cases as cases
from tests.crdutil import assert_status_fits, validate_cr
from tests.factory import NOW
from tests.golden import check_golden
from tests.warm_factory import RTE, ago, pool, pool_request, waiting_sandbox, warm_pod

CASES = cases.POOL_CASES


def run(case: str) -> dict[str, Any]:
    build, hook = CASES[case]
    return hook(build(), NOW)


def pods(response: dict[str, Any]) -> list[dict[str, Any]]:
    """The WarmPods among the children (the pool's offer is the other one)."""
    return [c for c in response["children"] if c["kind"] == C.KIND_WARMPOD]


def offers(response: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in response["children"] if c["kind"] == C.KIND_WARMPOOL_OFFER]


def names(response: dict[str, Any]) -> list[str]:
    return [c["metadata"]["name"] for c in pods(response)]


def assignments(response: dict[str, Any]) -> dict[str, str]:
    return {c["metadata"]["name"]: c["spec"]["assignment"]["sandboxName"]
            for c in pods(response) if "assignment" in c["spec"]}


def cond(response: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in response["status"]["conditions"] if c["type"] == type_)


def observed_names(request: dict[str, Any]) -> set[str]:
    return {o["metadata"]["name"] for o in request["children"][C.GVK_WARMPOD].values()}


# ---------------------------------------------------------------------------------------------
# Every case


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    build, hook = CASES[case]
    request = build()
    check_golden(f"warmpool/{case}.json", request, hook(request, NOW))


@pytest.mark.parametrize("case", sorted(CASES))
def test_children_and_status_fit_the_crds(case: str) -> None:
    build, hook = CASES[case]
    request = build()
    out = hook(request, NOW)
    observed = {o["metadata"]["name"]: o for o in request["children"][C.GVK_WARMPOD].values()}
    for offer in offers(out):
        validate_cr(offer)
        assert offer["metadata"]["name"] == request["parent"]["metadata"]["name"]
    for child in pods(out):
        assert child["metadata"]["namespace"] == "demo"
        assert len(child["metadata"]["name"]) <= C.MAX_DNS_LABEL
        old = observed.get(child["metadata"]["name"])
        # `old` given: the CRD's transition rule (assignment immutable) is checked as well.
        validate_cr(child, old=old)
        if old is not None and "assignment" in old["spec"]:
            assert child["spec"]["assignment"] == old["spec"]["assignment"]
    assert_status_fits(C.KIND_WARMPOOL, out["status"])


@pytest.mark.parametrize("case", sorted(CASES))
def test_deterministic(case: str) -> None:
    build, hook = CASES[case]
    assert jsonio.dumps(hook(build(), NOW)) == jsonio.dumps(hook(build(), NOW))


@pytest.mark.parametrize("case", sorted(CASES))
def test_assigned_pods_carry_the_sandbox_identity(case: str) -> None:
    """The sandbox's customize hook selects WarmPods by LABEL_SANDBOX_UID: without it, no adoption."""
    for child in pods(run(case)):
        labels = child["metadata"]["labels"]
        assert labels[C.LABEL_APP] == C.APP_NAME and labels[C.LABEL_COMPONENT] == C.COMPONENT_WARMPOD
        if "assignment" in child["spec"]:
            assert labels[C.LABEL_SANDBOX_UID] == child["spec"]["assignment"]["sandboxUid"]
            assert labels[C.LABEL_SANDBOX_ID] == child["spec"]["assignment"]["sandboxName"]
        else:
            assert C.LABEL_SANDBOX_UID not in labels


# ---------------------------------------------------------------------------------------------
# Sizing


def test_a_usable_pool_offers_what_its_pods_are() -> None:
    # Sandboxes choose a pool by its offer, never by the pool itself, whose status changes with
    # every assignment (every change of a related object syncs every sandbox that relates to it).
    out = run("empty")
    (offer,) = offers(out)
    template = pods(out)[0]["spec"]
    assert offer["metadata"]["name"] == "python" and offer["spec"] == {
        "poolRef": {"name": "python"}, "runtime": template["runtime"], "securityLevel": template["securityLevel"],
        "resources": template["resources"]}
    assert offer["metadata"]["labels"][C.LABEL_WARMPOOL] == "python"
    steady = cases.steady()
    assert offers(warmpool_sync.sync(steady, NOW)) == [offer], "what the pool offers does not change with its pods"


def test_empty_pool_fills_to_min_size() -> None:
    out = run("empty")
    assert names(out) == ["python-0", "python-1"]
    assert out["status"]["pendingPods"] == 2 and out["status"]["lastScaleTime"] == fmt_time(NOW)
    assert out["status"]["runtimeEnvironment"] == "python-3.11"
    assert pods(out)[0]["spec"]["runtime"] == "python-3.11"  # the resolved name, not python:3.11
    assert cond(out, "Ready")["status"] == "False"


def test_refill_uses_the_smallest_free_name() -> None:
    assert names(run("refill")) == ["python-0", "python-1"]


def test_steady_pool_changes_nothing() -> None:
    request = cases.steady()
    out = warmpool_sync.sync(request, NOW)
    assert names(out) == ["python-0", "python-1"]
    assert out["status"]["lastScaleTime"] == request["parent"]["status"]["lastScaleTime"]
    assert "resyncAfterSeconds" not in out


def test_autoscale_up_to_target_utilisation() -> None:
    out = run("autoscale-up")
    # 4 assigned, target 50 %: 8 in total, so 4 idle: the one there plus 3 new.
    assert out["status"]["assignedPods"] == 4
    assert out["status"]["availablePods"] + out["status"]["pendingPods"] == 4
    assert cond(out, "ScalingLimited")["status"] == "False"


def test_at_max_size_idle_pods_are_capped() -> None:
    out = run("at-max")
    assert out["status"]["availablePods"] + out["status"]["pendingPods"] == 3
    assert cond(out, "ScalingLimited")["reason"] == "MaxSizeReached"


def test_scale_down_waits_for_the_delay() -> None:
    request = cases.scale_down_waiting()
    out = warmpool_sync.sync(request, NOW)
    assert set(names(out)) == observed_names(request)
    assert out["resyncAfterSeconds"] == 200.0
    assert out["status"]["lastScaleTime"] == request["parent"]["status"]["lastScaleTime"]


def test_scale_down_after_the_delay_removes_pending_then_oldest() -> None:
    out = run("scale-down-due")
    # python-3 was pending; python-1 (10:30) and python-0 (11:00) are the oldest available.
    assert names(out) == ["python-2"]
    assert out["status"]["lastScaleTime"] == fmt_time(NOW)


def test_excess_over_max_size_goes_at_once() -> None:
    out = run("over-max")
    assert names(out) == ["python-0", "python-2"]
    # The shrink towards minSize waits a full delay from this scale event.
    assert out["resyncAfterSeconds"] == 300.0


def test_scale_down_never_below_min_size() -> None:
    request = cases.scale_down_due()
    request["parent"]["spec"]["minSize"] = 3
    out = warmpool_sync.sync(request, NOW)
    assert len(pods(out)) == 3 and "python-3" not in names(out)  # the pending one goes first


def test_ttl_replaces_an_expired_pod_before_removing_it() -> None:
    """python-0 expired: it stays available (and assignable) while its replacement starts, so the
    pool never has fewer than minSize ready pods because of its own TTL; not a scale event."""
    request = cases.ttl_expired()
    out = warmpool_sync.sync(request, NOW)
    assert names(out) == ["python-0", "python-1", "python-2"]
    assert (out["status"]["availablePods"], out["status"]["pendingPods"]) == (2, 1)
    assert cond(out, "Ready")["status"] == "True"
    assert out["status"]["lastScaleTime"] == request["parent"]["status"]["lastScaleTime"]
    # The replacement is Ready: now the expired pod goes.
    p = request["parent"]
    later = pool_request(p, [*request["children"][C.GVK_WARMPOD].values(), warm_pod(p, 2, created=ago(5))])
    again = warmpool_sync.sync(later, NOW)
    assert names(again) == ["python-1", "python-2"]
    assert again["status"]["lastScaleTime"] == request["parent"]["status"]["lastScaleTime"]


def test_ttl_replacement_surge_is_bounded() -> None:
    """Eight pods expired at once: they all keep serving, and replacements start a quarter of
    minSize at a time (at least one)."""
    p = pool(minSize=8, ttl=600, status={"lastScaleTime": ago(3600)})
    out = warmpool_sync.sync(pool_request(p, [warm_pod(p, k, created=ago(900)) for k in range(8)]), NOW)
    assert (out["status"]["availablePods"], out["status"]["pendingPods"]) == (8, 2)
    assert len(names(out)) == 10
    # With two replacements still starting, no more are started.
    starting = [warm_pod(p, k, phase="Pending", created=ago(5)) for k in (8, 9)]
    again = warmpool_sync.sync(pool_request(p, [*(warm_pod(p, k, created=ago(900)) for k in range(8)), *starting]), NOW)
    assert len(names(again)) == 10
    # One replacement Ready: one expired pod goes (the oldest), one more replacement starts.
    ready = [warm_pod(p, 8, created=ago(5)), warm_pod(p, 9, phase="Pending", created=ago(5))]
    third = warmpool_sync.sync(pool_request(p, [*(warm_pod(p, k, created=ago(900 + k)) for k in range(8)), *ready]), NOW)
    assert "python-7" not in names(third) and (third["status"]["availablePods"], third["status"]["pendingPods"]) == (8, 2)


def test_ttl_expiry_is_spread_per_pod() -> None:
    """Pods created together do not expire together: each expires at a point derived from its
    name, between 80 % and 100 % of the ttl."""
    expiries = [warmpool_sync.expiry_seconds(1000, warmpool_sync.member_name("python", k)) for k in range(10)]
    assert all(800 <= e <= 1000 for e in expiries)
    assert len(set(expiries)) == 10 and max(expiries) - min(expiries) > 100
    assert expiries == [warmpool_sync.expiry_seconds(1000, warmpool_sync.member_name("python", k)) for k in range(10)]


def test_ttl_never_recycles_assigned_pods() -> None:
    p = pool(minSize=1, ttl=60, status={"lastScaleTime": "2026-11-22T11:00:00Z"})
    user = cases.running_warm("user")
    out = warmpool_sync.sync(pool_request(p, [warm_pod(p, 0, phase="Assigned", assigned_to=user, created="2026-11-01T00:00:00Z")],
                                          related=[RTE, user]), NOW)
    assert assignments(out) == {"python-0": "user"}


# ---------------------------------------------------------------------------------------------
# Assignment and release


def test_min_size_zero_scales_from_zero_for_a_waiting_sandbox() -> None:
    p = pool(minSize=0, status={"lastScaleTime": ago(3600)})
    out = warmpool_sync.sync(pool_request(p, [], related=[RTE, waiting_sandbox("first")]), NOW)
    assert names(out) == ["python-0"] and out["status"]["lastScaleTime"] == fmt_time(NOW)
    # While it starts the sandbox keeps waiting and no second pod is made for it.
    again = warmpool_sync.sync(pool_request(p, [warm_pod(p, 0, phase="Pending")], related=[RTE, waiting_sandbox("first")]), NOW)
    assert names(again) == ["python-0"]
    # Ready: assigned; nothing idle is kept for minSize 0.
    served = warmpool_sync.sync(pool_request(p, [warm_pod(p, 0)], related=[RTE, waiting_sandbox("first")]), NOW)
    assert assignments(served) == {"python-0": "first"} and names(served) == ["python-0"]


def test_a_burst_is_served_in_parallel() -> None:
    """Five waiting sandboxes, one Ready pod: one is served now, the four others are demand: four
    pods start at once (the minimum of 1 is covered by them)."""
    p = pool(minSize=1, status={"lastScaleTime": ago(3600)})
    waiting = [waiting_sandbox(f"b-{i}", created=ago(10 - i)) for i in range(5)]
    out = warmpool_sync.sync(pool_request(p, [warm_pod(p, 0)], related=[RTE, *waiting]), NOW)
    assert assignments(out) == {"python-0": "b-0"}
    assert (out["status"]["assignedPods"], out["status"]["pendingPods"]) == (1, 4)


def test_demand_is_capped_by_max_size_and_ignores_incompatible_sandboxes() -> None:
    p = pool(minSize=0, maxSize=2, status={"lastScaleTime": ago(3600)})
    waiting = [waiting_sandbox(f"b-{i}", created=ago(10 - i)) for i in range(4)]
    greedy = waiting_sandbox("greedy", spec={"resources": {"cpu": "2"}})
    out = warmpool_sync.sync(pool_request(p, [], related=[RTE, *waiting, greedy]), NOW)
    assert out["status"]["pendingPods"] == 2 and cond(out, "ScalingLimited")["reason"] == "MaxSizeReached"
    only_greedy = warmpool_sync.sync(pool_request(p, [], related=[RTE, greedy]), NOW)
    assert names(only_greedy) == []


def test_autoscaling_counts_waiting_sandboxes_as_pods_about_to_be_used() -> None:
    """2 assigned, 2 waiting, target 50 %: once they are served 4 pods are in use, so the pool
    wants ceil(4 / 0.5) = 8 in all: 6 idle now (2 for the waiting sandboxes, 4 of headroom)."""
    p = pool(minSize=1, autoScaling=cases.AUTOSCALE, status={"lastScaleTime": ago(3600)})
    pods, busy = cases._busy(p, 2)
    waiting = [waiting_sandbox(f"w-{i}", created=ago(10 - i)) for i in range(2)]
    out = warmpool_sync.sync(pool_request(p, pods, related=[RTE, *busy, *waiting]), NOW)
    assert (out["status"]["assignedPods"], out["status"]["pendingPods"]) == (2, 6)


def test_assignment_pairs_oldest_sandboxes_with_oldest_pods() -> None:
    out = run("assign-oldest-first")
    assert assignments(out) == {"python-1": "zulu", "python-0": "alpha"}  # mike keeps waiting
    assert names(out) == ["python-0", "python-1", "python-2", "python-3"]  # refilled to minSize 2


def test_pending_pods_are_never_assigned() -> None:
    out = run("assign-oldest-first")
    assert "assignment" not in next(c for c in pods(out) if c["metadata"]["name"] == "python-2")["spec"]


def test_incompatible_sandbox_is_not_assigned() -> None:
    out = run("incompatible-sandbox")
    assert assignments(out) == {"python-0": "fine"}
    message = cond(out, "Ready")["message"]
    assert "greedy" in message and "strict" in message


def test_sandbox_with_a_profile_is_checked_on_what_it_says() -> None:
    p = pool(minSize=1, status={"lastScaleTime": "2026-11-22T11:00:00Z"})
    with_profile = waiting_sandbox("profiled", spec={"profileRef": {"name": "data-science"}})
    persistent = waiting_sandbox("persistent", spec={"profileRef": {"name": "data-science"}, "storage": {"persistent": True}},
                                 created="2026-11-22T11:59:40Z")
    out = warmpool_sync.sync(pool_request(p, [warm_pod(p, 0)], related=[RTE, with_profile, persistent]), NOW)
    assert assignments(out) == {"python-0": "profiled"}


def test_a_new_sandbox_is_served_on_sight() -> None:
    """The pool assigns from the sandbox's spec and annotation: no status.warmPool needed."""
    out = run("assign-on-sight")
    assert assignments(out) == {"python-0": "eager"}
    assert out["status"]["assignedPods"] == 1


def test_a_sandbox_that_chooses_another_pool_is_left_alone() -> None:
    out = run("another-pool-first")
    assert assignments(out) == {"python-0": "mine"}
    assert out["status"]["pendingPods"] == 1  # the refill to minSize only: "anyone" is no demand


def test_no_assignment_while_the_sandbox_says_it_chose_another_pool() -> None:
    out = run("views-differ")
    assert assignments(out) == {} and out["status"]["pendingPods"] == 0


def test_a_bound_pod_stays_until_its_sandbox_decides() -> None:
    assert assignments(run("undecided-keeps-its-pod")) == {"python-0": "undecided"}
    # Decided elsewhere (a warm pod of alpha): released.
    request = cases.undecided_keeps_its_pod()
    sb = next(iter(request["related"][C.GVK_SANDBOX].values()))
    sb["status"] = {"phase": C.PHASE_RUNNING, "warmPool": "alpha", "warmPodUsed": True, "warmPodRef": {"name": "alpha-0"}}
    assert assignments(warmpool_sync.sync(request, NOW)) == {}
    # No longer asking for a warm pod before it decided: it will not take one.
    del sb["status"], sb["metadata"]["annotations"][C.ANNOTATION_USE_WARM_POD]
    assert assignments(warmpool_sync.sync(request, NOW)) == {}


def test_a_sandbox_with_a_profile_is_served_once_it_names_the_pool() -> None:
    assert assignments(run("profile-waits-for-its-choice")) == {"python-0": "chose"}


def test_sandbox_already_holding_a_pod_gets_no_second_one() -> None:
    p = pool(minSize=1, status={"lastScaleTime": "2026-11-22T11:00:00Z"})
    s = waiting_sandbox("holder")  # its bound pod is not Assigned yet: still "waiting" in status
    out = warmpool_sync.sync(pool_request(p, [warm_pod(p, 0, phase="Ready", assigned_to=s), warm_pod(p, 1)],
                                          related=[RTE, s]), NOW)
    assert assignments(out) == {"python-0": "holder"}


@pytest.mark.parametrize("status", [
    {"phase": C.PHASE_TERMINATED, "warmPool": "python", "warmPodUsed": True},
    {"phase": C.PHASE_FAILED, "warmPool": "python"},
    {"phase": C.PHASE_RUNNING, "warmPool": "another-pool", "warmPodUsed": True},
    {"phase": C.PHASE_RUNNING, "warmPool": "python", "warmPodUsed": False},
])
def test_released_pods_are_dropped(status: dict[str, Any]) -> None:
    p = pool(minSize=1, status={"lastScaleTime": "2026-11-22T11:00:00Z"})
    s = cases.sandbox("user", status=status)
    out = warmpool_sync.sync(pool_request(p, [warm_pod(p, 0, phase="Assigned", assigned_to=s), warm_pod(p, 1)], related=[RTE, s]), NOW)
    assert names(out) == ["python-1"]


def test_sandbox_deleted_after_assignment_drops_the_pod_and_refills_under_a_new_name() -> None:
    request = cases.sandbox_deleted()
    out = warmpool_sync.sync(request, NOW)
    assert "python-0" not in names(out) and assignments(out) == {}
    assert names(out) == ["python-1", "python-2"]
    # Next sync: python-0 is terminating but still observed, so its name is still not reused.
    observed = list(request["children"][C.GVK_WARMPOD].values())
    observed[0]["metadata"]["deletionTimestamp"] = fmt_time(NOW)
    later = copy.deepcopy(request)
    later["children"][C.GVK_WARMPOD] = {f"demo/{o['metadata']['name']}": o for o in observed}
    later["children"][C.GVK_WARMPOD]["demo/python-2"] = warm_pod(pool(minSize=2), 2, phase="Pending")
    again = warmpool_sync.sync(later, NOW)
    assert names(again) == ["python-1", "python-2"]


def test_terminating_pods_keep_their_names_reserved() -> None:
    out = run("sandbox-deleting-and-terminating")
    assert names(out) == ["python-2", "python-3"]


def test_a_running_sandbox_keeps_its_pod_even_when_reported_failed() -> None:
    assert assignments(run("running-keeps-pod")) == {"python-0": "running", "python-1": "broken"}


def test_duplicate_binding_keeps_the_adopted_pod() -> None:
    assert assignments(run("duplicate-assignment")) == {"python-1": "twice"}


def test_outdated_idle_pods_are_replaced_assigned_ones_kept_verbatim() -> None:
    request = cases.outdated_spec()
    out = warmpool_sync.sync(request, NOW)
    kept = next(c for c in pods(out) if c["metadata"]["name"] == "python-0")
    assert kept["spec"] == request["children"][C.GVK_WARMPOD]["demo/python-0"]["spec"]
    fresh = next(c for c in pods(out) if c["metadata"]["name"] == "python-2")
    assert fresh["spec"]["resources"]["cpu"] == "1"
    assert out["status"]["lastScaleTime"] == request["parent"]["status"]["lastScaleTime"]  # recycling, not scaling


# ---------------------------------------------------------------------------------------------
# Unusable specs and deletion


@pytest.mark.parametrize("case", ["invalid-with-children", "runtime-missing"])
def test_unusable_spec_keeps_every_child_unchanged(case: str) -> None:
    build, hook = CASES[case]
    request = build()
    out = hook(request, NOW)
    before = {o["metadata"]["name"]: o for o in request["children"][C.GVK_WARMPOD].values()}
    released = {"python-2"} if case == "invalid-with-children" else set()  # its sandbox is gone
    assert names(out) == sorted(set(before) - released)
    assert not offers(out), "a pool that cannot serve makes no offer"
    for child in out["children"]:
        assert child["spec"] == before[child["metadata"]["name"]]["spec"]
        assert child["metadata"]["labels"] == before[child["metadata"]["name"]]["metadata"]["labels"]
    assert cond(out, "Validated")["status"] == "False"
    assert "runtimeEnvironment" not in out["status"]  # no sandbox chooses a broken pool


UNUSABLE_POOLS = {
    "invalid-spec": ({"minSize": 5, "maxSize": 2}, [RTE]),
    "custom-level": ({"securityLevel": "custom"}, [RTE]),
    "runtime-deleted": ({}, []),
    "runtime-unavailable": ({}, [cases.runtime(available=False)]),
    "runtime-not-validated": ({}, [cases.runtime(available=None)]),
}


@pytest.mark.parametrize("why", sorted(UNUSABLE_POOLS))
def test_unusable_pool_still_releases_pods_of_sandboxes_that_left(why: str) -> None:
    """A pool that cannot serve keeps its idle pods and the pods sandboxes run on, but releases
    those whose sandbox is deleting, gone, ended or cold: a sandbox's deletion waits for its warm
    pod, so keeping it would hang the deletion for as long as the pool stays broken."""
    spec, runtimes = UNUSABLE_POOLS[why]
    p = pool(status={"lastScaleTime": ago(3600)}, **{"minSize": 1, **spec})
    leaving = cases.sandbox("leaving", deleting=True, status={"phase": C.PHASE_RUNNING, "warmPool": "python", "warmPodUsed": True})
    ended = cases.sandbox("ended", status={"phase": C.PHASE_TERMINATED, "warmPool": "python", "warmPodUsed": True})
    cold = cases.sandbox("cold", status={"phase": C.PHASE_RUNNING, "warmPool": "python", "warmPodUsed": False})
    user = cases.running_warm("user", pod="python-3")
    gone = cases.running_warm("gone", pod="python-4")
    observed = [warm_pod(p, 0, phase="Assigned", assigned_to=leaving), warm_pod(p, 1, phase="Assigned", assigned_to=ended),
                warm_pod(p, 2, phase="Assigned", assigned_to=cold), warm_pod(p, 3, phase="Assigned", assigned_to=user),
                warm_pod(p, 4, phase="Assigned", assigned_to=gone), warm_pod(p, 5)]
    out = warmpool_sync.sync(pool_request(p, observed, related=[*runtimes, leaving, ended, cold, user]), NOW)
    assert cond(out, "Validated")["status"] != "True" and not offers(out)
    assert names(out) == ["python-3", "python-5"]
    assert assignments(out) == {"python-3": "user"}
    assert out["status"]["assignedPods"] == 1


def test_unvalidated_runtime_is_waiting_not_failed() -> None:
    out = run("runtime-not-validated")
    assert cond(out, "Validated")["status"] == "Unknown" and out["children"] == []


def test_custom_security_level_is_refused() -> None:
    assert cond(run("custom-level"), "Validated")["reason"] == "UnsupportedSecurityLevel"


def test_long_pool_names_give_short_unique_member_names() -> None:
    out = run("long-name")
    assert len(set(names(out))) == 2 and all(len(n) <= C.MAX_DNS_LABEL for n in names(out))
    assert all(len(c["metadata"]["labels"][C.LABEL_WARMPOOL]) <= C.MAX_LABEL_VALUE for c in out["children"])


def test_finalize_drops_everything_and_waits() -> None:
    waiting = run("finalize-waiting")
    assert waiting["children"] == [] and waiting["finalized"] is False
    done = run("finalize-done")
    assert done["children"] == [] and done["finalized"] is True


def test_sync_of_a_deleting_pool_finalizes() -> None:
    assert warmpool_sync.sync(cases.finalize_done(), NOW)["finalized"] is True


def test_customize_asks_for_sandboxes_and_offers_of_the_namespace_and_all_runtimes() -> None:
    rules = warmpool_sync.customize({"parent": pool()})["relatedResources"]
    assert {"apiVersion": C.API_VERSION, "resource": "sandboxes", "namespace": "demo"} in rules
    assert {"apiVersion": C.API_VERSION, "resource": "runtimeenvironments"} in rules
    # The namespace's offers: which pool a new sandbox chooses depends on the pools that sort first.
    assert {"apiVersion": C.API_VERSION, "resource": "warmpooloffers", "namespace": "demo"} in rules


def test_condition_times_move_only_on_transitions() -> None:
    request = cases.steady()
    first = warmpool_sync.sync(request, NOW)
    request["parent"]["status"] = first["status"]
    later = warmpool_sync.sync(request, NOW + timedelta(hours=1))
    assert later["status"] == first["status"]


def test_high_pool_on_a_runtime_without_gvisor_is_refused() -> None:
    # securityFeatures gate the levels (issue 12, item 13): such a pool would run an image not
    # made for gVisor under it, and no high sandbox could use it.
    from tests.factory import runtime
    from tests.warm_factory import pool, pool_request
    plain = runtime(securityFeatures=["seccomp"])
    out = warmpool_sync.sync(pool_request(pool(securityLevel="high"), related=[plain]), NOW)
    validated = cond(out, "Validated")
    assert (validated["status"], validated["reason"]) == ("False", "RuntimeLacksSecurityFeature")
    assert out["children"] == []
    assert cond(warmpool_sync.sync(pool_request(pool(securityLevel="standard"), related=[plain]), NOW), "Validated")["status"] == "True"
