"""Warm pools on the real control plane: the pool fills, serves a sandbox with a pre-started pod,
refills, never hands a used pod to anyone else, recycles idle pods on its TTL, scales down only
after its delay, and lets a warm-served sandbox be deleted."""
from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from hooks import constants as C
from tests.e2e.fakenode import FAIL_ANNOTATION
from tests.e2e.kube import Kube, condition
from tests.e2e.objects import WARM_POD_WAIT_SECONDS, endpoint_ips, pool, pool_status, warm_pods, warm_sandbox



def wait_available(kube: Kube, namespace: str, name: str, count: int, timeout: float = 60) -> dict[str, Any]:
    return kube.wait(f"pool {name} with {count} available", lambda: pool_status(kube, namespace, name).get("availablePods") == count
                     and pool_status(kube, namespace, name), timeout, show=lambda: pool_status(kube, namespace, name))


def test_a_warm_pod_serves_a_sandbox_and_is_never_reused(kube: Kube, namespace: str, rte: str) -> None:
    kube.apply(pool("python", namespace, rte))
    wait_available(kube, namespace, "python", 2)
    idle = {w["metadata"]["name"]: w["status"]["podName"] for w in warm_pods(kube, namespace, "python")}

    started = time.monotonic()
    kube.apply(warm_sandbox("quick", namespace, rte, "python"))
    sb = kube.wait_sandbox(namespace, "quick", "Running", ready=True, timeout=30)
    elapsed = time.monotonic() - started
    status = sb["status"]
    assert status["warmPodUsed"] is True and status["warmPool"] == "python"
    assert status["warmPodRef"]["name"] in idle and status["podName"] == idle[status["warmPodRef"]["name"]]
    assert condition(sb, "WarmPod")["reason"] == "WarmPodBound"
    assert kube.core("Pod", namespace, "sandbox-quick") is None, "started cold next to its warm pod"
    # Running means its Service and policies select the warm pod, by the label the pod carries
    # since its creation (its WarmPod's UID): no relabel was waited for.
    pod = kube.core("Pod", namespace, status["podName"])
    warm_pod = kube.custom("WarmPod", namespace, status["warmPodRef"]["name"])
    assert pod is not None and warm_pod is not None
    serving = {C.LABEL_APP: C.APP_NAME, C.LABEL_WARMPOD_UID: warm_pod["metadata"]["uid"]}
    assert pod["metadata"]["labels"][C.LABEL_WARMPOD_UID] == warm_pod["metadata"]["uid"]
    assert (kube.core("Service", namespace, "sandbox-quick") or {})["spec"]["selector"] == serving
    for policy in kube.list("NetworkPolicy", namespace, f"{C.LABEL_SANDBOX_UID}={sb['metadata']['uid']}"):
        assert policy["spec"]["podSelector"]["matchLabels"] == serving, policy["metadata"]["name"]
    kube.wait("the Service's endpoint is the warm pod", lambda: endpoint_ips(kube, namespace, "sandbox-quick") == {pod["status"]["podIP"]}, 30)
    # The sandbox's identity labels follow, off the critical path (the gateway checks them).
    kube.wait("the warm pod labelled with the sandbox's UID", lambda: ((kube.core("Pod", namespace, status["podName"]) or {})
              .get("metadata", {}).get("labels") or {}).get(C.LABEL_SANDBOX_UID) == sb["metadata"]["uid"], 30)
    print(f"\nwarm start: apply -> Running in {elapsed:.2f}s")

    # The pool refills to its minimum of idle pods while one is assigned.
    kube.wait("pool refilled", lambda: pool_status(kube, namespace, "python").get("availablePods") == 2
              and pool_status(kube, namespace, "python").get("assignedPods") == 1, 60, show=lambda: pool_status(kube, namespace, "python"))

    # Deleting the sandbox deletes its warm pod: never returned to the pool.
    used_wp, used_pod_uid = status["warmPodRef"]["name"], pod["metadata"]["uid"]
    kube.kubectl("delete", "sandbox", "quick", "-n", namespace, "--wait=false")
    kube.wait_gone("Sandbox", namespace, "quick")
    kube.wait_gone("WarmPod", namespace, used_wp)
    kube.wait("its pod gone", lambda: (kube.core("Pod", namespace, status["podName"]) or {}).get("metadata", {}).get("uid") != used_pod_uid, 30)
    wait_available(kube, namespace, "python", 2)
    for w in warm_pods(kube, namespace, "python"):
        assert "assignment" not in w["spec"], w["metadata"]["name"]

    # A second sandbox gets another pod, never the used one.
    kube.apply(warm_sandbox("second", namespace, rte, "python"))
    second = kube.wait_sandbox(namespace, "second", "Running", ready=True, timeout=30)
    assert second["status"]["warmPodUsed"] is True
    served = kube.core("Pod", namespace, second["status"]["podName"])
    assert served is not None and served["metadata"]["uid"] != used_pod_uid


