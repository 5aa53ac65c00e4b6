"""Label, annotation and name spoofing.

Tenants write Sandboxes (and, depending on RBAC, WarmPools and SandboxProfiles) and choose their
names, labels and annotations freely. Nothing of that may:
  - make a pod selected by another sandbox's Service or NetworkPolicies (selection is by the
    sandbox's UID label, which only the controller writes);
  - claim another sandbox's warm pod (assignment is keyed on metadata.uid, written by the pool);
  - change the labels the controller owns on any child (app, component, managed-by, the
    llmsafespace.dev/ identity labels; controller-uid is Metacontroller's).
Names: two sandboxes never share a child name (dns_label, proven in test_fuzz.py), and a warm
pod's children (named warm-...) never take a sandbox's (named sandbox-...)."""
from __future__ import annotations

import copy
from typing import Any, Iterable, Mapping


from hypothesis import given
from hypothesis import strategies as st

from hooks import constants as C
from hooks.config import Config
from hooks.server.routes import ROUTES
from tests import strategies as S
from tests.factory import NOW, fake_uid, observed, profile, running_pod_status, runtime, sandbox, settle, sync_request
from tests.test_isolation import warmpod_parent, warmpod_request
from tests.warm_factory import pool as warm_pool_object

RTE = runtime()
CONTROLLER_KEYS = (C.LABEL_APP, C.LABEL_COMPONENT, C.LABEL_MANAGED_BY, C.LABEL_SANDBOX_ID, C.LABEL_SANDBOX_UID,
                   C.LABEL_WARMPOOL, C.LABEL_WARMPOD, C.LABEL_CONTROLLER_UID)


def run(path: str, request: dict[str, Any]) -> dict[str, Any]:
    return ROUTES[path].function(copy.deepcopy(request), NOW, Config())


def settled(parent: dict[str, Any], *related: dict[str, Any]) -> dict[str, Any]:
    """The sandbox's answer once its first children exist (its Pod waits for its ServiceAccount)."""
    return settle(lambda r, now: run("/sandbox/sync", r), sync_request(parent, related=list(related) or [RTE]))[1]


def matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def selectors(children: Iterable[dict[str, Any]]) -> list[tuple[str, dict[str, str]]]:
    """(what, selector) of every Service and NetworkPolicy: what decides which pods they govern."""
    out = []
    for child in children:
        if child["kind"] == "Service":
            out.append((f"Service/{child['metadata']['name']}", child["spec"]["selector"]))
        elif child["kind"] == "NetworkPolicy":
            out.append((f"NetworkPolicy/{child['metadata']['name']}", child["spec"]["podSelector"]["matchLabels"]))
    return out


def assert_own_selector(what: str, selector: dict[str, str], own: dict[str, str]) -> None:
    """A selector holds the sandbox's own identity and nothing a user wrote; a Service also names
    which kind of pod serves (component sandbox or warmpod)."""
    assert {k: selector.get(k) for k in own} == own, (what, selector)
    extra = {k: v for k, v in selector.items() if k not in own}
    if what.startswith("Service/"):
        assert extra == {C.LABEL_COMPONENT: C.COMPONENT_SANDBOX} or extra == {C.LABEL_COMPONENT: C.COMPONENT_WARMPOD}, (what, selector)
    else:
        assert extra == {}, (what, selector)


def pod_of(children: Iterable[dict[str, Any]]) -> dict[str, Any]:
    return next(c for c in children if c["kind"] == "Pod")


def spoofing_labels(victim: dict[str, Any]) -> st.SearchStrategy[dict[str, str]]:
    """Arbitrary labels plus the victim's identity under every key a selector might use."""
    meta = victim["metadata"]
    targeted = st.dictionaries(
        st.sampled_from(S.SPOOF_LABEL_KEYS),
        st.sampled_from([meta["uid"], meta["name"], C.APP_NAME, C.COMPONENT_API, C.COMPONENT_SANDBOX,
                         C.COMPONENT_WARMPOD, C.MANAGED_BY, "kube-dns", "python"]),
        max_size=len(S.SPOOF_LABEL_KEYS))
    return st.tuples(S.labels(), targeted).map(lambda t: {**t[0], **t[1]})


