"""Tenant-namespace hardening: the sync hook of a DecoratorController over Namespaces labelled
llmsafespace.dev/tenant=true (docs/tenant-namespaces.md).

Pure function of (request, now, config). Attaches to each tenant namespace:
  - NetworkPolicy llmsafespace-default-deny: every pod, Ingress and Egress denied. Policies are
    additive, so each sandbox's own allowances (API access, DNS, egress rules) still apply; any
    other pod in the namespace has no network until someone allows it.
  - ResourceQuota llmsafespace-quota and LimitRange llmsafespace-limits, sized from the
    namespace's annotations llmsafespace.dev/quota-<key> and llmsafespace.dev/limit-<key>, with
    defaults from hooks/constants.py.
and sets Pod Security Admission labels: enforce=restricted, or enforce=baseline when the
namespace is annotated llmsafespace.dev/gvisor=true; warn and audit stay restricted either way.
With the egress backend "proxy" (LLMSS_EGRESS_BACKEND) it also attaches the namespace's egress
proxy (hooks/builders/egress_proxy.py), configured from the namespace's Sandboxes and the
SandboxProfiles they name, which the customize hook makes related objects.
Under the clusternetworkpolicy egress backend it also attaches, for each sandbox of the namespace
that publishes domain egress rules in its status, that sandbox's ClusterNetworkPolicy
(hooks/builders/cluster_network_policy.py): cluster-scoped, so the Namespace owns it, and it goes
when the sandbox does (the next sync no longer desires it) or with the namespace.

An invalid annotation never blocks hardening: its default is used and the problem is reported in
the annotation llmsafespace.dev/hardening-errors (status llmsafespace.dev/hardening-status =
AppliedWithErrors; Pending until every attachment is observed). Annotations rather than Namespace status: a Namespace's status belongs to the
namespace controller (phase, conditions) and `kubectl get ns -o yaml` shows annotations anyway."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from collections.abc import Mapping
from typing import Any, Optional

from pydantic import ValidationError

from . import constants as C
from . import egress_proxy
from .builders import egress_proxy as proxy_builder
from .builders import cluster_network_policy as cnp
from .config import DEFAULT_CONFIG, Config
from .meta import annotations as annotations_of
from .meta import name, namespace, objects
from .quantity import parse_quantity
from .response import BadRequest
from .sandbox_sync import child_labels, selector
from .validators import NetworkRule

# quota annotation suffix -> ResourceQuota spec.hard keys it sets.
QUOTA_KEYS: dict[str, tuple[str, ...]] = {
    "cpu": ("limits.cpu", "requests.cpu"),
    "memory": ("limits.memory", "requests.memory"),
    "ephemeral-storage": ("limits.ephemeral-storage", "requests.ephemeral-storage"),
    "pods": ("pods",),
    "storage": ("requests.storage",),
    "pvcs": ("persistentvolumeclaims",),
}
COUNT_QUOTAS = ("pods", "pvcs")  # object counts: whole numbers
# Tenants run sandboxes behind ClusterIP Services; nothing in a tenant namespace may open a node
# port or a cloud load balancer. Fixed, not annotatable.
FIXED_QUOTA = {"services.loadbalancers": "0", "services.nodeports": "0"}
CONTAINER_RESOURCES = ("cpu", "memory", "ephemeral-storage")
GVISOR_VALUES = ("true", "false")


@dataclass(frozen=True)
class Sizes:
    quota: dict[str, str]
    limits: dict[str, str]
    errors: tuple[str, ...]


def _quantity(raw: str, whole: bool, allow_zero: bool) -> Optional[str]:
    """The trimmed value if it is a usable quantity, else None."""
    value = raw.strip()
    try:
        amount = parse_quantity(value)
    except ValueError:
        return None
    if amount < 0 or (amount == 0 and not allow_zero) or value.startswith("+"):
        return None
    if whole and not value.isdigit():
        return None
    return value


def read_sizes(annotations: Mapping[str, str]) -> Sizes:
    quota = dict(C.DEFAULT_TENANT_QUOTA)
    limits = dict(C.DEFAULT_TENANT_LIMITS)
    explicit_limits: set[str] = set()
    errors: list[str] = []
    for key in sorted(annotations):
        raw = annotations[key]
        if key.startswith(C.ANNOTATION_QUOTA_PREFIX):
            suffix, table, is_quota = key[len(C.ANNOTATION_QUOTA_PREFIX):], quota, True
        elif key.startswith(C.ANNOTATION_LIMIT_PREFIX):
            suffix, table, is_quota = key[len(C.ANNOTATION_LIMIT_PREFIX):], limits, False
        else:
            continue
        if suffix not in table:
            errors.append(f"{key}: unknown setting (known: {', '.join(sorted(table))})")
            continue
        # A zero quota freezes a namespace on purpose; a zero limit would make every pod unschedulable.
        value = _quantity(raw, whole=suffix in COUNT_QUOTAS, allow_zero=is_quota)
        if value is None:
            if suffix in COUNT_QUOTAS:
                kind = "a whole number (e.g. 20)"
            else:
                kind = ("a non-negative" if is_quota else "a positive") + " quantity (e.g. 4, 500m, 8Gi)"
            errors.append(f"{key}: {raw!r} is not {kind}; using {table[suffix]}")
            continue
        table[suffix] = value
        if not is_quota:
            explicit_limits.add(suffix)
    errors.extend(_reconcile_limits(limits, explicit_limits))
    return Sizes(quota, limits, tuple(errors))


def _reconcile_limits(limits: dict[str, str], explicit: set[str]) -> list[str]:
    """The API server rejects a LimitRange unless defaultRequest <= default <= max. Lower a
    default to the max (and a default request to the default): the stricter reading wins, and an
    explicit value that had to be lowered is reported."""
    errors: list[str] = []
    for resource in CONTAINER_RESOURCES:
        chain = (f"max-{resource}", f"default-{resource}", f"default-request-{resource}")
        for upper, lower in zip(chain, chain[1:]):
            if parse_quantity(limits[lower]) > parse_quantity(limits[upper]):
                if lower in explicit:
                    errors.append(
                        f"{C.ANNOTATION_LIMIT_PREFIX}{lower}: {limits[lower]} exceeds "
                        f"{C.ANNOTATION_LIMIT_PREFIX}{upper} {limits[upper]}; using {limits[upper]}"
                    )
                limits[lower] = limits[upper]
    return errors


def _metadata(obj_name: str, ns: str) -> dict[str, Any]:
    return {
        "name": obj_name,
        "namespace": ns,
        "labels": {
            C.LABEL_APP: C.APP_NAME,
            C.LABEL_COMPONENT: C.COMPONENT_TENANT_NAMESPACE,
            C.LABEL_MANAGED_BY: C.MANAGED_BY,
        },
    }


def default_deny(ns: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(C.TENANT_POLICY_NAME, ns),
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
    }


def resource_quota(ns: str, quota: Mapping[str, str]) -> dict[str, Any]:
    hard = dict(FIXED_QUOTA)
    for suffix, keys in QUOTA_KEYS.items():
        for key in keys:
            hard[key] = quota[suffix]
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": _metadata(C.TENANT_QUOTA_NAME, ns),
        "spec": {"hard": dict(sorted(hard.items()))},
    }


def limit_range(ns: str, limits: Mapping[str, str]) -> dict[str, Any]:
    def per(prefix: str) -> dict[str, str]:
        return {r: limits[f"{prefix}{r}"] for r in CONTAINER_RESOURCES}

    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": _metadata(C.TENANT_LIMITS_NAME, ns),
        "spec": {"limits": [
            # Containers without limits/requests get defaults; a quota on limits.* and requests.*
            # would otherwise reject them.
            {"type": "Container", "default": per("default-"), "defaultRequest": per("default-request-"), "max": per("max-")},
            {"type": "PersistentVolumeClaim", "max": {"storage": limits["max-storage"]}},
        ]},
    }


def psa_labels(gvisor: bool) -> dict[str, str]:
    """Pod Security Admission. Restricted is enforced unless the namespace opted into baseline for
    gVisor workloads (why: docs/tenant-namespaces.md); warn and audit stay restricted, so a pod that
    only baseline admits is still visible."""
    enforce = C.PSA_BASELINE if gvisor else C.PSA_RESTRICTED
    out: dict[str, str] = {}
    for mode, level in (("enforce", enforce), ("warn", C.PSA_RESTRICTED), ("audit", C.PSA_RESTRICTED)):
        out[f"{C.PSA_PREFIX}{mode}"] = level
        out[f"{C.PSA_PREFIX}{mode}-version"] = C.PSA_VERSION
    return dict(sorted(out.items()))


def _all_observed(desired: list[dict[str, Any]], observed: Any) -> bool:
    kinds = {C.gvk_key(a["kind"], a["apiVersion"]) for a in desired}
    seen = {(o.get("kind"), name(o)) for gvk in sorted(kinds) for o in objects(observed, gvk)}
    return all((a["kind"], a["metadata"]["name"]) in seen for a in desired)


def customize(request: Mapping[str, Any], now: Optional[datetime] = None, config: Config = DEFAULT_CONFIG) -> dict[str, Any]:
    """Related objects: none under the networkpolicy and cilium backends. Under clusternetworkpolicy,
    the namespace's Sandboxes (their status carries the egress rules; every sandbox change then
    syncs its namespace); under proxy, those and every SandboxProfile (a sandbox may name a profile
    of another namespace, and the hook cannot know which before it sees the sandboxes; profiles are
    few). Depends only on the namespace's name and the config, as Metacontroller caches the answer."""
    parent = request.get("parent")
    if not isinstance(parent, Mapping) or not name(parent):
        raise BadRequest("request.parent must be a Namespace with a name")
    sandboxes = {"apiVersion": C.API_VERSION, "resource": "sandboxes", "namespace": name(parent)}
    if config.egress_backend == C.EGRESS_BACKEND_CLUSTERNETWORKPOLICY:
        return {"relatedResources": [sandboxes]}
    if config.egress_backend == C.EGRESS_BACKEND_PROXY:
        return {"relatedResources": [sandboxes, {"apiVersion": C.API_VERSION, "resource": "sandboxprofiles"}]}
    return {"relatedResources": []}


