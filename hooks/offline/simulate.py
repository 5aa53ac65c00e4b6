"""An in-memory Metacontroller + API server + kubelet: convergence tests of the hooks
(tests/test_convergence*.py) and the `llmsafespace render` command (hooks/offline/cli.py) run the hooks
through it exactly as a cluster would call them.

What it models (notes/metacontroller.md sections 1, 3, 4.1, 5):
  * controllers are read from metacontroller/*.yaml (CompositeControllers, and the tenant-namespace
    DecoratorController: its selected objects get `attachments` and labels/annotations) (child kinds, update strategies, which hooks
    exist) and their webhook paths are served by hooks.server.routes.ROUTES, called in-process with the
    harness clock; requests and responses go through JSON like on the wire;
  * a parent is synced when what it observes changed (its own object, its children, its related
    objects: resourceVersions) or when its resyncAfterSeconds deadline passed — never otherwise,
    so a missing resyncAfterSeconds shows up as a stuck test;
  * children = objects owned by the parent (controller ownerReference); related = customize rules
    (cached per parent UID and generation) with names / namespace / labelSelector selection;
  * stale caches, one per kind like informers: each read refreshes a kind's cache from the store
    except with probability `stale`, so a cache lags but never goes back in time, and the parent,
    children and related objects of one sync may come from caches of different ages. Creates of existing names are
    swallowed (AlreadyExists), deletes carry a UID precondition, InPlace updates are PUTs carrying
    the observed resourceVersion (a stale one fails with a conflict and changes nothing);
  * stored form: what the API server stores differs from what was sent where it drops false plain
    booleans of a Pod; an InPlace child that keeps asking for them costs a no-op PUT on every sync
    (`stats.noop_updates`, seen on a real control plane);
  * InPlace = simplified kubectl-apply 3-way merge with the last applied configuration; OnDelete
    never updates; a Pod update that touches the spec is Forbidden (Pods are immutable); a WarmPod
    update that changes or removes spec.assignment is rejected (the CRD's transition rule);
  * admission: creating a Pod that names a ServiceAccount which does not exist yet is refused, as
    the API server does (recorded in `violations`);
  * finalize hooks: Metacontroller's finalizer is added on the first sync; a deleted parent gets
    finalize calls until finalized (children of a finalized answer are not touched), then disappears; garbage collection deletes objects whose
    controller owner is gone (background propagation), `gc_lag` rounds after it went;
  * kubelet: Pods go Pending -> Running -> Ready, one step per round with probability `kubelet_speed`;
    deleted Pods (graceful) disappear one round later;
  * optional faults (off by default): a child's create, update or delete fails with probability
    `write_failures` (a transient API error: Metacontroller still writes the parent's status, as
    it does, and retries the parent at once); a due sync waits for a later round with
    probability `delay` (its event delivered late), so hooks of different controllers run in
    other orders than the round's shuffle gives.

Invariants are checked after every round (`check`); violations of the API server's rules by a
hook (Forbidden pod updates, assignment changes based on a current view) are recorded in
`violations` and must stay empty."""
from __future__ import annotations

import copy
import hashlib
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional
from urllib.parse import urlparse


from hooks import constants as C
from hooks.server import jsonio
from hooks.config import Config
from hooks.manifests import controller_docs
from hooks.meta import fmt_time
from hooks.server.routes import ROUTES

