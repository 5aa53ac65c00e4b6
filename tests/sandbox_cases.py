"""Representative Sandbox sync/finalize requests, shared by golden, schema and security tests."""
from __future__ import annotations

from typing import Any, Callable

from hooks import constants as C
from hooks import sandbox_sync
from hooks.builders import network_policy as np
from hooks.builders.service_account import build_service_account
from tests.factory import (
    fake_uid, observed, profile, running_pod_status, runtime, sandbox, settle, sync_request,
)

RTE = runtime()


def _children_of(parent: dict[str, Any], **pod_status: Any) -> list[dict[str, Any]]:
    """What the API server holds once the syncs of `parent` (before any deletion) were applied."""
    alive = {**parent, "metadata": {k: v for k, v in parent["metadata"].items() if k != "deletionTimestamp"}}
    return settle(sandbox_sync.sync, sync_request(alive, related=[RTE]), pod_status=pod_status)[0]


def account(parent: dict[str, Any]) -> list[dict[str, Any]]:
    """The sandbox's ServiceAccount and default deny as observed after its first sync. Creation
    cases carry them: the Pod (what their goldens and the security checks are about) is desired
    only once both exist."""
    names = sandbox_sync.Names.of(parent)
    ns, labels = parent["metadata"]["namespace"], sandbox_sync.child_labels(parent)
    deny = np.default_deny(names.policy("default-deny"), ns, labels, sandbox_sync.selector(parent))
    return [observed(build_service_account(names.base, ns, labels), parent), observed(deny, parent)]


def creating(parent: dict[str, Any], *related: dict[str, Any]) -> dict[str, Any]:
    return sync_request(parent, children=account(parent), related=list(related) or [RTE])


def warm_offer(name: str = "python-pool", **spec: Any) -> dict[str, Any]:
    """What a sandbox sees of a WarmPool: the pool's WarmPoolOffer child, as its hook writes it
    (a pool of python:3.11 resolved to python-3.11, default resources; `spec` overrides)."""
    return {
        "apiVersion": C.API_VERSION, "kind": C.KIND_WARMPOOL_OFFER,
        "metadata": {"name": name, "namespace": "demo", "uid": fake_uid("wpo", name), "generation": 1,
                     "creationTimestamp": "2026-11-22T10:00:00Z",
                     "labels": {C.LABEL_APP: C.APP_NAME, C.LABEL_COMPONENT: C.COMPONENT_WARMPOOL_OFFER, C.LABEL_WARMPOOL: name},
                     "ownerReferences": [{"apiVersion": C.API_VERSION, "kind": C.KIND_WARMPOOL, "name": name,
                                          "uid": fake_uid("wp", name), "controller": True, "blockOwnerDeletion": True}]},
        "spec": {"poolRef": {"name": name}, "runtime": "python-3.11", "securityLevel": "standard",
                 "resources": {"cpu": C.DEFAULT_CPU, "memory": C.DEFAULT_MEMORY, "ephemeralStorage": C.DEFAULT_EPHEMERAL_STORAGE}, **spec},
    }


def warm_pod_status(name: str, wp_uid: str, phase: str, sandbox_name: str) -> dict[str, Any]:
    """A bound WarmPod's status as its hook writes it: its pod (warm-<name>) carries its serving
    selector; Ready as written before the assignment, Assigned once relabelled too."""
    ready = phase in ("Ready", "Assigned")
    conditions = [{"type": "Ready", "status": "True" if ready else "False", "reason": "PodReady" if ready else "PodStarting",
                   "message": "x", "lastTransitionTime": "2026-11-22T10:00:30Z"}]
    if phase == "Assigned":
        conditions.append({"type": "Assigned", "status": "True", "reason": "PodLabelled", "message": f"serving sandbox {sandbox_name}",
                           "lastTransitionTime": "2026-11-22T11:59:55Z"})
    return {"phase": phase, "podName": f"warm-{name}", "podNamespace": "demo", "conditions": conditions,
            "servingSelector": {C.LABEL_APP: C.APP_NAME, C.LABEL_WARMPOD_UID: wp_uid}}