def _egress_proxy(ns: str, related: Any, config: Config) -> list[dict[str, Any]]:
    """The egress proxy's attachments (backend "proxy" only)."""
    if config.egress_backend != C.EGRESS_BACKEND_PROXY:
        return []
    return proxy_builder.attachments(ns, egress_proxy.namespace_allow_list(ns, related), config)


def sandbox_egress_policies(ns: str, related: Any, config: Config) -> tuple[list[dict[str, Any]], list[str]]:
    """The ClusterNetworkPolicies of the namespace's sandboxes, and why any sandbox has none
    although its status lists rules (the sandbox hook refuses such specs; a status written by
    anything else is not trusted further than the schema and the models)."""
    if config.egress_backend != C.EGRESS_BACKEND_CLUSTERNETWORKPOLICY:
        return [], []
    policies: list[dict[str, Any]] = []
    errors: list[str] = []
    for sandbox in objects(related, C.GVK_SANDBOX):
        status = sandbox.get("status") if isinstance(sandbox.get("status"), Mapping) else {}
        raw = status.get("egress")
        if namespace(sandbox) != ns or not isinstance(raw, list) or not raw:
            continue
        try:
            rules = [NetworkRule.model_validate(r) for r in raw]
            policy = cnp.sandbox_policy(ns, str(sandbox["metadata"].get("uid") or ""), child_labels(sandbox), selector(sandbox),
                                        rules, config)
        except (ValidationError, cnp.TooManyRules) as exc:
            errors.append(f"sandbox {name(sandbox)}: status.egress cannot be enforced, no ClusterNetworkPolicy: {exc}")
            continue
        if policy is not None and sandbox["metadata"].get("uid"):
            policies.append(policy)
    return policies, errors