ROOT = Path(__file__).resolve().parents[2]
KIND_OF = {
    "pods": "Pod", "services": "Service", "serviceaccounts": "ServiceAccount", "persistentvolumeclaims": "PersistentVolumeClaim",
    "networkpolicies": "NetworkPolicy", "sandboxes": C.KIND_SANDBOX, "warmpools": C.KIND_WARMPOOL, "warmpods": C.KIND_WARMPOD, "warmpooloffers": C.KIND_WARMPOOL_OFFER,
    "runtimeenvironments": C.KIND_RUNTIME, "sandboxprofiles": C.KIND_PROFILE,
    "namespaces": "Namespace", "resourcequotas": "ResourceQuota", "limitranges": "LimitRange", "nodes": "Node",
    # Egress backends' kinds (metacontroller/egress/): cilium, clusternetworkpolicy and the proxy's.
    "ciliumnetworkpolicies": "CiliumNetworkPolicy", "clusternetworkpolicies": "ClusterNetworkPolicy",
    "configmaps": "ConfigMap", "deployments": "Deployment",
}
CLUSTER_SCOPED = {C.KIND_RUNTIME, "Namespace", "ClusterNetworkPolicy", "Node"}
LAST_APPLIED = "metacontroller.k8s.io/last-applied-configuration"
SYSTEM_METADATA = ("uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp", "managedFields", "selfLink")
Key = tuple[str, str, str]  # kind, namespace, name
Hook = Callable[[Mapping[str, Any], datetime, Config], dict[str, Any]]


@dataclass(frozen=True)
class Controller:
    name: str
    parent_kind: str
    child_api: dict[str, str]  # kind -> apiVersion
    strategy: dict[str, str]  # kind -> update method
    sync: Hook
    finalize: Optional[Hook]
    customize: Optional[Hook]
    paths: dict[str, str] = field(default_factory=dict)  # hook (sync, finalize, customize) -> route path
    # DecoratorController: the parent is `object`, children are `attachments`, and only objects
    # matching `selector` (a label selector) are synced.
    decorator: bool = False
    selector: Optional[dict[str, Any]] = None

    @property
    def finalizer(self) -> str:
        return f"metacontroller.io/{'decorator' if self.decorator else 'composite'}controller-{self.name}"


def load_controllers(parent_kinds: Iterable[str], backend: Optional[str] = None) -> list[Controller]:
    """The controllers of `parent_kinds` from metacontroller/*.yaml, as the egress `backend`
    deploys them (hooks/manifests.py; None: the files as they are)."""
    wanted = set(parent_kinds)
    out = []
    for _path, doc in controller_docs(backend):
        if doc.get("kind") not in ("CompositeController", "DecoratorController"):
            continue
        decorator = doc["kind"] == "DecoratorController"
        if decorator:
            assert len(doc["spec"]["resources"]) == 1, "a decorator of one resource is modelled"
            parent_rule = doc["spec"]["resources"][0]
        else:
            parent_rule = doc["spec"]["parentResource"]
        kind = KIND_OF[parent_rule["resource"]]
        if kind not in wanted:
            continue
        paths = {n: urlparse(h["webhook"]["url"]).path for n, h in doc["spec"]["hooks"].items()}
        hooks = {n: ROUTES[path].function for n, path in paths.items()}
        children = doc["spec"].get("attachments" if decorator else "childResources") or []
        out.append(Controller(
            name=doc["metadata"]["name"], parent_kind=kind,
            child_api={KIND_OF[c["resource"]]: c["apiVersion"] for c in children},
            strategy={KIND_OF[c["resource"]]: (c.get("updateStrategy") or {}).get("method", "OnDelete") for c in children},
            sync=hooks["sync"], finalize=hooks.get("finalize"), customize=hooks.get("customize"),
            paths=paths, decorator=decorator, selector=parent_rule.get("labelSelector") if decorator else None,
        ))
    assert {c.parent_kind for c in out} == wanted, f"no manifest for {wanted - {c.parent_kind for c in out}}"
    return out


def key_of(obj: Mapping[str, Any]) -> Key:
    meta = obj["metadata"]
    return obj["kind"], meta.get("namespace", "") or "", meta["name"]


def matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        op, k, values = expr["operator"], expr["key"], expr.get("values") or []
        if (op == "In" and labels.get(k) not in values) or (op == "NotIn" and labels.get(k) in values) \
                or (op == "Exists" and k not in labels) or (op == "DoesNotExist" and k in labels):
            return False
    return True


