"""The WarmPod controller's hooks (CompositeController): sync and finalize.

Children, both owned by the WarmPod (so they live and die with it, and the pool manages WarmPods
only, never Pods):
  * the Pod, named warm-<WarmPod name> (never a sandbox child's name), built by hooks/builders/pod.py — the one place that decides
    pod security — from the WarmPod's spec and the defaults for everything a pool does not set
    (user/group 1000, RuntimeDefault seccomp, /tmp and /workspace writable, no service account
    name: token automount is off anyway). Its spec is a pure function of the WarmPod's spec, which
    the pool never changes, so the only in-place change a Pod ever gets is its labels;
  * a default-deny NetworkPolicy selecting that Pod by its warmpod label. Nothing reaches an idle
    warm pod and it reaches nothing. The sandbox it serves points its own NetworkPolicies
    (additive: they open exactly what the sandbox may do) and its Service at the Pod's serving
    selector, the warmpod-uid label the Pod carries from its creation (status.servingSelector says
    the observed Pod carries it). The warm pod's own policy is a separate child rather than the
    sandbox's, because the sandbox does not exist while the pod waits in the pool.

Preload scripts (WarmPool spec.preloadScripts) run as init containers, in order, before the sandbox
container starts, so a pod is only Ready — and only handed out — after they succeeded. They run
under the same hardening as the sandbox (non-root, read-only root filesystem with the writable
paths as emptyDirs, no capabilities, seccomp) and under the default-deny policy: they cannot
download anything, only warm what the image already holds (import libraries, compile bytecode,
fill /tmp caches). They need /bin/sh in the image. A failing script keeps the pod out of Ready
(the kubelet restarts init containers with back-off), so the pool never hands it out.

Assignment (written by the pool, immutable): the Pod also gets LABEL_SANDBOX_UID / LABEL_SANDBOX_ID,
off the critical path: nothing the sandbox reports waits for them, but ClusterNetworkPolicy
subjects identify a sandbox's pod by that label, and a sandbox adopting a Pod made before the
warmpod-uid label existed selects it by it. A Pod that already carries another sandbox's UID label is never relabelled: the label
is kept and the WarmPod reports Failed, so the pool drops it and no pod ever serves two sandboxes.

status.phase: Pending (pod missing or starting; a Pod made before the warmpod-uid label existed:
also while it is relabelled after assignment), Ready (pod ready, unassigned), Assigned (assigned,
the pod ready and selectable: it carries its serving selector or that sandbox's UID label),
Failed (pod ended, or label conflict), Terminating (WarmPod being deleted)."""
from __future__ import annotations

import copy

import hashlib
import json
from datetime import datetime
from collections.abc import Mapping
from typing import Any, Optional

from . import constants as C
from . import egress_proxy
from .builders import network_policy as np
from .builders.pod import PodShape, build_pod
from .conditions import Condition, find_condition
from .config import DEFAULT_CONFIG, Config
from .meta import MAPPING, dns_label, fmt_time, is_deleting, label_value, labels, name, namespace, parse_time, uid
from .warm import REASON_POD_LABELLED, serving_selector
from .request import SyncRequest
from .response import as_desired, composite_response, finalize_response
from .validators import SpecError, WarmPodSpec, parse_spec

CHILD_KINDS = (C.GVK_POD, C.GVK_NETWORK_POLICY)
PHASE_PENDING = "Pending"
PHASE_READY = "Ready"
PHASE_ASSIGNED = "Assigned"
PHASE_FAILED = "Failed"
PHASE_TERMINATING = "Terminating"
WARM_PREFIX = "warm"  # of the children's names; sandbox children are named sandbox-...


def pod_name(parent: Mapping[str, Any]) -> str:
    """warm-<WarmPod name>: a Pod's name is its hostname (a DNS label), and the prefix keeps it
    apart from every sandbox child (all named sandbox-...): a WarmPool named sandbox-x would
    otherwise name a pod sandbox-x-0, the pod of a sandbox named x-0 in the same namespace."""
    return dns_label(WARM_PREFIX, name(parent))