def test_a_pool_of_min_size_zero_serves_a_sandbox(kube: Kube, namespace: str, rte: str) -> None:
    """Scale from zero: a waiting sandbox is demand, so the empty pool starts a pod for it, binds
    it once Ready, and keeps nothing idle afterwards."""
    kube.apply(pool("empty", namespace, rte, minSize=0, maxSize=0))
    kube.wait("pool validated", lambda: pool_status(kube, namespace, "empty").get("runtimeEnvironment") == rte, 30,
              show=lambda: pool_status(kube, namespace, "empty"))
    assert warm_pods(kube, namespace, "empty") == []
    kube.apply(warm_sandbox("first", namespace, rte, "empty"))
    sb = kube.wait_sandbox(namespace, "first", "Running", ready=True, timeout=WARM_POD_WAIT_SECONDS + 30)
    assert sb["status"]["warmPodUsed"] is True and condition(sb, "WarmPod")["reason"] == "WarmPodBound", sb["status"]
    assert kube.core("Pod", namespace, "sandbox-first") is None
    kube.wait("nothing idle kept", lambda: _counts(kube, namespace, "empty") == (0, 1)
              and pool_status(kube, namespace, "empty").get("pendingPods") == 0, 30, show=lambda: pool_status(kube, namespace, "empty"))


def test_a_warm_pod_that_never_gets_ready_means_a_cold_start_after_the_wait(kube: Kube, namespace: str, rte: str) -> None:
    kube.apply(pool("stuck", namespace, rte, minSize=1, maxSize=1))
    wait_available(kube, namespace, "stuck", 1)
    (member,) = warm_pods(kube, namespace, "stuck")
    # The pool's only pod stops being ready (its image can no longer be pulled): it is kept as
    # pending, and it covers the waiting sandbox's demand, so nothing else starts.
    kube.kubectl("annotate", "pod", member["status"]["podName"], "-n", namespace, f"{FAIL_ANNOTATION}=ImagePullBackOff")
    kube.wait("the warm pod not ready", lambda: _counts(kube, namespace, "stuck")[0] == 0, 30, show=lambda: pool_status(kube, namespace, "stuck"))
    kube.apply(warm_sandbox("patient", namespace, rte, "stuck"))
    waiting = kube.wait_sandbox(namespace, "patient", "Pending", ready=False, timeout=20)
    assert condition(waiting, "WarmPod")["reason"] == "WaitingForWarmPod"
    started = time.monotonic()
    sb = kube.wait_sandbox(namespace, "patient", "Running", ready=True, timeout=WARM_POD_WAIT_SECONDS + 30)
    assert time.monotonic() - started >= WARM_POD_WAIT_SECONDS - 3
    assert sb["status"]["warmPodUsed"] is False and condition(sb, "WarmPod")["reason"] == "WarmPodWaitTimeout"
    assert sb["status"]["podName"] == "sandbox-patient"