VICTIM = sandbox("victim", annotations={C.ANNOTATION_USE_WARM_POD: "true"})


@st.composite
def attacker(draw: Any, victim: dict[str, Any] = VICTIM) -> dict[str, Any]:
    name = draw(st.one_of(S.dns_subdomain(), st.sampled_from(["victim-x", "victim.x", "victim0", "sandbox-victim"])))
    parent = sandbox(name, spec=draw(st.sampled_from([{}, {"networkAccess": {"ingress": True}},
                                                      {"warmPoolRef": {"name": "python-pool"}}])),
                     labels=draw(spoofing_labels(victim)),
                     annotations={**draw(S.annotations()), C.ANNOTATION_SANDBOX: f"demo/{victim['metadata']['name']}"})
    return parent


def assert_controller_labels(child: dict[str, Any], expected: Mapping[str, str]) -> None:
    labels = child["metadata"]["labels"]
    owned = {k: v for k, v in labels.items() if k in CONTROLLER_KEYS or k.startswith(C.LABEL_PREFIX)}
    assert owned == dict(expected), (child["kind"], child["metadata"]["name"], owned, expected)


def sandbox_labels(parent: dict[str, Any]) -> dict[str, str]:
    from hooks.meta import label_value
    return {C.LABEL_APP: C.APP_NAME, C.LABEL_COMPONENT: C.COMPONENT_SANDBOX, C.LABEL_MANAGED_BY: C.MANAGED_BY,
            C.LABEL_SANDBOX_ID: label_value(parent["metadata"]["name"]), C.LABEL_SANDBOX_UID: parent["metadata"]["uid"]}


# ---------------------------------------------------------------------------------------------
# Sandbox metadata


@S.fuzz_settings(60, 3_000)
@given(parent=attacker())
def test_sandbox_metadata_cannot_change_controller_labels_or_selectors(parent: dict[str, Any]) -> None:
    children = settled(parent)["children"]
    assert children
    expected = sandbox_labels(parent)
    own = {C.LABEL_APP: C.APP_NAME, C.LABEL_SANDBOX_UID: parent["metadata"]["uid"]}
    for child in children:
        assert_controller_labels(child, expected)
    for what, selector in selectors(children):
        assert_own_selector(what, selector, own)
    pod = pod_of(children)
    assert pod["metadata"]["annotations"][C.ANNOTATION_SANDBOX] == f"demo/{parent['metadata']['name']}"


@S.fuzz_settings(60, 3_000)
@given(bad=attacker(), victim_spec=st.sampled_from([{}, {"networkAccess": {"ingress": True, "egress": [{"domain": "pypi.org"}]}}]))
def test_no_pod_is_selected_by_another_sandboxs_service_or_policies(bad: dict[str, Any], victim_spec: dict[str, Any]) -> None:
    victim = copy.deepcopy(VICTIM)
    victim["spec"].update(victim_spec)
    victim["metadata"]["annotations"] = {}
    mine = settled(victim)["children"]
    theirs = settled(bad)["children"]
    for owner, children, other in (("victim", mine, theirs), ("attacker", theirs, mine)):
        own_pod, other_pod = pod_of(children), pod_of(other)
        for what, selector in selectors(children):
            assert matches(selector, own_pod["metadata"]["labels"]), f"{owner}'s {what} does not select its own pod"
            assert not matches(selector, other_pod["metadata"]["labels"]), f"{owner}'s {what} selects the other sandbox's pod"
    # Different sandboxes never share a child name (a clash would hand one sandbox's object to the other).
    assert not {(c["kind"], c["metadata"]["name"]) for c in mine} & {(c["kind"], c["metadata"]["name"]) for c in theirs}


