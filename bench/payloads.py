"""Realistic hook requests for the benchmark: what Metacontroller really sends.

Observed children carry what the API server adds to every object: uid, resourceVersion,
creationTimestamp, ownerReferences, the defaulted fields of a Pod spec, a kubelet-written status
and metadata.managedFields (server-side field ownership, the bulk of a real object's bytes).
Built on tests/factory.py and tests/sandbox_cases.py so the shapes match the test suite's."""
from __future__ import annotations

import copy
from typing import Any, Callable

from hooks import constants as C
from hooks import sandbox_sync
from hooks.response import LAST_APPLIED
from tests.factory import NOW, fake_uid, observed, runtime, sandbox, sync_request
from tests import sandbox_cases

RTE = runtime()
T_CREATED = "2026-11-22T11:59:55Z"


def fields_v1(obj: Any) -> Any:
    """managedFields[].fieldsV1 of an object in the API server's notation: `f:<key>` for map
    keys, `k:{...}` for list items with a key, `v:<value>` for scalar list items."""
    if isinstance(obj, dict):
        return {f"f:{k}": fields_v1(v) for k, v in obj.items()}
    if isinstance(obj, list):
        out: dict[str, Any] = {}
        for index, item in enumerate(obj):
            if isinstance(item, dict):
                if "name" in item:
                    key = 'k:{"name":"%s"}' % item["name"]
                elif "port" in item:
                    key = 'k:{"port":%s,"protocol":"%s"}' % (item["port"], item.get("protocol", "TCP"))
                elif "type" in item:
                    key = 'k:{"type":"%s"}' % item["type"]
                else:
                    key = f"i:{index}"
                out[key] = {".": {}, **fields_v1(item)}
            else:
                out[f'v:"{item}"'] = {}
        return out
    return {}


def managed_fields(obj: dict[str, Any], applied_by: str = "metacontroller") -> list[dict[str, Any]]:
    applied = {"metadata": {k: v for k, v in obj["metadata"].items() if k in ("labels", "annotations", "ownerReferences")}}
    if "spec" in obj:
        applied["spec"] = obj["spec"]
    entries = [{
        "apiVersion": obj["apiVersion"], "fieldsType": "FieldsV1", "fieldsV1": fields_v1(applied),
        "manager": applied_by, "operation": "Update", "time": T_CREATED,
    }]
    if obj.get("status"):
        entries.append({
            "apiVersion": obj["apiVersion"], "fieldsType": "FieldsV1", "fieldsV1": {"f:status": fields_v1(obj["status"])},
            "manager": "kubelet" if obj["kind"] == "Pod" else "metacontroller", "operation": "Update",
            "subresource": "status", "time": T_CREATED,
        })
    return entries


def _pod_server_defaults(pod: dict[str, Any]) -> None:
    """Fields the API server and admission fill into every Pod spec."""
    spec = pod["spec"]
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("nodeName", "worker-pool-a-7f9c2d-xk2lq")
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    spec.setdefault("priority", 0)
    spec.setdefault("tolerations", [
        {"effect": "NoExecute", "key": "node.kubernetes.io/not-ready", "operator": "Exists", "tolerationSeconds": 300},
        {"effect": "NoExecute", "key": "node.kubernetes.io/unreachable", "operator": "Exists", "tolerationSeconds": 300},
    ])
    for container in spec.get("containers", []):
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        for probe in ("livenessProbe", "readinessProbe"):
            if probe in container:
                container[probe].setdefault("failureThreshold", 3)
                container[probe].setdefault("successThreshold", 1)
                container[probe].setdefault("timeoutSeconds", 1)
                container[probe]["httpGet"].setdefault("scheme", "HTTP")


def running_pod_status(pod: dict[str, Any]) -> dict[str, Any]:
    image = pod["spec"]["containers"][0]["image"]
    at = "2026-11-22T11:59:58Z"
    return {
        "phase": "Running", "hostIP": "10.128.0.17", "hostIPs": [{"ip": "10.128.0.17"}],
        "podIP": "10.244.3.41", "podIPs": [{"ip": "10.244.3.41"}], "qosClass": "Guaranteed",
        "startTime": "2026-11-22T11:59:56Z",
        "conditions": [
            {"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": at}
            for t in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")
        ],
        "containerStatuses": [{
            "name": C.SANDBOX_CONTAINER, "ready": True, "restartCount": 0, "started": True,
            "image": image, "imageID": image.split(":")[0] + "@sha256:" + "3f" * 32,
            "containerID": "containerd://" + "9a" * 32,
            "state": {"running": {"startedAt": "2026-11-22T11:59:57Z"}}, "lastState": {},
            "volumeMounts": [{"name": m["name"], "mountPath": m["mountPath"]} for m in pod["spec"]["containers"][0].get("volumeMounts", [])],
        }],
    }