def _warm_pod(parent: dict[str, Any], pool: dict[str, Any], phase: str) -> dict[str, Any]:
    """A WarmPod of `pool` bound to `parent` (see warm_pod_status)."""
    name = f"{pool['metadata']['name']}-0"
    wp_uid = fake_uid("wpod", name)
    return {
        "apiVersion": C.API_VERSION, "kind": C.KIND_WARMPOD,
        "metadata": {
            "name": name, "namespace": "demo", "uid": wp_uid, "generation": 2,
            "creationTimestamp": "2026-11-22T10:00:05Z",
            "labels": {C.LABEL_SANDBOX_UID: parent["metadata"]["uid"], C.LABEL_WARMPOOL: pool["metadata"]["name"]},
            "ownerReferences": [{"apiVersion": C.API_VERSION, "kind": C.KIND_WARMPOOL, "name": pool["metadata"]["name"],
                                 "uid": pool["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": {"poolRef": {"name": pool["metadata"]["name"]}, "runtime": "python:3.11", "image": RTE["spec"]["image"],
                 "assignment": {"sandboxName": parent["metadata"]["name"], "sandboxUid": parent["metadata"]["uid"]}},
        "status": warm_pod_status(name, wp_uid, phase, parent["metadata"]["name"]),
    }


def first_sync() -> dict[str, Any]:
    """A new sandbox, nothing observed yet: everything but the Pod (it waits for its account)."""
    return sync_request(sandbox(), related=[RTE])


def minimal() -> dict[str, Any]:
    return creating(sandbox())


def security_high() -> dict[str, Any]:
    return creating(sandbox("secure", spec={"securityLevel": "high"}))


def security_custom() -> dict[str, Any]:
    return creating(sandbox("custom", spec={
        "securityLevel": "custom",
        "securityContext": {"runAsUser": 2000, "runAsGroup": 3000,
                            "seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/python-strict.json"}},
    }))


def persistent_storage() -> dict[str, Any]:
    return creating(sandbox("notebook", spec={"storage": {"persistent": True, "volumeSize": "10Gi"}}))


def persistent_retained() -> dict[str, Any]:
    return creating(sandbox("archive", spec={"storage": {
        "persistent": True, "retentionPolicy": "Retain", "storageClassName": "retained-ssd"}}))


def egress_rules() -> dict[str, Any]:
    return creating(sandbox("fetcher", spec={"networkAccess": {"egress": [
        {"domain": "pypi.org", "ports": [{"port": 443, "protocol": "TCP"}]},
        {"domain": "files.pythonhosted.org"},
        {"cidr": "203.0.113.0/24", "ports": [{"port": 5432}, {"port": 53, "protocol": "UDP"}]},
    ]}}))


def egress_names() -> dict[str, Any]:
    """Names, a wildcard, and a CIDR: what the name-enforcing egress backends split apart."""
    return creating(sandbox("fetcher", spec={"networkAccess": {"egress": [
        {"domain": "pypi.org", "ports": [{"port": 443, "protocol": "TCP"}]},
        {"domain": "*.pythonhosted.org", "ports": [{"port": 443, "protocol": "TCP"}]},
        {"domain": "github.com"},
        {"cidr": "203.0.113.0/24", "ports": [{"port": 5432}]},
    ]}}))


def ingress() -> dict[str, Any]:
    return creating(sandbox("webapp", spec={"networkAccess": {"ingress": True}}))


def cpu_pinning() -> dict[str, Any]:
    return creating(sandbox("pinned", spec={"resources": {"cpu": "2", "memory": "4Gi", "cpuPinning": True}}))


def profile_applied() -> dict[str, Any]:
    prof = profile(securityLevel="high", seccompProfile="profiles/python.json",
                   resourceDefaults={"cpu": "1", "memory": "1Gi"},
                   filesystemConfig={"writablePaths": ["/tmp", "/home/sandbox"], "readOnlyPaths": ["/opt/app"]},
                   networkPolicies=[{"type": "egress", "rules": [{"domain": "pypi.org", "ports": [{"port": 443}]}]}],
                   preInstalledPackages=["numpy==2.1.0", "pandas"])
    return creating(sandbox("analyst", spec={"profileRef": {"name": "data-science"}}), RTE, prof)


def observed_running() -> dict[str, Any]:
    parent = sandbox("live")
    children = _children_of(parent, **running_pod_status())
    parent["status"] = {"phase": "Creating", "conditions": [
        {"type": "Validated", "status": "True", "reason": "Valid", "message": "x", "lastTransitionTime": "2026-11-22T11:59:51Z"},
        {"type": "Ready", "status": "False", "reason": "PodPending", "message": "x", "lastTransitionTime": "2026-11-22T11:59:51Z"},
    ]}
    return sync_request(parent, children=children, related=[RTE])


def replaced_on_request() -> dict[str, Any]:
    # An edit applied by the replace-pod annotation: the running pod was made for that request.
    parent = sandbox("edited", annotations={C.ANNOTATION_REPLACE_POD: "r1"}, spec={"securityLevel": "high"})
    return sync_request(parent, children=_children_of(parent, **running_pod_status()), related=[RTE])


def observed_failed() -> dict[str, Any]:
    parent = sandbox("crashed")
    children = _children_of(parent, phase="Failed", message="The node was low on resource: memory.", reason="Evicted")
    return sync_request(parent, children=children, related=[RTE])


def container_restarted() -> dict[str, Any]:
    """Running again after one OOM kill the kubelet restarted in place (found on the real node)."""
    parent = sandbox("restarted")
    status = {**running_pod_status(), "containerStatuses": [{
        "name": "sandbox", "ready": True, "restartCount": 1, "state": {"running": {"startedAt": "2026-11-22T11:59:59Z"}},
        "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137, "finishedAt": "2026-11-22T11:59:58Z"}}}]}
    return sync_request(parent, children=_children_of(parent, **status), related=[RTE])


def finalize_terminating() -> dict[str, Any]:
    parent = sandbox("leaving", deleting=True, spec={"storage": {"persistent": True}})
    children = _children_of(parent, **running_pod_status())
    return sync_request(parent, children=children, related=[RTE], finalizing=True)


def finalize_removing() -> dict[str, Any]:
    """The pod is gone; the policies, Service and account are still observed."""
    parent = sandbox("going", deleting=True, status={"phase": "Terminating", "podName": "sandbox-going"})
    children = [c for c in _children_of(parent) if c["kind"] != "Pod"]
    return sync_request(parent, children=children, related=[RTE], finalizing=True)


def finalize_done() -> dict[str, Any]:
    """Every child is gone."""
    parent = sandbox("gone", deleting=True, status={"phase": "Terminating", "podName": "sandbox-gone"})
    return sync_request(parent, related=[RTE], finalizing=True)


def invalid_new() -> dict[str, Any]:
    return sync_request(sandbox("broken", spec={"resources": {"cpu": "lots"}, "timeout": 0}), related=[RTE])


def invalid_with_children() -> dict[str, Any]:
    parent = sandbox("edited", spec={"storage": {"persistent": True}})
    children = _children_of(parent, **running_pod_status())
    parent["spec"]["runtime"] = "cobol:85"  # an edit to a runtime that does not exist
    parent["metadata"]["generation"] = 2
    parent["status"] = {"phase": "Running", "runtimeEnvironment": "python-3.11", "serviceName": "sandbox-edited",
                        "endpoint": "sandbox-edited.demo.svc.cluster.local"}
    return sync_request(parent, children=children, related=[RTE])


def invalid_without_default_deny() -> dict[str, Any]:
    """A running sandbox made invalid while its default-deny policy is missing (deleted, or its
    create failed): the policy is desired again (issue 13, item 4)."""
    request = invalid_with_children()
    policies = request["children"][C.GVK_NETWORK_POLICY]
    del policies[next(k for k in policies if k.endswith("-default-deny"))]
    return request


def runtime_missing() -> dict[str, Any]:
    return sync_request(sandbox("orphan", spec={"runtime": "ruby:3.3"}), related=[RTE])


def runtime_not_validated() -> dict[str, Any]:
    return sync_request(sandbox("early"), related=[runtime(available=None)])


def lifetime_expired() -> dict[str, Any]:
    parent = sandbox("expired", spec={"lifetimeSeconds": 5, "storage": {"persistent": True, "retentionPolicy": "Retain",
                                                                        "storageClassName": "retained-ssd"}})
    return sync_request(parent, children=_children_of(parent, **running_pod_status()), related=[RTE])


def long_name_and_user_labels() -> dict[str, Any]:
    name = "an-unusually-long-sandbox-name-that-an-agent-framework-generated.session-0042"
    return creating(sandbox(name, labels={
        "team": "research", "app": "spoofed", "component": "api",
        C.LABEL_SANDBOX_UID: "someone-elses-uid", "controller-uid": "x",
    }))


def warm_waiting() -> dict[str, Any]:
    return sync_request(sandbox("quick", annotations={C.ANNOTATION_USE_WARM_POD: "true"}), related=[RTE, warm_offer()])


def warm_bound() -> dict[str, Any]:
    """The pool bound a warm pod on seeing the new sandbox (its status as written before the
    assignment): the sandbox adopts it, pointing its new Service and policies at the pod."""
    parent = sandbox("quick", annotations={C.ANNOTATION_USE_WARM_POD: "true"})
    pool = warm_offer()
    return sync_request(parent, related=[RTE, pool, _warm_pod(parent, pool, "Ready")])


def warm_running() -> dict[str, Any]:
    """The next sync: its Service and policies are observed selecting the warm pod, so it is Running."""
    request = warm_bound()
    children, answer = settle(sandbox_sync.sync, request)
    request["parent"]["status"] = answer["status"]
    request["children"] = sync_request(request["parent"], children=children)["children"]
    return request


def warm_bound_before_upgrade() -> dict[str, Any]:
    """A WarmPod made before servingSelector existed, relabelled with the sandbox's UID (Assigned
    as hooks of that time wrote it): adopted on that label, as then."""
    request = warm_bound()
    wp = next(iter(request["related"][C.GVK_WARMPOD].values()))
    wp["status"] = {"phase": "Assigned", "podName": wp["status"]["podName"], "podNamespace": "demo",
                    "conditions": [*wp["status"]["conditions"],
                                   {"type": "Assigned", "status": "True", "reason": "PodLabelled", "message": "serving sandbox quick",
                                    "lastTransitionTime": "2026-11-22T11:59:55Z"}]}
    return request


def warm_timeout() -> dict[str, Any]:
    parent = sandbox("slow", annotations={C.ANNOTATION_USE_WARM_POD: "true"}, created="2026-11-22T11:58:00Z",
                     status={"warmPool": "python-pool"})
    return sync_request(parent, related=[RTE, warm_offer()])  # the decision: cold, and why


def warm_incompatible() -> dict[str, Any]:
    parent = sandbox("big", annotations={C.ANNOTATION_USE_WARM_POD: "true"}, spec={"resources": {"memory": "8Gi"}})
    return sync_request(parent, related=[RTE, warm_offer()])


def _suspended_cond(reason: str, status: str = "True") -> dict[str, Any]:
    return {"type": "Suspended", "status": status, "reason": reason, "message": "x", "lastTransitionTime": "2026-11-22T11:00:00Z"}


def suspending() -> dict[str, Any]:
    """operatingMode Suspended on a running sandbox with a volume: its pod is left out (Metacontroller
    deletes it gracefully), everything else stays; Suspending while the pod is observed."""
    parent = sandbox("paused", spec={"storage": {"persistent": True}})
    children = _children_of(parent, **running_pod_status())
    parent["spec"]["operatingMode"] = "Suspended"
    return sync_request(parent, children=children, related=[RTE])


def suspended() -> dict[str, Any]:
    parent = sandbox("paused", spec={"storage": {"persistent": True}})
    children = [c for c in _children_of(parent) if c["kind"] != "Pod"]
    parent["spec"]["operatingMode"] = "Suspended"
    parent["status"] = {"phase": "Suspending", "conditions": [_suspended_cond("OperatingModeSuspended")]}
    return sync_request(parent, children=children, related=[RTE])


def resumed() -> dict[str, Any]:
    """Back to Running: a cold pod on the same volume; the Suspended condition turns False now."""
    parent = sandbox("paused", spec={"storage": {"persistent": True}, "operatingMode": "Running", "idleTimeoutSeconds": 600},
                     annotations={C.ANNOTATION_LAST_ACTIVITY: "2026-11-22T08:00:00Z"})
    children = [c for c in _children_of(parent) if c["kind"] != "Pod"]
    parent["status"] = {"phase": "Suspended", "conditions": [_suspended_cond("OperatingModeSuspended")]}
    return sync_request(parent, children=children, related=[RTE])


def idle_suspended() -> dict[str, Any]:
    parent = sandbox("sleepy", spec={"idleTimeoutSeconds": 600}, annotations={C.ANNOTATION_LAST_ACTIVITY: "2026-11-22T11:45:00Z"},
                     created="2026-11-22T10:00:00Z")
    children = _children_of(parent, **running_pod_status())
    parent["status"] = {"phase": "Running", "conditions": [_suspended_cond("Active", "False")]}
    return sync_request(parent, children=children, related=[RTE])


def warm_suspended() -> dict[str, Any]:
    """A warm-served sandbox suspended: warmPodUsed false releases the warm pod to its pool."""
    parent = sandbox("quick", annotations={C.ANNOTATION_USE_WARM_POD: "true"}, spec={"operatingMode": "Suspended"}, status={
        "phase": "Running", "warmPool": "python-pool", "warmPodUsed": True, "warmPodRef": {"name": "python-pool-0", "namespace": "demo"}})
    pool = warm_offer()
    return sync_request(parent, related=[RTE, pool, _warm_pod(parent, pool, "Assigned")])
# Environment (docs/environment.md): plain values, a Secret's key, a whole Secret.
ENV = [{"name": "MODE", "value": "analysis"}, {"name": "OPENAI_API_KEY", "valueFrom": {"secretKeyRef": {"name": "llm-keys", "key": "openai"}}}]
ENV_FROM = [{"secretRef": {"name": "agent-config"}, "prefix": "AGENT_"}]


def environment() -> dict[str, Any]:
    return creating(sandbox("agent", spec={"env": ENV, "envFrom": ENV_FROM}))


def warm_environment_mismatch() -> dict[str, Any]:
    """A sandbox with env and a pool without: a running pod cannot gain variables, so it starts cold."""
    parent = sandbox("keyed", annotations={C.ANNOTATION_USE_WARM_POD: "true"}, spec={"env": ENV})
    return sync_request(parent, related=[RTE, warm_offer()])


def worst_case() -> dict[str, Any]:
    """The largest valid sandbox, running: schema maxima everywhere (128 egress rules of 64 ports,
    a profile repeating them 8 times, 32 writable paths, a 253-character name) and 200 related
    runtimes: over 1 MB on the wire (tests/test_failure_semantics.py; bench/ times it)."""
    from tests import strategies as S  # strategies imports this module
    rules = [{"domain": f"h{i}.example.com", "ports": [{"port": 1 + i * 64 + j} for j in range(64)]} for i in range(128)]
    prof = profile(networkPolicies=[{"type": "egress", "rules": rules}] * 8 + [{"type": "ingress", "rules": [{"cidr": "198.51.100.0/24"}]}] * 8)
    parent = sandbox("x" * 253, spec={"networkAccess": {"egress": rules, "ingress": True}, "profileRef": {"name": "data-science"},
                                      "storage": {"persistent": True}, "filesystem": {"writablePaths": [f"/w/{i}" for i in range(32)]}})
    children, _ = settle(sandbox_sync.sync, S._request(parent, [], [RTE, prof]), pod_status=running_pod_status())
    return S._request(parent, children, [RTE, prof] + [runtime(f"rt-{i}", version=f"3.{i}") for i in range(200)])


SYNC_CASES: dict[str, Callable[[], dict[str, Any]]] = {
    "first-sync": first_sync,
    "minimal": minimal,
    "security-high": security_high,
    "security-custom": security_custom,
    "persistent-storage": persistent_storage,
    "persistent-retained": persistent_retained,
    "egress-rules": egress_rules,
    "ingress": ingress,
    "cpu-pinning": cpu_pinning,
    "profile-applied": profile_applied,
    "observed-running": observed_running,
    "observed-failed": observed_failed,
    "container-restarted": container_restarted,
    "replaced-on-request": replaced_on_request,
    "invalid-new": invalid_new,
    "invalid-with-children": invalid_with_children,
    "invalid-without-default-deny": invalid_without_default_deny,
    "runtime-missing": runtime_missing,
    "runtime-not-validated": runtime_not_validated,
    "lifetime-expired": lifetime_expired,
    "long-name-and-user-labels": long_name_and_user_labels,
    "warm-waiting": warm_waiting,
    "warm-bound": warm_bound,
    "warm-running": warm_running,
    "warm-bound-before-upgrade": warm_bound_before_upgrade,
    "warm-timeout": warm_timeout,
    "warm-incompatible": warm_incompatible,
    "suspending": suspending,
    "suspended": suspended,
    "resumed": resumed,
    "idle-suspended": idle_suspended,
    "warm-suspended": warm_suspended,
    "environment": environment,
    "warm-environment-mismatch": warm_environment_mismatch,
}
# Cases synced with another egress backend than the default: case -> (request, backend).
BACKEND_CASES: dict[str, tuple[Callable[[], dict[str, Any]], str]] = {
    "egress-names-networkpolicy": (egress_names, C.EGRESS_BACKEND_NETWORKPOLICY),
    "egress-names-cilium": (egress_names, C.EGRESS_BACKEND_CILIUM),
    "egress-names-clusternetworkpolicy": (egress_names, C.EGRESS_BACKEND_CLUSTERNETWORKPOLICY),
}
FINALIZE_CASES: dict[str, Callable[[], dict[str, Any]]] = {
    "finalize-terminating": finalize_terminating,
    "finalize-removing": finalize_removing,
    "finalize-done": finalize_done,
}