@S.fuzz_settings(40, 2_000)
@given(bad=attacker())
def test_api_peer_cannot_be_impersonated_by_a_sandbox(bad: dict[str, Any]) -> None:
    """Sandbox policies admit the API by namespace *and* labels; a sandbox pod never carries the
    API's component label, whatever its owner writes."""
    children = settled(bad)["children"]
    labels = pod_of(children)["metadata"]["labels"]
    assert labels[C.LABEL_COMPONENT] == C.COMPONENT_SANDBOX
    for child in children:
        if child["kind"] != "NetworkPolicy":
            continue
        for rule in child["spec"].get("ingress", []) + child["spec"].get("egress", []):
            for peer in rule.get("from", []) + rule.get("to", []):
                if "podSelector" in peer:
                    assert "namespaceSelector" in peer, f"{child['metadata']['name']}: a pod peer without a namespace"
                    assert peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] != bad["metadata"]["namespace"]


# ---------------------------------------------------------------------------------------------
# Warm pods


def _offer() -> dict[str, Any]:
    """What a sandbox sees of pool python-pool (its WarmPoolOffer)."""
    return S.warm_offer()


def test_an_offer_its_pool_does_not_control_is_ignored() -> None:
    """A WarmPoolOffer that no pool made (no controlling owner reference, or another pool's)
    never makes a sandbox wait for a pool: it starts cold at once and says why."""
    parent = sandbox("wants-warm", annotations={C.ANNOTATION_USE_WARM_POD: "true"})
    forged = _offer()
    forged["metadata"]["ownerReferences"] = []
    other = _offer()
    other["metadata"]["ownerReferences"][0]["name"] = "another-pool"
    for offer in (forged, other):
        out = run("/sandbox/sync", sync_request(parent, related=[RTE, offer]))
        cond = next(c for c in out["status"]["conditions"] if c["type"] == "WarmPod")
        assert (out["status"]["warmPodUsed"], cond["reason"]) == (False, "NoCompatiblePool"), out["status"]
        assert "not made by WarmPool" in cond["message"]
    assert run("/sandbox/sync", sync_request(parent, related=[RTE, _offer()]))["status"]["warmPool"] == "python-pool"


def _pool(**meta: Any) -> dict[str, Any]:
    """Pool python-pool itself, as its own controller sees it."""
    pool = warm_pool_object("python-pool")
    pool["spec"]["minSize"] = 2
    pool["metadata"].update(meta)
    return pool


def _victims_warm_pod(victim: dict[str, Any]) -> dict[str, Any]:
    return S.warm_pod(victim, "python-pool", "Assigned")


@S.fuzz_settings(60, 3_000)
@given(bad=attacker(), copy_status=st.booleans())
def test_a_sandbox_cannot_claim_another_sandboxs_warm_pod(bad: dict[str, Any], copy_status: bool) -> None:
    victim_pod = _victims_warm_pod(VICTIM)
    control = run("/sandbox/sync", sync_request(VICTIM, related=[RTE, _offer(), victim_pod]))
    assert control["status"]["warmPodRef"]["name"] == victim_pod["metadata"]["name"], "the victim itself is served"
    if copy_status:  # even a status that names the victim's pod (tenants should not write status)
        bad["status"] = {"warmPool": "python-pool", "warmPodRef": {"name": victim_pod["metadata"]["name"], "namespace": "demo"}}
    bad["metadata"].setdefault("annotations", {})[C.ANNOTATION_USE_WARM_POD] = "true"
    # Related objects as if Metacontroller had (wrongly) handed over the victim's WarmPod too.
    out = run("/sandbox/sync", sync_request(bad, related=[RTE, _offer(), victim_pod]))
    assert out["status"].get("warmPodRef", {}).get("name") != victim_pod["metadata"]["name"]
    assert out["status"].get("podName") != victim_pod["status"]["podName"]
    assert out["status"].get("warmPodUsed") is not True
    # ... and the customize hook only asks for WarmPods labelled with the sandbox's own UID.
    rules = run("/sandbox/customize", {"parent": bad})["relatedResources"]
    warm_rule = next(r for r in rules if r["resource"] == "warmpods")
    assert warm_rule["labelSelector"] == {"matchLabels": {C.LABEL_SANDBOX_UID: bad["metadata"]["uid"]}}


def _pool_request(pool: dict[str, Any], warm_pods: list[dict[str, Any]], sandboxes: list[dict[str, Any]]) -> dict[str, Any]:
    return sync_request(pool, children=warm_pods, related=[RTE, *sandboxes],
                        child_keys=(C.GVK_WARMPOD, C.GVK_WARMPOOL_OFFER), related_keys=(C.GVK_SANDBOX, C.GVK_RUNTIME))