def three_way(observed: Any, last: Any, desired: Any) -> Any:
    """kubectl-apply-like merge: desired wins, fields we applied before and no longer want are
    removed, fields others set are kept; lists are replaced."""
    if isinstance(observed, dict) and isinstance(desired, dict):
        last = last if isinstance(last, dict) else {}
        out = {k: v for k, v in observed.items() if not (k in last and k not in desired)}
        for k, v in desired.items():
            out[k] = three_way(observed.get(k), last.get(k), v)
        return out
    return copy.deepcopy(desired)


# Plain booleans with omitempty: the API server stores false as absent.
_POD_SPEC_DROPPED_WHEN_FALSE = ("hostNetwork", "hostPID", "hostIPC")
_CONTAINER_DROPPED_WHEN_FALSE = ("stdin", "stdinOnce", "tty")


def stored_form(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `obj` as the API server stores it, as far as modelled: false values of the Pod
    fields that are plain booleans (hostNetwork/PID/IPC, a container's stdin/tty) are dropped."""
    out = copy.deepcopy(dict(obj))
    if out.get("kind") == "Pod" and isinstance(out.get("spec"), dict):
        spec = out["spec"]
        for key in _POD_SPEC_DROPPED_WHEN_FALSE:
            if spec.get(key) is False:
                del spec[key]
        for container in (spec.get("containers") or []) + (spec.get("initContainers") or []):
            for key in _CONTAINER_DROPPED_WHEN_FALSE:
                if isinstance(container, dict) and container.get(key) is False:
                    del container[key]
    return out


def _ready(status: Mapping[str, Any]) -> str:
    """A pod status's Ready condition ("True", "False"; "False" when absent: a pod given to
    `llmsafespace render` as Running with no conditions gets Ready in the next step)."""
    for cond in status.get("conditions") or []:
        if isinstance(cond, Mapping) and cond.get("type") == "Ready":
            return str(cond.get("status"))
    return "False"


def _without_status(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != "status"}


@dataclass(frozen=True)
class Exchange:
    """One hook call as it went over the wire: the route, the clock, request and response."""

    path: str
    now: datetime
    request: dict[str, Any]
    response: dict[str, Any]


@dataclass
class Stats:
    hook_calls: int = 0
    calls: dict[str, int] = field(default_factory=dict)  # controller name -> hook calls
    creates: int = 0
    updates: int = 0
    noop_updates: int = 0  # PUTs the API server turned into nothing: a child never in canonical form
    deletes: int = 0
    conflicts: int = 0
    already_exists: int = 0
    stale_reads: int = 0
    failed_writes: int = 0  # child writes failed on purpose (`write_failures`)
    delayed: int = 0  # syncs put off to a later round (`delay`)


class Harness:
    def __init__(self, controllers: list[Controller], config: Config, start: datetime, seed: int,
                 stale: float = 0.0, step: float = 2.0, kubelet_speed: float = 0.7, gc_lag: int = 0,
                 named_uids: bool = False, write_failures: float = 0.0, delay: float = 0.0) -> None:
        self.controllers = controllers
        self.config = config
        self.clock = start
        self.rng = random.Random(seed)
        self.seed = seed
        self.stale = stale
        self.step = step
        self.kubelet_speed = kubelet_speed
        # Rounds the garbage collector takes to notice a gone owner (kube-controller-manager
        # re-reads the resource types it tracks every 30 s: children of a CRD installed after it
        # started waited that long on a real control plane).
        self.gc_lag = gc_lag
        self.write_failures = write_failures
        self.delay = delay
        self.orphaned_round: dict[str, int] = {}  # child uid -> round its owner was first seen gone
        self.round = 0
        self.objects: dict[Key, dict[str, Any]] = {}
        self.caches: dict[str, dict[Key, dict[str, Any]]] = {}  # kind -> informer cache
        self._rv = 0
        self._uid = 0
        self.applied: dict[str, Any] = {}  # uid -> last applied desired object
        self.seen: dict[str, Any] = {}  # parent uid -> input fingerprint of its last sync
        self.deadline: dict[str, datetime] = {}  # parent uid -> resyncAfterSeconds deadline
        self.customized: dict[tuple[str, Any], list[dict[str, Any]]] = {}
        self.pod_deleted_round: dict[str, int] = {}
        self.violations: list[str] = []
        self.stats = Stats()
        self.writes = 0
        self.observers: list[Callable[["Harness"], None]] = []
        # UIDs from the object's kind, namespace, name and incarnation rather than a counter, so
        # adding an unrelated object to a rendered set does not change the others' UIDs.
        self.named_uids = named_uids
        self.incarnations: dict[Key, int] = {}
        self.exchanges: dict[str, Exchange] = {}  # parent uid -> its last hook call
        # Called after each hook call has been applied (children written, status written): what the
        # hook saw and answered next to what the API server now holds.
        self.exchange_observers: list[Callable[["Harness", Controller, Exchange], None]] = []

    # -----------------------------------------------------------------------------------------
    # API server

    def _bump(self, obj: dict[str, Any]) -> None:
        self._rv += 1
        self.writes += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)

    def new_uid(self, key: Optional[Key] = None) -> str:
        self._uid += 1
        if self.named_uids and key is not None:
            n = self.incarnations[key] = self.incarnations.get(key, 0) + 1
            digest = hashlib.sha256("/".join((*key, str(n))).encode()).hexdigest()
            return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"
        return f"{self.seed:08x}-0000-4000-8000-{self._uid:012x}"

    def create(self, obj: dict[str, Any], owner: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
        obj = stored_form(obj)
        meta = obj["metadata"]
        if obj["kind"] in CLUSTER_SCOPED:
            meta.pop("namespace", None)
        meta["uid"] = self.new_uid(key_of(obj))
        meta["creationTimestamp"] = fmt_time(self.clock)
        meta["generation"] = 1
        if owner is not None:
            meta["ownerReferences"] = [{
                "apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True,
            }]
        key = key_of(obj)
        assert key not in self.objects, f"{key} exists"
        self._bump(obj)
        self.objects[key] = obj
        self.stats.creates += 1
        return obj

    def delete(self, key: Key, uid: Optional[str] = None) -> None:
        obj = self.objects.get(key)
        if obj is None or (uid is not None and obj["metadata"]["uid"] != uid):
            return  # NotFound / UID precondition failed
        meta = obj["metadata"]
        if meta.get("finalizers") or obj["kind"] == "Pod":
            if not meta.get("deletionTimestamp"):
                obj = copy.deepcopy(obj)
                obj["metadata"]["deletionTimestamp"] = fmt_time(self.clock)
                self._bump(obj)
                self.objects[key] = obj
                self.stats.deletes += 1
                if obj["kind"] == "Pod":
                    self.pod_deleted_round[obj["metadata"]["uid"]] = self.round
            return
        del self.objects[key]
        self.writes += 1
        self.stats.deletes += 1

    def _replace(self, key: Key, obj: dict[str, Any]) -> None:
        self._bump(obj)
        self.objects[key] = obj
        meta = obj["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and obj["kind"] != "Pod":
            del self.objects[key]

    def of_kind(self, view: Mapping[Key, dict[str, Any]], kind: str) -> list[dict[str, Any]]:
        return [o for k, o in view.items() if k[0] == kind]

    def live_uids(self) -> set[str]:
        return {o["metadata"]["uid"] for o in self.objects.values()}

    # -----------------------------------------------------------------------------------------
    # Metacontroller

    def _view(self, kind: str) -> Mapping[Key, dict[str, Any]]:
        """The informer cache of one kind: usually caught up with the store, sometimes lagging."""
        if kind in self.caches and self.stale and self.rng.random() < self.stale:
            self.stats.stale_reads += 1
        else:
            self.caches[kind] = {k: o for k, o in self.objects.items() if k[0] == kind}
        return self.caches[kind]

    def _related(self, ctl: Controller, parent: dict[str, Any]) -> dict[str, dict[str, Any]]:
        if ctl.customize is None:
            return {}
        cache_key = (parent["metadata"]["uid"], parent["metadata"].get("generation"))
        if cache_key not in self.customized:
            answer = jsonio.loads(jsonio.dumps(ctl.customize({"controller": {}, "parent": parent}, self.clock, self.config)))
            self.customized[cache_key] = answer["relatedResources"]
        out: dict[str, dict[str, Any]] = {}
        for rule in self.customized[cache_key]:
            kind = KIND_OF[rule["resource"]]
            group = out.setdefault(C.gvk_key(kind, rule["apiVersion"]), {})
            assert "namespaceSelector" not in rule, "namespaceSelector is not modelled"
            assert not (rule.get("names") and rule.get("labelSelector")), "names cannot be combined with a selector"
            for obj in self._view(kind).values():
                meta = obj["metadata"]
                if rule.get("namespace") and meta.get("namespace", "") != rule["namespace"]:
                    continue
                if rule.get("names") and meta["name"] not in rule["names"]:
                    continue
                if rule.get("labelSelector") is not None and not matches(rule["labelSelector"], meta.get("labels") or {}):
                    continue
                ns = meta.get("namespace")
                group[f"{ns}/{meta['name']}" if ns else meta["name"]] = obj
        return out

    def _children(self, ctl: Controller, parent: dict[str, Any]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {C.gvk_key(kind, api): {} for kind, api in ctl.child_api.items()}
        my_uid, ns = parent["metadata"]["uid"], parent["metadata"].get("namespace")
        for key, obj in (item for kind in ctl.child_api for item in self._view(kind).items()):
            if ns is None or key[1] == ns:  # a cluster-scoped parent's children may be anywhere
                for ref in obj["metadata"].get("ownerReferences") or []:
                    if ref.get("controller") and ref.get("uid") == my_uid:
                        out[C.gvk_key(key[0], ctl.child_api[key[0]])][f"{key[1]}/{key[2]}" if key[1] else key[2]] = obj
        return out

    @staticmethod
    def _fingerprint(parent: Mapping[str, Any], *maps: Mapping[str, Mapping[str, Any]]) -> Any:
        items = sorted((o["metadata"]["uid"], o["metadata"]["resourceVersion"]) for m in maps for g in m.values() for o in g.values())
        return parent["metadata"]["resourceVersion"], tuple(items)

    def sync_parent(self, ctl: Controller, key: Key) -> None:
        if key not in self.objects:
            return
        parent = self._view(ctl.parent_kind).get(key)
        if parent is None or parent["metadata"]["uid"] != self.objects[key]["metadata"]["uid"]:
            return  # not in this cache yet (or an older incarnation): no event delivered yet
        if ctl.selector is not None and not matches(ctl.selector, parent["metadata"].get("labels") or {}):
            return  # a decorator's object outside its selector
        uid = parent["metadata"]["uid"]
        children = self._children(ctl, parent)
        related = self._related(ctl, parent)
        fingerprint = self._fingerprint(parent, children, related)
        due = uid in self.deadline and self.deadline[uid] <= self.clock
        if self.seen.get(uid) == fingerprint and not due:
            return
        if self.delay and self.rng.random() < self.delay:
            self.stats.delayed += 1  # its event arrives in a later round; nothing recorded as seen
            return
        self.seen[uid] = fingerprint
        self.deadline.pop(uid, None)

        deleting = bool(parent["metadata"].get("deletionTimestamp"))
        live = self.objects[key]
        if ctl.finalize is not None and not deleting and ctl.finalizer not in (live["metadata"].get("finalizers") or []):
            live = copy.deepcopy(live)
            live["metadata"].setdefault("finalizers", []).append(ctl.finalizer)
            self._replace(key, live)
            parent = copy.deepcopy(parent)
            parent["metadata"]["finalizers"] = list(live["metadata"]["finalizers"])
        if deleting and (ctl.finalize is None or ctl.finalizer not in (parent["metadata"].get("finalizers") or [])):
            return
        hook = ctl.finalize if deleting else ctl.sync
        assert hook is not None
        if ctl.decorator:
            request = {"controller": {"metadata": {"name": ctl.name}}, "object": parent, "attachments": children,
                       "related": related, "finalizing": deleting}
        else:
            request = {"controller": {"metadata": {"name": ctl.name}}, "parent": parent, "children": children,
                       "related": related, "finalizing": deleting}
        self.stats.hook_calls += 1
        self.stats.calls[ctl.name] = self.stats.calls.get(ctl.name, 0) + 1
        wire_request = jsonio.loads(jsonio.dumps(request))
        response = jsonio.loads(jsonio.dumps(hook(wire_request, self.clock, self.config)))
        exchange = self.exchanges[uid] = Exchange(ctl.paths.get("finalize" if deleting else "sync", ""), self.clock, wire_request, response)
        if ctl.decorator:
            response = {**response, "children": response.get("attachments") or []}
        failed = False
        if not (deleting and response.get("finalized")):
            # Metacontroller removes its finalizer first and then manages children only while
            # the finalizer holds the parent: what a finalized answer leaves goes to the GC.
            failed = self._apply(ctl, parent, children, response)
        if response.get("resyncAfterSeconds"):
            self.deadline[uid] = self.clock + timedelta(seconds=float(response["resyncAfterSeconds"]))
        if failed:  # Metacontroller requeues a parent whose children it could not write
            self.deadline[uid] = min(self.deadline.get(uid, self.clock), self.clock)
        if ctl.decorator:
            self._decorate(key, uid, response)
        else:
            self._write_status(key, uid, parent, response.get("status"))
        if deleting and response.get("finalized"):
            live = self.objects.get(key)
            if live is not None and live["metadata"]["uid"] == uid:
                live = copy.deepcopy(live)
                live["metadata"]["finalizers"] = [f for f in live["metadata"].get("finalizers") or [] if f != ctl.finalizer]
                self._replace(key, live)
        for observer in self.exchange_observers:
            observer(self, ctl, exchange)

    def _write_status(self, key: Key, uid: str, parent: Mapping[str, Any], status: Any) -> None:
        live = self.objects.get(key)
        if live is None or live["metadata"]["uid"] != uid:
            return
        new = dict(status or {})
        new["observedGeneration"] = parent["metadata"].get("generation")
        if live.get("status") != new:
            live = copy.deepcopy(live)
            live["status"] = new
            self._replace(key, live)

    def _decorate(self, key: Key, uid: str, response: Mapping[str, Any]) -> None:
        """A decorator's labels and annotations on its object (null removes a key)."""
        live = self.objects.get(key)
        if live is None or live["metadata"]["uid"] != uid:
            return
        new = copy.deepcopy(live)
        for section in ("labels", "annotations"):
            values = dict(new["metadata"].get(section) or {})
            for k, v in (response.get(section) or {}).items():
                if v is None:
                    values.pop(k, None)
                else:
                    values[k] = v
            if values:
                new["metadata"][section] = values
            else:
                new["metadata"].pop(section, None)
        if new != live:
            self._replace(key, new)

    def _fails(self) -> bool:
        """Whether the next child write fails (a transient API error, `write_failures`)."""
        if self.write_failures and self.rng.random() < self.write_failures:
            self.stats.failed_writes += 1
            return True
        return False

    def _apply(self, ctl: Controller, parent: Mapping[str, Any], children: Mapping[str, Mapping[str, Any]],
               response: Mapping[str, Any]) -> bool:
        """Create, update and delete children as Metacontroller does; True when a write failed."""
        failed = False
        desired = response.get("children")
        assert isinstance(desired, list), f"{ctl.name}: response without a children list"
        parent_ns = parent["metadata"].get("namespace")
        observed = {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
                    for g in children.values() for o in g.values()}
        wanted: set[Key] = set()
        for child in desired:
            kind = child["kind"]
            assert kind in ctl.child_api and child["apiVersion"] == ctl.child_api[kind], f"{ctl.name}: undeclared child {kind}"
            child = copy.deepcopy(child)
            if kind in CLUSTER_SCOPED:  # a ClusterNetworkPolicy attached to a Namespace
                assert "namespace" not in child["metadata"], f"{ctl.name}: cluster-scoped {kind} with a namespace"
            elif parent_ns is not None:
                child["metadata"].setdefault("namespace", parent_ns)
                assert child["metadata"]["namespace"] == parent_ns, f"{ctl.name}: child in another namespace"
            else:
                assert child["metadata"].get("namespace"), f"{ctl.name}: a cluster-scoped parent's child names no namespace"
            child["metadata"].setdefault("labels", {})[C.LABEL_CONTROLLER_UID] = parent["metadata"]["uid"]
            ident = key = (kind, child["metadata"].get("namespace", ""), child["metadata"]["name"])
            assert ident not in wanted, f"{ctl.name}: {ident} emitted twice"
            wanted.add(ident)
            seen = observed.get(ident)
            if seen is None:
                if key in self.objects:
                    self.stats.already_exists += 1  # swallowed, like Metacontroller's dynamic apply
                    continue
                refusal = self._admission(child)
                if refusal:
                    self.violations.append(f"{ctl.name}: create refused: {refusal}")
                    continue
                if self._fails():
                    failed = True
                    continue
                created = self.create(child, owner=parent)
                self.applied[created["metadata"]["uid"]] = child
            elif not seen["metadata"].get("deletionTimestamp") and ctl.strategy[kind] != "OnDelete":
                assert ctl.strategy[kind] == "InPlace", f"{ctl.strategy[kind]} is not modelled"
                failed = self._update(key, seen, child) or failed
        for ident, seen in observed.items():
            if ident not in wanted and not seen["metadata"].get("deletionTimestamp"):
                if self._fails():
                    failed = True
                    continue
                self.delete(ident, uid=seen["metadata"]["uid"])
        return failed

    def _admission(self, obj: Mapping[str, Any]) -> Optional[str]:
        """Why the API server would refuse to create `obj`, if it would: a Pod naming a
        ServiceAccount that does not exist (the ServiceAccount admission plugin; `default` is made
        by the namespace's token controller). Metacontroller creates the children of one answer
        in no particular order, so a hook must not desire such a Pod before its account exists."""
        if obj["kind"] == "Pod":
            account = (obj.get("spec") or {}).get("serviceAccountName") or "default"
            if account != "default" and ("ServiceAccount", obj["metadata"]["namespace"], account) not in self.objects:
                return f"pods {obj['metadata']['name']!r} is forbidden: serviceaccount {account!r} not found"
        return None

    def _update(self, key: Key, seen: dict[str, Any], child: dict[str, Any]) -> bool:
        """An InPlace update (a PUT on the observed version); True when the write failed on purpose."""
        uid = seen["metadata"]["uid"]
        desired = {k: v for k, v in child.items() if k != "status"}
        desired["metadata"] = {k: v for k, v in child["metadata"].items() if k not in SYSTEM_METADATA}
        merged = three_way(_without_status(seen), self.applied.get(uid), desired)
        if merged == _without_status(seen):
            self.applied[uid] = desired
            return False
        if stored_form(merged) == _without_status(seen):
            # Metacontroller compares what it would send with the object and PUTs; the API server
            # stores the same object again (no new resourceVersion). Every sync, forever.
            self.stats.noop_updates += 1
            self.applied[uid] = desired
            return False
        if self._fails():
            return True
        live = self.objects.get(key)
        if live is None or live["metadata"]["uid"] != uid or live["metadata"]["resourceVersion"] != seen["metadata"]["resourceVersion"]:
            self.stats.conflicts += 1  # PUT with a stale resourceVersion
            return False
        if key[0] == "Pod" and stored_form(merged).get("spec") != seen.get("spec"):
            self.violations.append(f"round {self.round}: Forbidden: update of pod {key[2]}'s spec")
            return False
        if key[0] == C.KIND_WARMPOD:
            old = (seen.get("spec") or {}).get("assignment")
            if old is not None and (merged.get("spec") or {}).get("assignment") != old:
                self.violations.append(f"round {self.round}: WarmPod {key[2]}: assignment {old} changed to "
                                       f"{(merged.get('spec') or {}).get('assignment')} on a current view")
                return False
        new = stored_form(merged)
        if "status" in live:
            new["status"] = live["status"]
        if new.get("spec") != live.get("spec"):
            new["metadata"]["generation"] = live["metadata"].get("generation", 1) + 1
        self.applied[uid] = desired
        self.stats.updates += 1
        self._replace(key, new)
        return False

    # -----------------------------------------------------------------------------------------
    # Kubelet and garbage collector

    def kubelet(self) -> None:
        for key, pod in list(self.objects.items()):
            if key[0] != "Pod":
                continue
            meta = pod["metadata"]
            if meta.get("deletionTimestamp"):
                if self.pod_deleted_round.get(meta["uid"], self.round) < self.round:
                    del self.objects[key]
                    self.writes += 1
                continue
            status = pod.get("status") or {}
            if self.rng.random() > self.kubelet_speed:
                continue
            new = copy.deepcopy(pod)
            stamp = fmt_time(self.clock)
            if not status:
                new["status"] = {"phase": "Pending"}
            elif status.get("phase") == "Pending":
                new["status"] = {"phase": "Running", "startTime": stamp,
                                 "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": stamp}]}
            elif status.get("phase") == "Running" and _ready(status) == "False":
                new["status"] = {**status, "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": stamp}]}
            else:
                continue
            self._replace(key, new)

    def garbage_collect(self) -> None:
        changed = True
        while changed:
            changed = False
            uids = self.live_uids()
            for key, obj in list(self.objects.items()):
                for ref in obj["metadata"].get("ownerReferences") or []:
                    if ref.get("controller") and ref["uid"] not in uids and not obj["metadata"].get("deletionTimestamp"):
                        since = self.orphaned_round.setdefault(obj["metadata"]["uid"], self.round)
                        if self.round - since >= self.gc_lag:
                            self.delete(key)
                            changed = True

    # -----------------------------------------------------------------------------------------
    # Rounds

    def run_round(self) -> int:
        """One round: kubelet, every controller's parents (in a seeded random order), garbage
        collection, observers. Returns the number of writes."""
        before = self.writes
        self.kubelet()
        work = [(ctl, key) for ctl in self.controllers for key in self.objects if key[0] == ctl.parent_kind]
        self.rng.shuffle(work)
        for ctl, key in work:
            self.sync_parent(ctl, key)
        self.garbage_collect()
        for observer in self.observers:
            observer(self)
        self.round += 1
        self.clock += timedelta(seconds=self.step)
        return self.writes - before

    def kubelet_busy(self) -> bool:
        """A pod still starting or terminating: the kubelet has work left (it may skip a round)."""
        for key, pod in self.objects.items():
            if key[0] == "Pod":
                status = pod.get("status") or {}
                if pod["metadata"].get("deletionTimestamp") or status.get("phase") in (None, "Pending") or (
                        status.get("phase") == "Running" and _ready(status) != "True"):
                    return True
        return False

    def next_deadline(self) -> Optional[datetime]:
        live = self.live_uids()
        pending = [d for uid, d in self.deadline.items() if uid in live]
        return min(pending) if pending else None

    def run_until_quiet(self, max_rounds: int = 400, skip_idle_time: bool = True) -> int:
        """Rounds until two rounds in a row change nothing and no resync deadline is pending
        (idle time up to the next deadline is skipped when `skip_idle_time`). Returns rounds run."""
        quiet = 0
        for n in range(max_rounds):
            quiet = quiet + 1 if self.run_round() == 0 and not self.kubelet_busy() else 0
            if quiet:
                self.caches.clear()  # informers catch up in the end: quiet must hold on current caches
            if quiet >= 2:
                deadline = self.next_deadline()
                if deadline is None:
                    return n + 1
                if skip_idle_time and deadline > self.clock:
                    self.clock = deadline
        raise AssertionError(f"not quiet after {max_rounds} rounds (seed {self.seed}); pending deadlines: {self.next_deadline()}")