def policy_name(parent: Mapping[str, Any]) -> str:
    return dns_label(WARM_PREFIX, name(parent), "default-deny")


def selector(parent: Mapping[str, Any]) -> dict[str, str]:
    return {C.LABEL_APP: C.APP_NAME, C.LABEL_WARMPOD: label_value(name(parent))}


def base_labels(parent: Mapping[str, Any], pool: str) -> dict[str, str]:
    return {
        C.LABEL_APP: C.APP_NAME,
        C.LABEL_COMPONENT: C.COMPONENT_WARMPOD,
        C.LABEL_MANAGED_BY: C.MANAGED_BY,
        C.LABEL_WARMPOD: label_value(name(parent)),
        C.LABEL_WARMPOOL: label_value(pool),
    }


def pod_labels(parent: Mapping[str, Any], pool: str) -> dict[str, str]:
    """The Pod's labels before any assignment: with its serving selector's, from the WarmPod's UID
    (fixed for the Pod's life; a Pod made before the label existed gets it in place, a label
    update the API server allows)."""
    out = base_labels(parent, pool)
    if uid(parent):
        out.update(serving_selector(uid(parent)))
    return out


def _policy(parent: Mapping[str, Any], pool: str) -> dict[str, Any]:
    return np.default_deny(policy_name(parent), namespace(parent), base_labels(parent, pool), selector(parent))


def _pool_of(parent: Mapping[str, Any]) -> str:
    spec = parent.get("spec") if isinstance(parent.get("spec"), MAPPING) else {}
    ref = spec.get("poolRef") if isinstance(spec, MAPPING) else None
    pool = ref.get("name") if isinstance(ref, MAPPING) else None
    return pool if isinstance(pool, str) else ""


# ---------------------------------------------------------------------------------------------
# Sync


def sync(request: Mapping[str, Any], now: datetime, config: Config = DEFAULT_CONFIG) -> dict[str, Any]:
    req = SyncRequest.of(request)
    if req.finalizing:
        return _finalize(req, now)
    parent, previous, ns = req.parent, req.previous_status, req.namespace
    pod = req.child(C.GVK_POD, pod_name(parent))
    status: dict[str, Any] = {"podName": pod_name(parent), "podNamespace": ns}

    try:
        spec: WarmPodSpec = parse_spec(WarmPodSpec, dict(parent))
    except SpecError as exc:
        # Cannot happen through the API server (the CRD has the same rules); never delete a pod
        # over it anyway. Failed makes the pool replace an unassigned pod.
        kept = [as_desired(p) for p in req.children_of(C.GVK_POD)] + [_policy(parent, _pool_of(parent))]
        status["phase"] = PHASE_FAILED
        conditions = [Condition("Validated", "False", "InvalidSpec", str(exc)),
                      Condition("Ready", "False", "InvalidSpec", "the warm pod's spec cannot be used")]
        return composite_response(parent, previous, now, status, conditions, kept, None)

    pool = spec.pool_ref.name
    desired_labels = pod_labels(parent, pool)
    annotations: dict[str, str] = {}
    if spec.preload_scripts:
        digest = hashlib.sha256(json.dumps([p.wire() for p in spec.preload_scripts], sort_keys=True).encode()).hexdigest()
        annotations[C.ANNOTATION_PRELOAD_HASH] = f"sha256:{digest}"

    observed_uid = labels(pod).get(C.LABEL_SANDBOX_UID) if pod is not None else None
    wanted_uid = label_value(spec.assignment.sandbox_uid) if spec.assignment else None
    conflict = observed_uid is not None and observed_uid != wanted_uid
    if conflict:
        # Never move a pod from one sandbox to another: keep what it carries.
        assert pod is not None
        desired_labels[C.LABEL_SANDBOX_UID] = label_value(str(observed_uid))
        observed_id = labels(pod).get(C.LABEL_SANDBOX_ID)
        if observed_id is not None:
            desired_labels[C.LABEL_SANDBOX_ID] = label_value(observed_id)
    elif spec.assignment is not None:
        assert wanted_uid is not None
        desired_labels[C.LABEL_SANDBOX_UID] = wanted_uid
        desired_labels[C.LABEL_SANDBOX_ID] = label_value(spec.assignment.sandbox_name)
        annotations[C.ANNOTATION_SANDBOX] = f"{ns}/{spec.assignment.sandbox_name}"

    desired = [
        _as_running(build_pod(pod_name(parent), ns, desired_labels, annotations, _shape(spec, egress_proxy.pod_env(ns, config)), config), pod),
        _policy(parent, pool),
    ]
    selectable = _selectable(parent, pod)
    phase, ready, bound = _phase(pod, spec, conflict, observed_uid, wanted_uid, selectable)
    if selectable:
        # The observed Pod carries it: a sandbox may point its Service and policies here now.
        status["servingSelector"] = serving_selector(uid(parent))
    status["phase"] = phase
    if pod is not None and phase in (PHASE_READY, PHASE_ASSIGNED):
        heartbeat = parse_time(_ready_since(pod))
        if heartbeat is not None:
            status["lastHeartbeat"] = fmt_time(heartbeat)
    conditions = [Condition("Validated", "True", "Valid", f"runtime {spec.runtime}, security level {spec.security_level}"), ready, bound]
    return composite_response(parent, previous, now, status, conditions, desired, None)