def test_deleting_a_warm_served_sandbox_completes_after_its_runtime_is_deleted(kube: Kube, namespace: str, rte: str) -> None:
    """The pool cannot serve without its runtime, but it still releases the warm pod of a
    sandbox being deleted: the deletion completes and the pod (running the user's code) goes."""
    kube.apply(pool("orphaned", namespace, rte, minSize=1))
    wait_available(kube, namespace, "orphaned", 1)
    kube.apply(warm_sandbox("user", namespace, rte, "orphaned"))
    sb = kube.wait_sandbox(namespace, "user", "Running", ready=True, timeout=30)
    assert sb["status"]["warmPodUsed"] is True
    used_wp, pod_name = sb["status"]["warmPodRef"]["name"], sb["status"]["podName"]
    kube.kubectl("delete", "runtimeenvironment", rte, "--wait=false")
    kube.wait("the pool reports its runtime missing", lambda: (condition(kube.custom("WarmPool", namespace, "orphaned") or {}, "Validated") or {})
              .get("status") == "False", 30, show=lambda: pool_status(kube, namespace, "orphaned"))
    kube.kubectl("delete", "sandbox", "user", "-n", namespace, "--wait=false")
    kube.wait_gone("Sandbox", namespace, "user", timeout=60)
    kube.wait_gone("WarmPod", namespace, used_wp)
    kube.wait("its pod gone", lambda: kube.core("Pod", namespace, pod_name) is None, 30)
    # The idle pod stays: an unusable pool deletes nothing it might serve with once repaired.
    assert [w for w in warm_pods(kube, namespace, "orphaned") if "assignment" not in w["spec"]]


def test_idle_pods_are_recycled_on_their_ttl(kube: Kube, namespace: str, rte: str) -> None:
    kube.apply(pool("fresh", namespace, rte, minSize=1, maxSize=3, ttl=5))
    wait_available(kube, namespace, "fresh", 1)
    first = {w["metadata"]["uid"] for w in warm_pods(kube, namespace, "fresh")}
    kube.wait("the idle pod replaced after its TTL",
              lambda: _available_uids(kube, namespace, "fresh") and not (_available_uids(kube, namespace, "fresh") & first), 40,
              show=lambda: [(w["metadata"]["name"], w.get("status", {}).get("phase")) for w in warm_pods(kube, namespace, "fresh")])


def _available_uids(kube: Kube, namespace: str, pool_name: str) -> set[str]:
    return {w["metadata"]["uid"] for w in warm_pods(kube, namespace, pool_name)
            if (w.get("status") or {}).get("phase") == "Ready" and "assignment" not in w["spec"]}


def test_pool_grows_with_demand_and_shrinks_only_after_its_delay(kube: Kube, namespace: str, rte: str) -> None:
    delay = 6
    kube.apply(pool("elastic", namespace, rte, minSize=1, maxSize=6,
                    autoScaling={"enabled": True, "targetUtilization": 50, "scaleDownDelay": delay}))
    wait_available(kube, namespace, "elastic", 1)
    kube.apply(*(warm_sandbox(f"user-{i}", namespace, rte, "elastic") for i in range(2)))
    for i in range(2):
        kube.wait_sandbox(namespace, f"user-{i}", "Running", ready=True, timeout=WARM_POD_WAIT_SECONDS + 30)
    # 50% utilisation with 2 assigned: 4 pods in all, so 2 idle.
    kube.wait("pool grown to 2 idle", lambda: _counts(kube, namespace, "elastic") == (2, 2), 60,
              show=lambda: pool_status(kube, namespace, "elastic"))
    # The last scale-up: with the waiting sandbox counted as demand it comes before the pods are
    # Ready, so take the pool's word for it (same clock: the control plane runs on this machine;
    # the stamp has whole seconds).
    grown = datetime.fromisoformat(pool_status(kube, namespace, "elastic")["lastScaleTime"].replace("Z", "+00:00")).timestamp()
    kube.kubectl("delete", "sandbox", "user-0", "user-1", "-n", namespace, "--wait=false")
    # Idle again: back to minSize, but only scaleDownDelay after the last scale event.
    kube.wait("pool shrunk to minSize", lambda: _counts(kube, namespace, "elastic") == (1, 0), delay + 60,
              show=lambda: pool_status(kube, namespace, "elastic"))
    assert time.time() - grown >= delay - 1, "shrank before the scale-down delay"
    assert pool_status(kube, namespace, "elastic").get("lastScaleTime")


def _counts(kube: Kube, namespace: str, name: str) -> tuple[int, int]:
    status = pool_status(kube, namespace, name)
    return status.get("availablePods", -1), status.get("assignedPods", -1)