def _ready_members(pool: dict[str, Any], count: int = 2) -> list[dict[str, Any]]:
    desired = [c for c in run("/warmpool/sync", _pool_request(pool, [], []))["children"] if c["kind"] == C.KIND_WARMPOD][:count]
    out = []
    for child in desired:
        obj = observed(child, pool, phase="Ready", podName=child["metadata"]["name"], podNamespace="demo")
        obj["metadata"]["creationTimestamp"] = "2026-11-22T11:00:00Z"
        out.append(obj)
    return out


def _waiting(parent: dict[str, Any], created: str) -> dict[str, Any]:
    parent = copy.deepcopy(parent)
    parent["metadata"]["creationTimestamp"] = created
    parent["status"] = {"phase": C.PHASE_PENDING, "warmPool": "python-pool"}
    return parent


@S.fuzz_settings(40, 2_000)
@given(bad=attacker(), attacker_first=st.booleans())
def test_the_pool_assigns_by_uid_only(bad: dict[str, Any], attacker_first: bool) -> None:
    if "/warmpool/sync" not in ROUTES:
        return
    pool = _pool()
    victim = _waiting(VICTIM, "2026-11-22T11:59:50Z")
    bad = _waiting(bad, "2026-11-22T11:59:40Z" if attacker_first else "2026-11-22T11:59:55Z")
    members = _ready_members(pool)
    # Round 1: both wait; each assignment names the UID of the sandbox it was made for.
    first = run("/warmpool/sync", _pool_request(pool, members, [victim, bad]))
    first_pods = [c for c in first["children"] if c["kind"] == C.KIND_WARMPOD]
    assigned = {c["metadata"]["name"]: c["spec"]["assignment"] for c in first_pods if c["spec"].get("assignment")}
    uids = {victim["metadata"]["uid"]: victim, bad["metadata"]["uid"]: bad}
    assert victim["metadata"]["uid"] in {a["sandboxUid"] for a in assigned.values()}, first["status"]
    assert len({a["sandboxUid"] for a in assigned.values()}) == len(assigned)
    for member, assignment in assigned.items():
        owner = uids[assignment["sandboxUid"]]
        assert assignment["sandboxName"] == owner["metadata"]["name"]
        warm_pod = next(c for c in first_pods if c["metadata"]["name"] == member)
        assert warm_pod["metadata"]["labels"][C.LABEL_SANDBOX_UID] == owner["metadata"]["uid"]
    # Round 2: the victim holds a pod; the attacker claims it in its status: nothing moves.
    victim_member = next(m for m, a in assigned.items() if a["sandboxUid"] == victim["metadata"]["uid"])
    held = []
    for child in first_pods:
        phase = "Assigned" if child["spec"].get("assignment") else "Ready"
        obj = observed(child, pool, phase=phase, podName=child["metadata"]["name"], podNamespace="demo")
        obj["metadata"]["creationTimestamp"] = "2026-11-22T11:00:00Z"
        held.append(obj)
    running_victim = copy.deepcopy(victim)
    running_victim["status"] = {"phase": C.PHASE_RUNNING, "warmPool": "python-pool", "warmPodUsed": True,
                                "warmPodRef": {"name": victim_member, "namespace": "demo"}}
    greedy = copy.deepcopy(bad)
    greedy["status"]["warmPodRef"] = {"name": victim_member, "namespace": "demo"}
    second = run("/warmpool/sync", _pool_request(pool, held, [running_victim, greedy]))
    kept = next(c for c in second["children"] if c["kind"] == C.KIND_WARMPOD and c["metadata"]["name"] == victim_member)
    assert kept["spec"]["assignment"]["sandboxUid"] == victim["metadata"]["uid"]