def sync(request: Mapping[str, Any], now: datetime, config: Config = DEFAULT_CONFIG) -> dict[str, Any]:
    target = request.get("object")
    if not isinstance(target, Mapping) or not isinstance(target.get("metadata"), Mapping):
        raise BadRequest("request.object must be an object with metadata")
    if target.get("kind") != "Namespace" or target.get("apiVersion") != "v1" or not name(target):
        raise BadRequest("request.object must be a v1 Namespace with a name")
    ns = name(target)
    annotations = annotations_of(target)
    sizes = read_sizes(annotations)
    errors = list(sizes.errors)
    gvisor_raw = annotations.get(C.ANNOTATION_GVISOR)
    if gvisor_raw is not None and gvisor_raw not in GVISOR_VALUES:
        errors.append(f"{C.ANNOTATION_GVISOR}: {gvisor_raw!r} is not \"true\" or \"false\"; enforcing restricted")
    gvisor = gvisor_raw == "true"
    # The namespace's own attachments (the egress proxy is one) decide "Applied"; per-sandbox
    # ClusterNetworkPolicies come and go with sandboxes and do not.
    hardening = [default_deny(ns), resource_quota(ns, sizes.quota), limit_range(ns, sizes.limits),
                 *_egress_proxy(ns, request.get("related"), config)]
    egress_policies, egress_errors = sandbox_egress_policies(ns, request.get("related"), config)
    errors.extend(egress_errors)
    attachments = sorted(hardening + egress_policies, key=lambda a: (a["apiVersion"], a["kind"], a["metadata"]["name"]))
    if not _all_observed(hardening, request.get("attachments")):
        # Metacontroller writes the annotations and creates the attachments in no particular
        # order: "Applied" only once every attachment exists (their creation syncs us again).
        status = C.HARDENING_PENDING
    else:
        status = C.HARDENING_APPLIED_WITH_ERRORS if errors else C.HARDENING_APPLIED
    return {
        "labels": psa_labels(gvisor),
        "annotations": {
            C.ANNOTATION_HARDENING_STATUS: status,
            # null removes the key once the namespace's annotations are fixed.
            C.ANNOTATION_HARDENING_ERRORS: "; ".join(errors) if errors else None,
        },
        "attachments": attachments,
    }