def realistic(child: dict[str, Any], parent: dict[str, Any]) -> dict[str, Any]:
    """One desired child as the API server would return it once created (and, for a Pod, running)."""
    obj = observed(child, parent)
    meta = obj["metadata"]
    meta["resourceVersion"] = "48213977"
    meta["creationTimestamp"] = T_CREATED
    meta["generation"] = 1
    meta["annotations"][LAST_APPLIED] = _last_applied(child)
    if obj["kind"] == "Pod":
        _pod_server_defaults(obj)
        obj["status"] = running_pod_status(obj)
    elif obj["kind"] == "Service":
        obj["spec"].update({"clusterIP": "10.96.41.7", "clusterIPs": ["10.96.41.7"], "internalTrafficPolicy": "Cluster",
                            "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "sessionAffinity": "None"})
        obj["status"] = {"loadBalancer": {}}
    meta["managedFields"] = managed_fields(obj)
    return obj


def _last_applied(child: dict[str, Any]) -> str:
    import json
    return json.dumps(child, sort_keys=True, separators=(",", ":"))


def sandbox_running() -> dict[str, Any]:
    """A running cold-started sandbox with egress rules: every child observed in the API server's
    form, its Pod Running and Ready (the steady state, by far the most frequent call: every resync
    and every child event). Built the way it happens: sync after sync, each observing what the
    previous one desired (the Pod is desired only once its ServiceAccount is observed), each
    writing its status, until the children and the status stop changing."""
    parent = sandbox("agent-run-7f3a", spec={
        "securityLevel": "standard",
        "resources": {"cpu": "1", "memory": "1Gi"},
        "networkAccess": {"egress": [{"domain": "pypi.org", "ports": [{"port": 443}]},
                                     {"domain": "files.pythonhosted.org"}]},
    }, labels={"team": "research", "agent": "planner"})
    parent["metadata"]["resourceVersion"] = "48214002"
    parent["metadata"]["managedFields"] = managed_fields({**parent, "status": None})
    return settled(parent, related=[RTE])


def settled(parent: dict[str, Any], related: list[dict[str, Any]], rounds: int = 6) -> dict[str, Any]:
    """The request Metacontroller sends once `parent` has settled: every desired child observed as
    `realistic` makes it, and the status the last sync wrote."""
    parent = copy.deepcopy(parent)
    held: dict[tuple[str, str], dict[str, Any]] = {}
    for _ in range(rounds):
        request = sync_request(parent, children=list(held.values()), related=related)
        answer = sandbox_sync.sync(request, NOW)
        wanted = {(c["kind"], c["metadata"]["name"]): c for c in answer["children"]}
        if wanted.keys() == held.keys() and answer["status"] == parent.get("status"):
            return request
        held = {key: held.get(key) or realistic(child, parent) for key, child in wanted.items()}
        parent["status"] = answer["status"]
    raise AssertionError(f"{parent['metadata']['name']}: not settled after {rounds} syncs")


def sandbox_new() -> dict[str, Any]:
    """The first sync of a new sandbox: no children yet."""
    return sandbox_cases.minimal()


def sandbox_invalid_edit() -> dict[str, Any]:
    """A running sandbox edited to an unknown runtime: every observed child is kept as is."""
    request = sandbox_running()
    request["parent"]["spec"]["runtime"] = "cobol:85"
    request["parent"]["metadata"]["generation"] = 2
    return request


def sandbox_warm_bound() -> dict[str, Any]:
    return sandbox_cases.warm_bound()


def sandbox_worst_case() -> dict[str, Any]:
    """The largest valid sandbox (tests/sandbox_cases.py): timed on its own, not one of the
    SANDBOX_CASES whose p99 and floor targets are about the calls Metacontroller makes all day."""
    return sandbox_cases.worst_case()


SANDBOX_CASES: dict[str, Callable[[], dict[str, Any]]] = {
    "running (all children observed)": sandbox_running,
    "new (no children)": sandbox_new,
    "warm pod bound": sandbox_warm_bound,
    "invalid edit (children kept)": sandbox_invalid_edit,
}


# ---------------------------------------------------------------------------------------------
# WarmPool at scale


def warm_pool_parent(size: int) -> dict[str, Any]:
    return {
        "apiVersion": C.API_VERSION, "kind": C.KIND_WARMPOOL,
        "metadata": {"name": "python-pool", "namespace": "demo", "uid": fake_uid("wp", "python-pool"), "generation": 3,
                     "creationTimestamp": "2026-11-22T10:00:00Z", "resourceVersion": "48200000"},
        "spec": {"runtime": "python:3.11", "minSize": size, "maxSize": 0,
                 "autoScaling": {"enabled": True, "targetUtilization": 80, "scaleDownDelay": 300}},
    }


def warm_pool_request(n: int) -> dict[str, Any]:
    """A WarmPool of N observed WarmPods and N related Sandboxes: half the pods assigned to running
    sandboxes, the other half Ready and idle; a quarter of the sandboxes wait for a pod (and get
    one), a quarter run cold. Autoscaling on, so the sizing logic runs over all of them."""
    from tests.warm_cases import running_warm
    from tests.warm_factory import RTE as WRTE, ago, pool, pool_request, waiting_sandbox, warm_pod

    p = pool(minSize=max(1, min(1000, n // 4)),  # the CRD caps minSize at 1000
             autoScaling={"enabled": True, "targetUtilization": 80, "scaleDownDelay": 300},
             status={"lastScaleTime": ago(3600)})
    pool_name = p["metadata"]["name"]
    half = n // 2
    running = [running_warm(f"busy-{i}", pod=sandbox_pod(pool_name, i)) for i in range(half)]
    pods = [warm_pod(p, i, phase="Assigned", assigned_to=s) for i, s in enumerate(running)]
    pods += [warm_pod(p, i, created=ago(3000 - i % 1000)) for i in range(half, n)]
    quarter = (n - half) // 2
    waiting = [waiting_sandbox(f"wait-{i}", created=ago(60 + i % 50)) for i in range(quarter)]
    cold = [sandbox(f"cold-{i}", spec={"runtime": "python-3.11"}, status={"phase": C.PHASE_RUNNING})
            for i in range(n - half - quarter)]
    return pool_request(p, pods, related=[WRTE, *running, *waiting, *cold])


def sandbox_pod(pool_name: str, i: int) -> str:
    from hooks import warmpool_sync
    return warmpool_sync.member_name(pool_name, i)
