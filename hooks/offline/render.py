"""Offline desired state: read Kubernetes documents, run the hooks through the simulated
Metacontroller (hooks/offline/simulate.py: customize -> related selection -> sync, children created and
observed as a cluster would) and report each parent's status and desired children.

Used by `llmsafespace render | validate | diff` (hooks/offline/cli.py). Nothing here is a second copy of a
hook: every answer is a hook of hooks/server/routes.py called with a request shaped like Metacontroller's.

Rendering is two phases:
  * settle: at the clock `now`, rounds of every controller until nothing changes, with the kubelet
    stopped (pods are created but do not start: the desired state as soon as the controllers acted);
  * then `rounds` further rounds of ROUND_SECONDS each in which the kubelet moves every pod one step
    Pending -> Running -> Ready ("what it looks like once running")."""
from __future__ import annotations

import copy
import json
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import yaml

from .. import constants as C
from ..config import Config
from .simulate import CLUSTER_SCOPED, ROOT, Controller, Exchange, Harness, Key, key_of, load_controllers

ROUND_SECONDS = 2.0
MAX_SETTLE_ROUNDS = 100
DEFAULT_NAMESPACE = "default"  # kubectl's, for a namespaced document that names none
SUFFIXES = (".yaml", ".yml", ".json")
CORE_KINDS: dict[str, str] = {  # kinds a controller observes (parents, children, related) -> apiVersion
    "Namespace": "v1", "Pod": "v1", "Service": "v1", "ServiceAccount": "v1", "PersistentVolumeClaim": "v1",
    "ResourceQuota": "v1", "LimitRange": "v1", "NetworkPolicy": "networking.k8s.io/v1",
}
OUR_KINDS = (C.KIND_SANDBOX, C.KIND_PROFILE, C.KIND_RUNTIME, C.KIND_WARMPOOL, C.KIND_WARMPOD, C.KIND_WARMPOOL_OFFER)
# Parents in output order: what others depend on first.
PARENT_ORDER = (C.KIND_RUNTIME, C.KIND_PROFILE, C.KIND_WARMPOOL, C.KIND_WARMPOD, C.KIND_SANDBOX, "Namespace")
# Metadata that depends on the whole simulated cluster (every write), not on the object.
VOLATILE_METADATA = ("resourceVersion", "managedFields")


class InputError(Exception):
    """Documents that cannot be rendered (unreadable, unknown kind, refused by the CRD schema,
    naming objects the files lack); lists every problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Document:
    source: str  # file name and document number, for messages
    obj: dict[str, Any]

    @property
    def key(self) -> Key:
        meta = self.obj["metadata"]
        return self.obj["kind"], meta.get("namespace", ""), meta["name"]

    @property
    def label(self) -> str:
        return describe(self.key)


def describe(key: Key) -> str:
    kind, ns, name = key
    return f"{kind} {ns}/{name}" if ns else f"{kind} {name}"


# ---------------------------------------------------------------------------------------------
# Reading


def _files(paths: Iterable[str], recursive: bool) -> list[Path]:
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = path.rglob("*") if recursive else path.glob("*")
            out += sorted(p for p in found if p.is_file() and p.suffix in SUFFIXES)
        elif path.is_file():
            out.append(path)
        else:
            raise InputError([f"{raw}: no such file or directory"])
    return out


def _parse(text: str, name: str) -> list[Any]:
    try:
        if name.endswith(".json"):
            return [json.loads(text)]
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except (ValueError, yaml.YAMLError) as exc:
        raise InputError([f"{name}: not valid {'JSON' if name.endswith('.json') else 'YAML'}: {exc}"]) from None


def read_documents(paths: Iterable[str], recursive: bool = False, stdin: Optional[str] = None) -> list[Document]:
    """Every Kubernetes document of the files (directories: their .yaml/.yml/.json files, like
    `kubectl apply -f`; `-` reads `stdin`). A List's items count as documents."""
    out: list[Document] = []
    sources: list[tuple[str, str]] = []
    for raw in paths:
        if raw == "-":
            sources.append(("<stdin>", stdin if stdin is not None else sys.stdin.read()))
        else:
            sources += [(str(f), f.read_text(encoding="utf-8")) for f in _files([raw], recursive)]
    for name, text in sources:
        for i, doc in enumerate(_parse(text, name)):
            items = doc.get("items") if isinstance(doc, dict) and str(doc.get("kind", "")).endswith("List") else None
            for j, item in enumerate(items if isinstance(items, list) else [doc]):
                where = f"{name}#{i + 1}" + (f".items[{j}]" if items is not None else "")
                out.append(Document(where, item))
    return out