def _shape(spec: WarmPodSpec, proxy_env: tuple[dict[str, str], ...]) -> PodShape:
    """Pool settings plus the defaults for everything else; warm.pool_shape_fits admits only
    sandboxes that ask for no more than this."""
    return PodShape(
        image=spec.image,
        security_level=spec.security_level,
        cpu=spec.resources.cpu,
        memory=spec.resources.memory,
        ephemeral_storage=spec.resources.ephemeral_storage,
        writable_paths=C.DEFAULT_WRITABLE_PATHS,
        preload_scripts=tuple((p.name, p.script) for p in spec.preload_scripts),
        env=tuple(e.wire() for e in spec.env or ()) + proxy_env,
        env_from=tuple(e.wire() for e in spec.env_from or ()),
        user_namespaces_supported=spec.user_namespaces is not False,
    )


def _as_running(desired: dict[str, Any], observed: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """The desired Pod with what configuration decides and a running Pod cannot change taken from
    the observed Pod: the Pod is an InPlace child whose spec is immutable, so after the operator
    switches LLMSS_USER_NAMESPACES or the egress backend an update asking for another hostUsers or
    environment would be refused, and with it the relabelling that hands the pod to a sandbox.
    New pods get the current setting."""
    if observed is None or is_deleting(observed):
        return desired
    running = observed.get("spec") if isinstance(observed.get("spec"), Mapping) else {}
    if running.get("hostUsers") is False:
        desired["spec"]["hostUsers"] = False
    else:
        desired["spec"].pop("hostUsers", None)
    running_container = next((c for c in running.get("containers") or []
                              if isinstance(c, Mapping) and c.get("name") == C.SANDBOX_CONTAINER), None)
    container = next(c for c in desired["spec"]["containers"] if c["name"] == C.SANDBOX_CONTAINER)
    for key in ("env", "envFrom"):
        kept = running_container.get(key) if isinstance(running_container, Mapping) else None
        if kept:
            container[key] = copy.deepcopy(kept)
        else:
            container.pop(key, None)
    return desired


def _pod_status(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    status = pod.get("status")
    return status if isinstance(status, MAPPING) else {}


def _ready_condition(pod: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
    return find_condition(_pod_status(pod), "Ready")


def _ready_since(pod: Mapping[str, Any]) -> Any:
    """When the pod became ready (the kubelet's timestamp, not ours: deterministic)."""
    cond = _ready_condition(pod)
    return cond.get("lastTransitionTime") if cond is not None and cond.get("status") == "True" else None


def _selectable(parent: Mapping[str, Any], pod: Optional[Mapping[str, Any]]) -> bool:
    """The observed Pod (alive) carries this WarmPod's serving selector."""
    if pod is None or is_deleting(pod) or not uid(parent):
        return False
    have = labels(pod)
    return all(have.get(k) == v for k, v in serving_selector(uid(parent)).items())


def _phase(pod: Optional[Mapping[str, Any]], spec: WarmPodSpec, conflict: bool, observed_uid: Optional[str],
           wanted_uid: Optional[str], selectable: bool) -> tuple[str, Condition, Condition]:
    """(phase, Ready condition, Assigned condition) from the observed pod."""
    if spec.assignment is None:
        bound = Condition("Assigned", "False", "Unassigned", "waiting in the pool")
    elif conflict:
        bound = Condition("Assigned", "False", "PodLabelConflict",
                          f"the pod already carries sandbox UID {observed_uid}, not {wanted_uid}; it is never relabelled")
    elif observed_uid == wanted_uid:
        bound = Condition("Assigned", "True", REASON_POD_LABELLED, f"serving sandbox {spec.assignment.sandbox_name}")
    elif selectable:
        bound = Condition("Assigned", "True", "PodSelectable",
                          f"serving sandbox {spec.assignment.sandbox_name} (selected by {C.LABEL_WARMPOD_UID}; "
                          f"its identity labels are being added)")
    else:
        bound = Condition("Assigned", "False", "Relabelling", f"labelling the pod for sandbox {spec.assignment.sandbox_name}")

    if pod is None:
        return PHASE_PENDING, Condition("Ready", "False", "PodCreating", "the pod is being created"), bound
    if conflict:
        return PHASE_FAILED, Condition("Ready", "False", "PodLabelConflict", bound.message), bound
    pod_phase = _pod_status(pod).get("phase")
    if pod_phase in ("Failed", "Succeeded"):
        return PHASE_FAILED, Condition("Ready", "False", "PodEnded", f"the pod is {pod_phase}"), bound
    if is_deleting(pod):
        return PHASE_PENDING, Condition("Ready", "False", "PodTerminating", "the pod is being deleted and will be recreated"), bound
    cond = _ready_condition(pod)
    if pod_phase != "Running" or cond is None or cond.get("status") != "True":
        return PHASE_PENDING, Condition("Ready", "False", "PodStarting", "the pod (and its preload scripts) is starting"), bound
    ready = Condition("Ready", "True", "PodReady", "the pod is ready")
    if spec.assignment is None:
        return PHASE_READY, ready, bound
    if bound.status == "True":
        return PHASE_ASSIGNED, ready, bound
    return PHASE_PENDING, ready, bound


# ---------------------------------------------------------------------------------------------
# Finalize


def finalize(request: Mapping[str, Any], now: datetime, config: Config = DEFAULT_CONFIG) -> dict[str, Any]:
    """The pod goes first while the default-deny policy stays in force; the policy goes once no
    pod is observed, and the WarmPod is finalized once neither is."""
    return _finalize(SyncRequest.of(request), now)


def _finalize(req: SyncRequest, now: datetime) -> dict[str, Any]:
    parent, previous = req.parent, req.previous_status
    pods = req.children_of(C.GVK_POD)
    status: dict[str, Any] = {"phase": PHASE_TERMINATING, "podName": pod_name(parent), "podNamespace": namespace(parent)}
    if pods:
        cond = Condition("Ready", "False", "Terminating", "waiting for the pod to terminate")
        return finalize_response(parent, previous, now, status, cond, [_policy(parent, _pool_of(parent))], False)
    policies = req.children_of(C.GVK_NETWORK_POLICY)
    if policies:  # finalized once nothing is left, so a WarmPod of the same name never meets it
        cond = Condition("Ready", "False", "Terminating", "the pod is gone; deleting its network policy")
        return finalize_response(parent, previous, now, status, cond, [], False)
    cond = Condition("Ready", "False", "Terminated", "the pod and its network policy are gone")
    return finalize_response(parent, previous, now, status, cond, [], True)


# ---------------------------------------------------------------------------------------------


