"""Warm pools on the real control plane: the pool fills, serves a sandbox with a pre-started pod,
refills, never hands a used pod to anyone else, recycles idle pods on its TTL, scales down only
after its delay, and lets a warm-served sandbox be deleted."""
from __future__ import annotations

import time
from typing import Any

from hooks import constants as C
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
    # The warm pod now carries the sandbox's identity: its Service and policies select it.
    pod = kube.core("Pod", namespace, status["podName"])
    assert pod is not None and pod["metadata"]["labels"][C.LABEL_SANDBOX_UID] == sb["metadata"]["uid"]
    kube.wait("the Service's endpoint is the warm pod", lambda: endpoint_ips(kube, namespace, "sandbox-quick") == {pod["status"]["podIP"]}, 30)
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


def test_no_free_warm_pod_means_a_cold_start_after_the_wait(kube: Kube, namespace: str, rte: str) -> None:
    kube.apply(pool("empty", namespace, rte, minSize=0, maxSize=0))
    kube.wait("pool validated", lambda: pool_status(kube, namespace, "empty").get("runtimeEnvironment") == rte, 30,
              show=lambda: pool_status(kube, namespace, "empty"))
    kube.apply(warm_sandbox("patient", namespace, rte, "empty"))
    waiting = kube.wait_sandbox(namespace, "patient", "Pending", ready=False, timeout=20)
    assert condition(waiting, "WarmPod")["reason"] == "WaitingForWarmPod"
    started = time.monotonic()
    sb = kube.wait_sandbox(namespace, "patient", "Running", ready=True, timeout=WARM_POD_WAIT_SECONDS + 30)
    assert time.monotonic() - started >= WARM_POD_WAIT_SECONDS - 3
    assert sb["status"]["warmPodUsed"] is False and condition(sb, "WarmPod")["reason"] == "WarmPodWaitTimeout"
    assert sb["status"]["podName"] == "sandbox-patient"


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
    grown = time.monotonic()  # the last scale-up happened just before this
    kube.kubectl("delete", "sandbox", "user-0", "user-1", "-n", namespace, "--wait=false")
    # Idle again: back to minSize, but only scaleDownDelay after the last scale event.
    kube.wait("pool shrunk to minSize", lambda: _counts(kube, namespace, "elastic") == (1, 0), delay + 60,
              show=lambda: pool_status(kube, namespace, "elastic"))
    assert time.monotonic() - grown >= delay - 1, "shrank before the scale-down delay"
    assert pool_status(kube, namespace, "elastic").get("lastScaleTime")


def _counts(kube: Kube, namespace: str, name: str) -> tuple[int, int]:
    status = pool_status(kube, namespace, name)
    return status.get("availablePods", -1), status.get("assignedPods", -1)