def check_shape(docs: list[Document], namespace: str) -> list[Document]:
    """Known kinds with names; namespaced documents without a namespace get `namespace`, as
    kubectl would give them. Raises InputError listing every problem."""
    problems: list[str] = []
    out: list[Document] = []
    seen: dict[Key, str] = {}
    for doc in docs:
        obj = doc.obj
        if not isinstance(obj, dict) or not isinstance(obj.get("metadata"), dict) or not obj["metadata"].get("name"):
            problems.append(f"{doc.source}: not a Kubernetes object with kind and metadata.name")
            continue
        api, kind = obj.get("apiVersion"), obj.get("kind")
        if not (kind in CORE_KINDS and api == CORE_KINDS[kind]) and not (kind in OUR_KINDS and api == C.API_VERSION):
            problems.append(f"{doc.source}: unknown kind {api} {kind}: llmsafespace reads {', '.join(OUR_KINDS)} "
                            f"({C.API_VERSION}) and the objects they observe: "
                            f"{', '.join(f'{v} {k}' for k, v in sorted(CORE_KINDS.items()))}")
            continue
        obj = copy.deepcopy(obj)
        if kind in CLUSTER_SCOPED:
            if obj["metadata"].get("namespace"):
                problems.append(f"{doc.source}: {kind} is cluster-scoped but names namespace {obj['metadata']['namespace']!r}")
                continue
        else:
            obj["metadata"].setdefault("namespace", namespace)
        fixed = Document(doc.source, obj)
        if fixed.key in seen:
            problems.append(f"{doc.source}: {fixed.label} is also in {seen[fixed.key]}")
            continue
        seen[fixed.key] = doc.source
        out.append(fixed)
    if problems:
        raise InputError(problems)
    return out


def admit(docs: list[Document]) -> list[Document]:
    """Our custom resources as the API server would store them: checked against the CRD schema
    and CEL rules, defaults applied. Raises InputError naming every refusal."""
    from ..crdschema import CRValidationError, validate_cr  # needs jsonschema and cel-python

    problems: list[str] = []
    out: list[Document] = []
    for doc in docs:
        if doc.obj["kind"] not in OUR_KINDS:
            out.append(doc)
            continue
        try:
            out.append(Document(doc.source, validate_cr(doc.obj)))
        except CRValidationError as exc:
            problems += [f"{doc.source}: {p}" for p in exc.problems]
    if problems:
        raise InputError(problems)
    return out


def load(paths: Iterable[str], namespace: str = DEFAULT_NAMESPACE, recursive: bool = False,
         stdin: Optional[str] = None) -> list[Document]:
    return admit(check_shape(read_documents(paths, recursive, stdin), namespace))


# ---------------------------------------------------------------------------------------------
# Simulating


@dataclass(frozen=True)
class Rendered:
    """One parent after rendering: the object as the cluster would show it (status, or the
    decorator's labels and annotations) and its controller's last hook call."""

    key: Key
    parent: dict[str, Any]
    exchange: Exchange
    controller: Controller

    @property
    def children(self) -> list[dict[str, Any]]:
        answer = self.exchange.response
        items = answer.get("attachments") if self.controller.decorator else answer.get("children")
        return sorted(items or [], key=lambda c: (c["apiVersion"], c["kind"], c["metadata"].get("namespace", ""), c["metadata"]["name"]))


def _rank(doc: Document) -> tuple[int, str, str, str]:
    kind = doc.obj["kind"]
    return (PARENT_ORDER.index(kind) if kind in PARENT_ORDER else len(PARENT_ORDER), *doc.key)