@S.fuzz_settings(40, 2_000)
@given(labels=spoofing_labels(VICTIM), annotations=S.annotations(), name=st.one_of(S.dns_subdomain(), st.just("victim")))
def test_warmpool_and_warmpod_metadata_cannot_change_controller_labels(labels: dict[str, str], annotations: dict[str, str], name: str) -> None:
    if "/warmpool/sync" not in ROUTES or "/warmpod/sync" not in ROUTES:
        return
    from hooks.meta import label_value
    pool = _pool(name=name, labels=labels, annotations=annotations)
    for warm in run("/warmpool/sync", _pool_request(pool, [], [VICTIM]))["children"]:
        component = C.COMPONENT_WARMPOOL_OFFER if warm["kind"] == C.KIND_WARMPOOL_OFFER else C.COMPONENT_WARMPOD
        assert_controller_labels(warm, {C.LABEL_APP: C.APP_NAME, C.LABEL_COMPONENT: component,
                                        C.LABEL_MANAGED_BY: C.MANAGED_BY, C.LABEL_WARMPOOL: label_value(name)})
    # A WarmPod whose own labels impersonate the victim: its pod carries no sandbox identity
    # until the pool assigns it, and then only the assignment's.
    wpod = warmpod_parent("python-7")
    wpod["metadata"]["labels"] = labels
    wpod["metadata"]["annotations"] = annotations
    children = run("/warmpod/sync", warmpod_request(wpod))["children"]
    pod = pod_of(children)
    assert C.LABEL_SANDBOX_UID not in pod["metadata"]["labels"]
    assert pod["metadata"]["labels"][C.LABEL_COMPONENT] == C.COMPONENT_WARMPOD
    victim_children = settled(VICTIM)["children"]
    for what, selector in selectors(victim_children):
        assert not matches(selector, pod["metadata"]["labels"]), f"the victim's {what} selects an idle warm pod"


@S.fuzz_settings(40, 2_000)
@given(labels=spoofing_labels(VICTIM), annotations=S.annotations())
def test_profile_metadata_cannot_change_controller_labels(labels: dict[str, str], annotations: dict[str, str]) -> None:
    prof = profile(securityLevel="standard")
    prof["metadata"]["labels"] = labels
    prof["metadata"]["annotations"] = annotations
    parent = sandbox("profiled", spec={"profileRef": {"name": prof["metadata"]["name"]}})
    out = settled(parent, RTE, prof)
    assert out["status"]["profile"] == f"demo/{prof['metadata']['name']}"
    for child in out["children"]:
        assert_controller_labels(child, sandbox_labels(parent))
    for path, route in ROUTES.items():
        if route.controller == "sandboxprofile" and route.hook == "sync":
            request = sync_request(prof, child_keys=(), related_keys=(C.GVK_RUNTIME,), related=[RTE])
            assert run(path, request).get("children", []) == []


def test_observed_pod_labels_are_restored_by_the_controller() -> None:
    """Someone relabels a sandbox's live pod: the desired pod still carries the controller's labels.
    (Pods are OnDelete, so Metacontroller does not revert a live pod's labels: tenants must not
    be able to write Pods in sandbox namespaces — SECURITY.md, "relies on".)"""
    parent = sandbox("relabelled")
    first = settled(parent)["children"]
    pod = observed(pod_of(first), parent, **running_pod_status())
    pod["metadata"]["labels"][C.LABEL_SANDBOX_UID] = fake_uid("someone", "else")
    pod["metadata"]["labels"][C.LABEL_COMPONENT] = C.COMPONENT_API
    children = [pod] + [observed(c, parent) for c in first if c["kind"] != "Pod"]
    again = run("/sandbox/sync", sync_request(parent, children=children, related=[RTE]))["children"]
    assert_controller_labels(pod_of(again), sandbox_labels(parent))


# ---------------------------------------------------------------------------------------------
# Names across controllers


def test_warm_pod_names_never_collide_with_sandbox_pod_names() -> None:
    pool = _pool(name="sandbox-x")
    warm_names = {c["metadata"]["name"] for c in run("/warmpool/sync", _pool_request(pool, [], []))["children"]}
    pod_names = set()
    for warm_name in warm_names:
        children = run("/warmpod/sync", warmpod_request(warmpod_parent(warm_name)))["children"]
        pod_names |= {c["metadata"]["name"] for c in children}
    victim = run("/sandbox/sync", sync_request(sandbox("x-0"), related=[RTE]))["children"]
    assert not pod_names & {c["metadata"]["name"] for c in victim}