def _adopt(obj: dict[str, Any], uids: Mapping[tuple[str, str, str], str], source: str) -> Optional[str]:
    """Point an observed child's controller reference at its parent's simulated UID (the files
    name the parent by kind and name; a cluster's UIDs are unknown offline)."""
    ns = obj["metadata"].get("namespace", "")
    for ref in obj["metadata"].get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            parent = (str(ref.get("kind")), ns, str(ref.get("name")))
            parent_cluster = (str(ref.get("kind")), "", str(ref.get("name")))
            uid = uids.get(parent) or uids.get(parent_cluster)
            if uid is None:
                return f"{source}: its controller {ref.get('kind')} {ref.get('name')} is in none of the files"
            ref["uid"] = uid
    return None


def simulate(docs: list[Document], now: datetime, config: Config, rounds: int = 0) -> Harness:
    """The cluster state of `docs` run through every controller (see the module docstring)."""
    if not (ROOT / "metacontroller").is_dir() or not (ROOT / "crds").is_dir():
        raise InputError([f"{ROOT} has no metacontroller/ and crds/: run llmsafespace from a checkout "
                          f"(python -m hooks, or pip install -e '.[cli]')"])
    controllers = load_controllers([C.KIND_SANDBOX, C.KIND_PROFILE, C.KIND_RUNTIME, C.KIND_WARMPOOL, C.KIND_WARMPOD, "Namespace"],
                                   config.egress_backend)
    harness = Harness(controllers, config, now, seed=0, step=0.0, kubelet_speed=0.0, named_uids=True)
    uids: dict[tuple[str, str, str], str] = {}
    problems: list[str] = []
    for doc in sorted(docs, key=_rank):
        obj = copy.deepcopy(doc.obj)
        trouble = _adopt(obj, uids, doc.source)
        if trouble:
            problems.append(trouble)
            continue
        created = harness.create(obj)
        uids[key_of(created)] = created["metadata"]["uid"]
    if problems:
        raise InputError(problems)
    quiet = 0
    for _ in range(MAX_SETTLE_ROUNDS):
        quiet = quiet + 1 if harness.run_round() == 0 else 0
        if quiet >= 2:
            break
    else:
        raise InputError([f"the controllers did not settle in {MAX_SETTLE_ROUNDS} rounds (a bug: please report it with the files)"])
    harness.step, harness.kubelet_speed = ROUND_SECONDS, 1.0
    for _ in range(rounds):
        harness.run_round()
    return harness


def results(harness: Harness) -> list[Rendered]:
    """Every parent a controller synced, in output order (dependencies first, then namespace and name)."""
    by_kind = {c.parent_kind: c for c in harness.controllers}
    out: list[Rendered] = []
    for key, obj in harness.objects.items():
        ctl = by_kind.get(key[0])
        exchange = harness.exchanges.get(obj["metadata"]["uid"])
        if ctl is None or exchange is None:
            continue
        parent = copy.deepcopy(obj)
        for field in VOLATILE_METADATA:
            parent["metadata"].pop(field, None)
        out.append(Rendered(key, parent, exchange, ctl))
    return sorted(out, key=lambda r: (PARENT_ORDER.index(r.key[0]), *r.key))


def missing_related(rendered: Iterable[Rendered]) -> list[str]:
    """Parents whose status says an object they name does not exist (a reason ending in
    NotFound): offline, that means the files lack it."""
    out = []
    for item in rendered:
        found = {}  # reason -> message; the Validated condition's wins (Ready only points at it)
        for cond in (item.parent.get("status") or {}).get("conditions") or []:
            reason = str(cond.get("reason", ""))
            if reason.endswith("NotFound") and (reason not in found or cond.get("type") == C.CONDITION_VALIDATED):
                found[reason] = str(cond.get("message", ""))
        out += [f"{describe(item.key)}: {reason}: {message} (the files lack it: add it with another -f)"
                for reason, message in sorted(found.items())]
    return out


def render(docs: list[Document], now: datetime, config: Config, rounds: int = 0,
           only: Optional[set[Key]] = None) -> list[Rendered]:
    """Render `docs`; `only`: report just these parents (the others still run, as context).
    Raises InputError when a parent names an object the files lack."""
    rendered = results(simulate(docs, now, config, rounds))
    if only is not None:
        unknown = only - {r.key for r in rendered}
        if unknown:
            raise InputError([f"{describe(k)}: no such parent in the files" for k in sorted(unknown)])
        rendered = [r for r in rendered if r.key in only]
    missing = missing_related(rendered)
    if missing:
        raise InputError(missing)
    return rendered
