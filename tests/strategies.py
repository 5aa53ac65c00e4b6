"""Hypothesis strategies for fuzzing the hooks, and the settings profiles the fuzz tests use.

Profiles (hypothesis settings profiles, registered here and used through `fuzz_settings`):
  llmss-ci    default: small example counts, the whole fuzz file runs in well under a minute.
  llmss-long  selected with the environment variable LLMSS_LONG=1: many more examples
              (`LLMSS_LONG=1 .venv/bin/python -m pytest tests/test_fuzz.py`), for a nightly job
              or before a release.

Generic strategies cover every route in hooks.server.routes.ROUTES without knowing its kind:
  - `arbitrary_json()`: any JSON value;
  - `crd_object(kind)`: an object valid against that kind's CRD schema in crds/ (built from the
    openAPIV3Schema itself, so new kinds and new fields are fuzzed without edits here);
  - `route_request(path)`: a request shaped like Metacontroller's for that route: the parent
    (or, for a DecoratorController, `object`) taken from the CRD of the manifest in
    metacontroller/ that calls the route, the children/attachments map with one (empty or filled)
    entry per declared child resource.
Kind-specific strategies (`KIND_REQUESTS`) add what a schema cannot say: referenced objects that
exist, observed children in every state, extreme but valid values. Sandbox has one now; add the
others here as their hooks land (a test in test_fuzz.py lists the routes still fuzzed only
generically)."""
from __future__ import annotations

import copy
import functools
import ipaddress
import os
import string
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import urlparse

import yaml
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from hooks import constants as C
from hooks import sandbox_sync
from hooks.meta import fmt_time
from tests.factory import NOW, fake_uid, group, observed, profile, runtime
from tests.sandbox_cases import warm_offer, warm_pod_status

ROOT = Path(__file__).resolve().parent.parent
LONG = os.environ.get("LLMSS_LONG") == "1"

# The suite's profile (tests/conftest.py loads it): derandomized, as Hypothesis' own CI profile
# is, so a run tests the same examples as the last one and a failure reproduces by running again;
# new examples are the long run's job (LLMSS_LONG=1: random, 40x the examples).
settings.register_profile(
    "llmss-ci",
    max_examples=25,
    deadline=None,  # kubernetes-validate costs ~10 ms per object; timing is not the property
    print_blob=True,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
settings.register_profile("llmss-long", parent=settings.get_profile("llmss-ci"), max_examples=1000, derandomize=False)
PROFILE_NAME = "llmss-long" if LONG else "llmss-ci"


def fuzz_settings(ci_examples: int, long_examples: Optional[int] = None) -> settings:
    """Settings for one fuzz test: `ci_examples` by default, `long_examples` (default 40x) with
    LLMSS_LONG=1."""
    base = settings.get_profile(PROFILE_NAME)
    return settings(base, max_examples=(long_examples or ci_examples * 40) if LONG else ci_examples)


# ---------------------------------------------------------------------------------------------
# JSON

_scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
)


def arbitrary_json(max_leaves: int = 20) -> st.SearchStrategy[Any]:
    return st.recursive(
        _scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
        max_leaves=max_leaves,
    )


# ---------------------------------------------------------------------------------------------
# Kubernetes names and labels

_LOWER_ALNUM = string.ascii_lowercase + string.digits
_ALNUM = string.ascii_letters + string.digits


@st.composite
def dns_label(draw: Any, max_size: int = 63, min_size: int = 1) -> str:
    """A DNS-1123 label ([a-z0-9]([-a-z0-9]*[a-z0-9])?), often at its length limits."""
    size = draw(st.integers(min_size, max_size) | st.sampled_from(sorted({min_size, max_size})))
    if size == 1:
        return draw(st.sampled_from(_LOWER_ALNUM))
    ends = draw(st.tuples(st.sampled_from(_LOWER_ALNUM), st.sampled_from(_LOWER_ALNUM)))
    middle = draw(st.text(_LOWER_ALNUM + "-", min_size=size - 2, max_size=size - 2))
    return ends[0] + middle + ends[1]


@st.composite
def dns_subdomain(draw: Any, max_size: int = 253) -> str:
    """A DNS-1123 subdomain: dot-separated labels, up to 253 characters (the limit of most
    object names), exactly 253 now and then."""
    if draw(st.integers(0, 9)) == 0:
        labels = [draw(dns_label(63, 63)) for _ in range(3)] + [draw(dns_label(61, 61))]
        # Cut to max_size, a label may end in '-' or '.': strip them, as below (the API server
        # would refuse such a key, so the hooks' answer would be a 400, not what a test expects).
        return ".".join(labels)[:max_size].rstrip("-.")
    labels = draw(st.lists(dns_label(), min_size=1, max_size=6))
    text = ".".join(labels)[:max_size].rstrip("-.")
    return text or "a"


def label_name(max_size: int = 63) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(_ALNUM),
        st.tuples(st.sampled_from(_ALNUM), st.text(_ALNUM + "-_.", max_size=max_size - 2), st.sampled_from(_ALNUM))
        .map(lambda t: "".join(t)),
    )


# Keys a tenant might use to impersonate the controller or another component.
SPOOF_LABEL_KEYS = (
    C.LABEL_APP, C.LABEL_COMPONENT, C.LABEL_MANAGED_BY, C.LABEL_CONTROLLER_UID, C.LABEL_SANDBOX_UID,
    C.LABEL_SANDBOX_ID, C.LABEL_WARMPOOL, C.LABEL_WARMPOD, "x.llmsafespace.dev/sandbox-uid", "k8s-app",
)


def label_key() -> st.SearchStrategy[str]:
    prefixed = st.tuples(dns_subdomain(max_size=60), label_name()).map(lambda t: f"{t[0]}/{t[1]}")
    return st.one_of(label_name(), prefixed, st.sampled_from(SPOOF_LABEL_KEYS))


def label_value() -> st.SearchStrategy[str]:
    return st.one_of(st.just(""), label_name(), st.sampled_from(["llmsafespace", "api", "sandbox", "kube-dns"]))


def labels(max_size: int = 6) -> st.SearchStrategy[dict[str, str]]:
    return st.dictionaries(label_key(), label_value(), max_size=max_size)


def annotations(max_size: int = 4) -> st.SearchStrategy[dict[str, str]]:
    value = st.one_of(st.text(max_size=200), st.just("true"))
    key = st.one_of(label_key(), st.sampled_from([C.ANNOTATION_USE_WARM_POD, C.ANNOTATION_CPU_PINNING, C.ANNOTATION_SANDBOX]))
    return st.dictionaries(key, value, max_size=max_size)


def uids() -> st.SearchStrategy[str]:
    return st.uuids().map(str)


# ---------------------------------------------------------------------------------------------
# Sandbox specs: valid against crds/sandboxes.yaml, with extreme values (some semantically
# invalid: a bad CIDR, a zero quantity, a private range; the hook reports those in conditions)

CPU = st.one_of(
    st.from_regex(r"\A([0-9]{1,5}m|[0-9]{1,3}(\.[0-9]{1,3})?)\Z"),
    st.sampled_from(["0", "0m", "1m", "500m", "2", "64", "0.001", "9" * 30]),
)
MEMORY = st.one_of(
    st.from_regex(r"\A[0-9]{1,6}(Ki|Mi|Gi|Ti)\Z"),
    st.sampled_from(["0Mi", "1Ki", "128Mi", "512Mi", "8Gi", "9" * 25 + "Ti"]),
)


@st.composite
def domain(draw: Any) -> str:
    wildcard = draw(st.booleans())
    name = draw(dns_subdomain(max_size=251 if wildcard else 253))
    return f"*.{name}" if wildcard else name


@st.composite
def cidr(draw: Any) -> str:
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return draw(st.sampled_from(["0.0.0.0/0", "::/0", "203.0.113.0/24", "10.0.0.0/8", "169.254.169.254/32",
                                     "172.16.0.0/12", "100.64.0.0/10", "127.0.0.1/32", "fd00::/8", "2001:db8::/32",
                                     "8.0.0.0/7", "11.0.0.0/8", "::ffff:169.254.169.254/128", "64:ff9b::/96",
                                     "2002::/16", "2000::/3"]))
    if kind == 1:
        return draw(st.text(max_size=30))  # the CRD does not constrain the format
    version = 4 if kind < 4 else 6
    address = draw(st.ip_addresses(v=version))
    prefix = draw(st.integers(0, 32 if version == 4 else 128))
    strict = draw(st.integers(0, 4)) > 0
    net = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    return str(net) if strict else f"{address}/{prefix}"


PORT = st.fixed_dictionaries(
    {"port": st.one_of(st.integers(1, 65535), st.sampled_from([1, 53, 80, 443, 8080, 65535]))},
    optional={"protocol": st.sampled_from(C.PROTOCOLS)},
)


def network_rule() -> st.SearchStrategy[dict[str, Any]]:
    ports = st.lists(PORT, max_size=4)
    by_domain = st.fixed_dictionaries({"domain": domain()}, optional={"ports": ports})
    by_cidr = st.fixed_dictionaries({"cidr": cidr()}, optional={"ports": ports})
    return by_domain | by_cidr


@st.composite
def huge_rules(draw: Any, max_rules: int = 128) -> list[dict[str, Any]]:
    """The schema's maximum (128 rules, 64 ports each), distinct from one another. Built from a few
    drawn numbers: hypothesis cannot draw that much data one element at a time."""
    count = draw(st.sampled_from([max_rules - 1, max_rules]))
    ports = draw(st.sampled_from([0, 1, 64]))
    offset = draw(st.integers(0, 1000))
    rules = []
    for i in range(count):
        rule: dict[str, Any] = {"domain": f"h{i}.x{offset}.example.com"} if i % 2 else {"cidr": f"{11 + i % 80}.{i}.0.0/16"}
        if ports:
            rule["ports"] = [{"port": 1 + (i * 64 + j + offset) % 65535, "protocol": "UDP" if j % 3 == 0 else "TCP"}
                             for j in range(ports)]
        rules.append(rule)
    return rules


def egress_rules() -> st.SearchStrategy[list[dict[str, Any]]]:
    return st.one_of(st.lists(network_rule(), max_size=5), huge_rules())


PATH = st.one_of(
    st.from_regex(r"\A(/[a-z0-9._-]{1,12}){1,4}\Z"),
    st.sampled_from(["/tmp", "/workspace", "/", "/tmp/", "/a/../b", "relative", "/home/sandbox", "/opt/app/x", "/données"]),
)


def sandbox_spec(runtimes: tuple[str, ...] = ("python:3.11", "python-3.11", "python", "python:3.12")) -> st.SearchStrategy[dict[str, Any]]:
    resources = st.fixed_dictionaries({}, optional={
        "cpu": CPU, "memory": MEMORY, "ephemeralStorage": MEMORY, "cpuPinning": st.booleans(),
    })
    network = st.fixed_dictionaries({}, optional={"egress": egress_rules(), "ingress": st.booleans()})
    filesystem = st.fixed_dictionaries({}, optional={
        "readOnlyRoot": st.just(True), "writablePaths": st.lists(PATH, unique=True, max_size=32),
    })
    storage = st.fixed_dictionaries({}, optional={
        "persistent": st.booleans(), "volumeSize": MEMORY, "retentionPolicy": st.sampled_from(["Delete", "Retain"]),
        "storageClassName": st.one_of(dns_subdomain(), st.text(min_size=1, max_size=40)),
    })
    seccomp = st.one_of(
        st.just({"type": "RuntimeDefault"}),
        st.fixed_dictionaries({"type": st.just("Localhost"),
                               "localhostProfile": st.from_regex(r"\A[A-Za-z0-9._-]{1,20}(/[A-Za-z0-9._-]{1,20}){0,3}\Z")}),
    )
    ids = st.one_of(st.integers(1, 2**31 - 1), st.sampled_from([1, 999, 1000, 65534, 2**31 - 1]))
    security = st.fixed_dictionaries({}, optional={"runAsUser": ids, "runAsGroup": ids, "seccompProfile": seccomp})
    return st.fixed_dictionaries(
        {"runtime": st.one_of(st.sampled_from(runtimes), st.text(min_size=1, max_size=253))},
        optional={
            "securityLevel": st.sampled_from(C.SECURITY_LEVELS),
            "timeout": st.one_of(st.integers(1, 3600), st.sampled_from([1, 3600])),
            "lifetimeSeconds": st.one_of(st.integers(0, 31_536_000), st.sampled_from([0, 1, 5, 31_536_000])),
            "resources": resources,
            "networkAccess": network,
            "filesystem": filesystem,
            "storage": storage,
            "securityContext": security,
            "profileRef": st.fixed_dictionaries(
                {"name": st.one_of(st.just("data-science"), dns_subdomain(), st.text(min_size=1, max_size=30))},
                optional={"namespace": st.one_of(st.just("demo"), dns_label())},
            ),
            "warmPoolRef": st.fixed_dictionaries({"name": st.one_of(st.just("python-pool"), dns_subdomain())}),
        },
    )


TIMESTAMPS = st.sampled_from([
    "2026-11-22T11:59:50Z", "2026-11-22T11:58:00Z", "2026-11-22T12:00:00Z", "2020-01-01T00:00:00Z",
    "1970-01-01T00:00:00Z", "2026-11-23T00:00:00Z", "9999-12-31T23:59:59Z",
])


@st.composite
def sandbox_parent(draw: Any, spec: Optional[st.SearchStrategy[dict[str, Any]]] = None, deleting: Optional[bool] = None) -> dict[str, Any]:
    name = draw(st.one_of(dns_subdomain(), st.sampled_from(["a", "a.b", "a-b", "x" * 253, "sandbox"])))
    ns = draw(st.one_of(st.just("demo"), dns_label()))
    meta: dict[str, Any] = {
        "name": name, "namespace": ns, "uid": draw(uids()),
        "generation": draw(st.one_of(st.integers(1, 5), st.just(2**63 - 1))),
        "creationTimestamp": draw(TIMESTAMPS),
        "resourceVersion": str(draw(st.integers(1, 10**9))),
    }
    for key, strategy in (("labels", labels()), ("annotations", annotations())):
        value = draw(strategy)
        if value:
            meta[key] = value
    if deleting if deleting is not None else draw(st.integers(0, 9)) == 0:
        meta["deletionTimestamp"] = "2026-11-22T11:59:59Z"
        meta["finalizers"] = ["metacontroller.io/compositecontroller-llmsafespace-sandbox"]
    parent = {"apiVersion": C.API_VERSION, "kind": C.KIND_SANDBOX, "metadata": meta,
              "spec": draw(spec if spec is not None else sandbox_spec())}
    status = draw(st.one_of(st.none(), previous_status()))
    if status is not None:
        parent["status"] = status
    return parent


@st.composite
def previous_status(draw: Any) -> dict[str, Any]:
    """A status an earlier sync (or an earlier version of the hooks) may have written."""
    cond = st.fixed_dictionaries({
        "type": st.sampled_from(["Ready", "Validated", "WarmPod", "Updated"]),
        "status": st.sampled_from(["True", "False", "Unknown"]),
        "reason": st.sampled_from(["Valid", "PodReady", "X"]),
        "message": st.text(max_size=30),
        "lastTransitionTime": TIMESTAMPS,
    })
    out: dict[str, Any] = draw(st.fixed_dictionaries({}, optional={
        "phase": st.sampled_from(C.SANDBOX_PHASES),
        "runtimeEnvironment": st.just("python-3.11"),
        "serviceName": st.text(max_size=20),
        "warmPool": st.just("python-pool"),
        "warmPodRef": st.fixed_dictionaries({"name": st.just("python-pool-0"), "namespace": st.just("demo")}),
        "startTime": TIMESTAMPS,
        "observedGeneration": st.integers(0, 5),
    }))
    conditions = draw(st.lists(cond, max_size=4, unique_by=lambda c: c["type"]))
    if conditions:
        out["conditions"] = conditions
    return out


# ---------------------------------------------------------------------------------------------
# Related objects of a Sandbox

RTE = runtime()


@st.composite
def runtimes(draw: Any) -> list[dict[str, Any]]:
    choices = [
        RTE,
        runtime("python-3.12", version="3.12"),
        runtime("python-3.11-off", available=False),
        runtime("python-3.13", version="3.13", available=None),
        runtime("python-3.11-digest", image="ghcr.io/llmsafespace/runtime-python@sha256:" + "a" * 64),
        runtime("python-3.11-floor", resourceRequirements={"minCpu": draw(st.sampled_from(["1", "100m", "1e3", "lots", "1Ei"])),
                                                             "minMemory": draw(st.sampled_from(["1Gi", "64Mi", "1E", "?"]))}),
        runtime("broken", image=""),  # invalid spec: never chosen
    ]
    picked = draw(st.lists(st.sampled_from(range(len(choices))), unique=True, max_size=4))
    if draw(st.integers(0, 3)):  # usually the one most sandboxes resolve to
        picked = sorted(set(picked) | {0})
    return [copy.deepcopy(choices[i]) for i in picked]


@st.composite
def profiles(draw: Any) -> list[dict[str, Any]]:
    level = draw(st.sampled_from(C.SECURITY_LEVELS))
    spec: dict[str, Any] = {"securityLevel": level}
    if level == "custom" or draw(st.booleans()):
        spec["seccompProfile"] = "profiles/python.json"
    if draw(st.booleans()):
        spec["networkPolicies"] = [
            {"type": "egress", "rules": draw(st.one_of(st.lists(network_rule(), max_size=3), huge_rules()))},
            {"type": "ingress", "rules": draw(st.lists(network_rule(), max_size=2))},
        ]
    if draw(st.booleans()):
        spec["filesystemConfig"] = {"writablePaths": ["/tmp", "/home/sandbox"], "readOnlyPaths": ["/opt/app"]}
    if draw(st.booleans()):
        spec["resourceDefaults"] = {"cpu": draw(CPU), "memory": draw(MEMORY)}
    validated = draw(st.sampled_from([True, False, None]))
    return draw(st.sampled_from([[], [profile(validated=validated, **spec)]]))



def warm_pod(parent: dict[str, Any], pool: str, phase: str, name: Optional[str] = None, uid_: Optional[str] = None) -> dict[str, Any]:
    name = name or f"{pool}-0"
    return {
        "apiVersion": C.API_VERSION, "kind": C.KIND_WARMPOD,
        "metadata": {
            "name": name, "namespace": parent["metadata"]["namespace"], "uid": fake_uid("wpod", name), "generation": 2,
            "creationTimestamp": "2026-11-22T10:00:05Z",
            "labels": {C.LABEL_SANDBOX_UID: uid_ or parent["metadata"]["uid"], C.LABEL_WARMPOOL: pool},
            "ownerReferences": [{"apiVersion": C.API_VERSION, "kind": C.KIND_WARMPOOL, "name": pool,
                                 "uid": fake_uid("wp", pool), "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": {"poolRef": {"name": pool}, "runtime": "python:3.11", "image": RTE["spec"]["image"],
                 "assignment": {"sandboxName": parent["metadata"]["name"], "sandboxUid": uid_ or parent["metadata"]["uid"]}},
        "status": warm_pod_status(name, fake_uid("wpod", name), phase, parent["metadata"]["name"]),
    }


@st.composite
def warm_objects(draw: Any, parent: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if draw(st.booleans()):
        out.append(warm_offer(securityLevel=draw(st.sampled_from(C.SECURITY_LEVELS))))
    if draw(st.booleans()):
        out.append(warm_pod(parent, "python-pool", draw(st.sampled_from(["Assigned", "Ready", "Pending", "Failed"]))))
    if draw(st.booleans()):  # bound to someone else: must be ignored
        out.append(warm_pod(parent, "python-pool", "Assigned", name="python-pool-9", uid_=str(draw(uids()))))
    return out


# ---------------------------------------------------------------------------------------------
# Observed children of a Sandbox

POD_STATES = st.sampled_from(["none", "pending", "running", "ready", "failed", "succeeded", "unknown", "deleting"])


def pod_status(state: str) -> dict[str, Any]:
    if state == "none":
        return {}
    if state in ("running", "ready", "deleting"):
        return {"phase": "Running", "startTime": "2026-11-22T11:59:56Z", "conditions": [
            {"type": "Ready", "status": "True" if state != "running" else "False", "lastTransitionTime": "2026-11-22T11:59:58Z"}]}
    phase = {"pending": "Pending", "failed": "Failed", "succeeded": "Succeeded", "unknown": "Unknown"}[state]
    return {"phase": phase, **({"message": "evicted", "reason": "Evicted"} if state == "failed" else {})}


@st.composite
def observed_children(draw: Any, parent: dict[str, Any], related: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Children as the API server holds them after some earlier sync, possibly of an earlier,
    different spec: some missing, the pod in any state, an unexpected extra child, duplicates."""
    earlier = copy.deepcopy(parent)
    earlier["metadata"].pop("deletionTimestamp", None)
    earlier.pop("status", None)
    if draw(st.booleans()):
        earlier["spec"] = {"runtime": "python:3.11", **draw(st.sampled_from([
            {}, {"storage": {"persistent": True}}, {"securityLevel": "high"}, {"networkAccess": {"ingress": True}}]))}
    base_related = related if any(r["kind"] == C.KIND_RUNTIME for r in related) else [*related, RTE]
    from tests.factory import settle
    try:
        settled, _ = settle(sandbox_sync.sync, _request(earlier, [], base_related))
    except Exception:  # noqa: BLE001 - the fuzz test itself reports hook failures
        return []
    state = draw(POD_STATES)
    out = []
    for child in settled:
        if draw(st.integers(0, 5)) == 0:
            continue  # not created yet, or deleted by someone
        status = pod_status(state) if child["kind"] == "Pod" else {}
        obj = observed(child, parent, **status)
        if child["kind"] == "Pod" and state == "deleting":
            obj["metadata"]["deletionTimestamp"] = "2026-11-22T11:59:59Z"
        out.append(obj)
    if draw(st.integers(0, 4)) == 0:  # a look-alike adopted by Metacontroller, not ours by name
        extra = copy.deepcopy(out[0]) if out else None
        if extra is not None:
            extra["metadata"]["name"] = extra["metadata"]["name"][:40] + "-stray"
            out.append(extra)
    return out


def _request(parent: dict[str, Any], children: list[dict[str, Any]], related: list[dict[str, Any]],
             finalizing: bool = False) -> dict[str, Any]:
    from tests.factory import sync_request
    return sync_request(parent, children=children, related=related, finalizing=finalizing)


@st.composite
def sandbox_request(draw: Any, hook: str = "sync") -> dict[str, Any]:
    """A well-formed Metacontroller request for a Sandbox hook: a schema-valid parent (extremes
    included), related objects that may or may not resolve, observed children in any state."""
    parent = draw(sandbox_parent(deleting=True if hook == "finalize" else None))
    if hook == "customize":
        return {"controller": {"metadata": {"name": "llmsafespace-sandbox"}}, "parent": parent}
    related = draw(runtimes()) + draw(profiles()) + draw(warm_objects(parent))
    children = draw(observed_children(parent, related)) if draw(st.integers(0, 3)) else []
    request = _request(parent, children, related, finalizing=hook == "finalize")
    if children and draw(st.integers(0, 5)) == 0:  # the same child under a second key
        gvk, items = next((k, v) for k, v in request["children"].items() if v)
        key, obj = next(iter(items.items()))
        items[obj["metadata"]["name"] if "/" in key else f"{obj['metadata']['namespace']}/{key}"] = copy.deepcopy(obj)
    return request


# ---------------------------------------------------------------------------------------------
# Generic: objects from CRD schemas, requests from the Metacontroller manifests


@functools.lru_cache(maxsize=None)
def _crds() -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                out[f"{doc['spec']['names']['plural']}.{doc['spec']['group']}"] = doc
    return out


CORE_KINDS = {  # plural resource (group "" or networking) -> Kind, for child/attachment keys
    "pods": "Pod", "services": "Service", "serviceaccounts": "ServiceAccount", "persistentvolumeclaims": "PersistentVolumeClaim",
    "networkpolicies": "NetworkPolicy", "resourcequotas": "ResourceQuota", "limitranges": "LimitRange",
    "namespaces": "Namespace", "configmaps": "ConfigMap", "secrets": "Secret",
    # Egress backends' kinds (metacontroller/egress/).
    "ciliumnetworkpolicies": "CiliumNetworkPolicy", "clusternetworkpolicies": "ClusterNetworkPolicy",
}


def kind_of(api_version: str, resource: str) -> str:
    group = api_version.split("/")[0] if "/" in api_version else ""
    crd = _crds().get(f"{resource}.{group}")
    if crd is not None:
        return crd["spec"]["names"]["kind"]
    if resource in CORE_KINDS:
        return CORE_KINDS[resource]
    raise KeyError(f"no Kind known for {resource}.{group}: add it to tests/strategies.CORE_KINDS")


def schema_strategy(schema: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values valid against an openAPIV3Schema node (types, enums, bounds, patterns, required,
    maxItems, list-type set). CEL rules are not honoured: a hook must cope with those too."""
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if schema.get("x-kubernetes-preserve-unknown-fields") and kind in (None, "object") and not schema.get("properties"):
        return arbitrary_json(8) if depth < 6 else st.just({})
    if kind == "object":
        props = schema.get("properties") or {}
        required = set(schema.get("required") or [])
        extra = schema.get("additionalProperties")
        if not props and isinstance(extra, dict):
            return st.dictionaries(st.text(min_size=1, max_size=12), schema_strategy(extra, depth + 1), max_size=3)
        return st.fixed_dictionaries(
            {k: schema_strategy(v, depth + 1) for k, v in props.items() if k in required},
            optional={k: schema_strategy(v, depth + 1) for k, v in props.items() if k not in required},
        )
    if kind == "array":
        items = schema_strategy(schema.get("items") or {}, depth + 1)
        max_items = min(schema.get("maxItems", 4), 4)
        unique = schema.get("x-kubernetes-list-type") == "set"
        return st.lists(items, min_size=schema.get("minItems", 0), max_size=max(max_items, schema.get("minItems", 0)),
                        unique_by=(lambda v: repr(v)) if unique else None)
    if kind == "integer":
        low = schema.get("minimum", -(2**31) if schema.get("format") == "int32" else -(2**63))
        high = schema.get("maximum", 2**31 - 1 if schema.get("format") == "int32" else 2**63 - 1)
        return st.one_of(st.integers(low, high), st.sampled_from([low, high]))
    if kind == "number":
        return st.floats(schema.get("minimum"), schema.get("maximum"), allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "string":
        low, high = schema.get("minLength", 0), schema.get("maxLength", 64)
        if schema.get("format") == "date-time":
            return TIMESTAMPS
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True).filter(lambda s: low <= len(s) <= high)
        return st.text(min_size=low, max_size=min(high, 80))
    return arbitrary_json(6)


@st.composite
def crd_object(draw: Any, kind: str, namespace: Optional[str] = "demo", with_status: bool = True) -> dict[str, Any]:
    crd = next(c for c in _crds().values() if c["spec"]["names"]["kind"] == kind)
    version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
    schema = version["schema"]["openAPIV3Schema"]
    props = schema.get("properties", {})
    name = draw(dns_subdomain())
    meta: dict[str, Any] = {"name": name, "uid": draw(uids()), "generation": draw(st.integers(1, 3)),
                            "creationTimestamp": draw(TIMESTAMPS)}
    if crd["spec"]["scope"] == "Namespaced":
        meta["namespace"] = namespace or draw(dns_label())
    value = draw(labels())
    if value:
        meta["labels"] = value
    obj: dict[str, Any] = {"apiVersion": f"{crd['spec']['group']}/{version['name']}", "kind": kind, "metadata": meta}
    if "spec" in props:
        obj["spec"] = draw(schema_strategy(props["spec"]))
    if with_status and "status" in props and draw(st.booleans()):
        obj["status"] = draw(schema_strategy(props["status"]))
    return obj


@st.composite
def namespace_object(draw: Any) -> dict[str, Any]:
    name = draw(dns_label())
    meta = {"name": name, "uid": draw(uids()), "creationTimestamp": draw(TIMESTAMPS),
            "labels": {**draw(labels()), "kubernetes.io/metadata.name": name, C.LABEL_TENANT_NAMESPACE: "true"}}
    ann = draw(st.dictionaries(st.one_of(st.sampled_from([C.ANNOTATION_GVISOR, C.ANNOTATION_QUOTA_PREFIX + "cpu",
                                                          C.ANNOTATION_QUOTA_PREFIX + "pods", C.ANNOTATION_LIMIT_PREFIX + "memory"]),
                                         label_key()),
                               st.one_of(st.sampled_from(["true", "false", "1", "10", "1e999999999", "1Ei", "-1", "0"]),
                                         st.text(max_size=20)), max_size=4))
    if ann:
        meta["annotations"] = ann
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta, "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"}}


@functools.lru_cache(maxsize=None)
def manifest_for(path: str) -> tuple[str, dict[str, Any], str]:
    """(controller kind, controller spec, hook name) of the manifest in metacontroller/ whose
    webhook URL ends in `path` (under any egress backend, metacontroller/egress/)."""
    from hooks.manifests import all_backend_docs

    for _file, doc in all_backend_docs():  # a route only an egress backend calls too
        for hook, spec in (doc["spec"].get("hooks") or {}).items():
            if urlparse(spec["webhook"]["url"]).path == path:
                return doc["kind"], doc["spec"], hook
    raise LookupError(f"no manifest in metacontroller/ calls {path}")


@st.composite
def route_request(draw: Any, path: str) -> dict[str, Any]:
    """A request with Metacontroller's shape for any route, built from its manifest and CRD."""
    controller_kind, spec, hook = manifest_for(path)
    if controller_kind == "DecoratorController":
        resource = spec["resources"][0]
        kind = kind_of(resource["apiVersion"], resource["resource"])
        target = draw(namespace_object()) if kind == "Namespace" else draw(crd_object(kind))
        rules, parent_key, children_key = spec.get("attachments") or [], "object", "attachments"
    else:
        resource = spec["parentResource"]
        kind = kind_of(resource["apiVersion"], resource["resource"])
        target = draw(crd_object(kind))
        rules, parent_key, children_key = spec.get("childResources") or [], "parent", "children"
    if draw(st.integers(0, 9)) == 0:
        target["metadata"]["deletionTimestamp"] = "2026-11-22T11:59:59Z"
    controller = {"apiVersion": "metacontroller.k8s.io/v1alpha1", "kind": controller_kind, "metadata": {"name": "fuzz"}}
    if hook == "customize":
        return {"controller": controller, "parent": target}
    children = {C.gvk_key(kind_of(r["apiVersion"], r["resource"]), r["apiVersion"]): {} for r in rules}
    return {"controller": controller, parent_key: target, children_key: children, "related": {},
            "finalizing": hook == "finalize" or bool(target["metadata"].get("deletionTimestamp"))}


# Kind-specific request strategies, by Route.controller. Add one per controller as hooks land.
KIND_REQUESTS: dict[str, Callable[[str], st.SearchStrategy[dict[str, Any]]]] = {
    "sandbox": lambda hook: sandbox_request(hook),
}


def valid_request(path: str, hook: str, controller: str) -> st.SearchStrategy[dict[str, Any]]:
    """The best well-formed-request strategy we have for a route."""
    specific = KIND_REQUESTS.get(controller)
    generic = route_request(path)
    return st.one_of(specific(hook), generic) if specific else generic


def sometime(offset_seconds: int) -> str:
    return fmt_time(NOW + timedelta(seconds=offset_seconds))


__all__ = [
    "arbitrary_json", "crd_object", "dns_label", "dns_subdomain", "fuzz_settings", "group", "KIND_REQUESTS",
    "route_request", "sandbox_request", "valid_request",
]


# ---------------------------------------------------------------------------------------------
# Malformed requests: a valid request with a few random edits anywhere in it


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for key, value in obj.items():
            out += _paths(value, prefix + (key,))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            out += _paths(value, prefix + (index,))
    return out


WRONG_TYPES = st.one_of(st.none(), st.just(""), st.just([]), st.just({}), st.just(0), st.just(True), st.just("x"),
                        st.just(-1), st.just(2**64), st.just([None]), st.just({"": None}), arbitrary_json(6)).map(copy.deepcopy)


@st.composite
def mutated(draw: Any, base: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """`base` with 1-4 edits at random places: a value replaced (null, wrong type, anything), a
    key deleted, an unknown key added."""
    request = copy.deepcopy(draw(base))
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(request)[1:]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        holder: Any = request
        for part in path[:-1]:
            holder = holder[part]
        action = draw(st.sampled_from(["replace", "replace", "delete", "unknown"]))
        if action == "replace":
            holder[path[-1]] = draw(WRONG_TYPES)
        elif action == "delete" and isinstance(holder, dict):
            del holder[path[-1]]
        elif action == "delete" and isinstance(holder, list):
            holder.pop(path[-1])
        elif isinstance(holder, dict):
            holder[draw(st.text(min_size=1, max_size=10))] = copy.deepcopy(draw(arbitrary_json(4)))
    return request


# ---------------------------------------------------------------------------------------------
# Kind-specific requests for the other controllers: realistic values where the CRD schema alone
# rarely finds the interesting paths (a runtime that resolves, sandboxes that wait for a pool,
# observed children in every state).

IMAGES = st.sampled_from([
    RTE["spec"]["image"], "python:3.11", "docker.io/library/python:3.11", "ghcr.io/x/y@sha256:" + "a" * 64,
    "registry.example.com:5000/team/img:tag", "UPPER/case:bad", "bad image", "x" * 300, "localhost/y",
])


@st.composite
def runtime_request(draw: Any, hook: str = "sync") -> dict[str, Any]:
    parent = draw(crd_object("RuntimeEnvironment"))
    spec = parent.setdefault("spec", {"image": "x", "language": "python"})
    spec["image"] = draw(IMAGES)
    spec["language"] = draw(st.sampled_from(["python", "nodejs", "go", spec.get("language", "python")]))
    if draw(st.booleans()):
        spec["securityFeatures"] = draw(st.lists(st.sampled_from(["gvisor", "seccomp", "non-root", "apparmor", "teleport"]),
                                                 unique=True, max_size=4))
    return {"controller": {"metadata": {"name": "llmsafespace-runtimeenvironment"}}, "parent": parent,
            "children": {}, "related": {}, "finalizing": False}


@st.composite
def profile_request(draw: Any, hook: str = "sync") -> dict[str, Any]:
    parent = draw(crd_object("SandboxProfile"))
    spec = parent.setdefault("spec", {"language": "python"})
    spec["language"] = draw(st.sampled_from(["python", "nodejs", spec.get("language", "python")]))
    if draw(st.booleans()):
        spec["networkPolicies"] = [{"type": draw(st.sampled_from(["egress", "ingress"])), "rules": draw(egress_rules())}]
    if hook == "customize":
        return {"controller": {"metadata": {"name": "llmsafespace-sandboxprofile"}}, "parent": parent}
    return {"controller": {"metadata": {"name": "llmsafespace-sandboxprofile"}}, "parent": parent, "children": {},
            "related": group(draw(runtimes())), "finalizing": False}


@st.composite
def warmpool_request(draw: Any, hook: str = "sync") -> dict[str, Any]:
    from hooks import warmpool_sync
    name = draw(st.one_of(st.just("python-pool"), dns_subdomain()))
    spec = draw(st.fixed_dictionaries({"runtime": st.sampled_from(["python:3.11", "python-3.11", "ruby", "python"])}, optional={
        "securityLevel": st.sampled_from(C.SECURITY_LEVELS), "minSize": st.integers(0, 5), "maxSize": st.integers(0, 6),
        "ttl": st.sampled_from([0, 1, 3600]), "resources": st.fixed_dictionaries({}, optional={"cpu": CPU, "memory": MEMORY}),
        "autoScaling": st.fixed_dictionaries({"enabled": st.booleans()}, optional={
            "targetUtilization": st.integers(1, 100), "scaleDownDelay": st.sampled_from([0, 300])}),
        "preloadScripts": st.lists(st.fixed_dictionaries({"name": dns_label(max_size=20), "script": st.text(min_size=1, max_size=30)}),
                                   max_size=3, unique_by=lambda p: p["name"]),
    }))
    pool = {"apiVersion": C.API_VERSION, "kind": C.KIND_WARMPOOL,
            "metadata": {"name": name, "namespace": "demo", "uid": fake_uid("wp", name), "generation": 1,
                         "creationTimestamp": "2026-11-22T10:00:00Z", **({"labels": draw(labels())} if draw(st.booleans()) else {})},
            "spec": spec}
    if draw(st.booleans()):
        pool["status"] = {"lastScaleTime": draw(TIMESTAMPS), "runtimeEnvironment": "python-3.11"}
    if hook == "finalize" or draw(st.integers(0, 9)) == 0:
        pool["metadata"]["deletionTimestamp"] = "2026-11-22T11:59:59Z"
    if hook == "customize":
        return {"controller": {"metadata": {"name": "llmsafespace-warmpool"}}, "parent": pool}
    sandboxes = []
    for i in range(draw(st.integers(0, 3))):
        sb = copy.deepcopy(draw(sandbox_parent(spec=st.just({"runtime": "python-3.11"}), deleting=False)))
        sb["metadata"]["namespace"] = draw(st.sampled_from(["demo", "demo", "other"]))
        sb["status"] = draw(st.sampled_from([
            {"phase": C.PHASE_PENDING, "warmPool": name}, {"phase": C.PHASE_RUNNING, "warmPool": name, "warmPodUsed": True},
            {"phase": C.PHASE_CREATING, "warmPool": name, "warmPodUsed": False}, {}, {"phase": C.PHASE_TERMINATED, "warmPool": name}]))
        sandboxes.append(sb)
    rel_runtimes = draw(runtimes())
    members = []
    try:
        first = warmpool_sync.sync(sync_request_for(pool, [], rel_runtimes + sandboxes, (C.GVK_WARMPOD,), (C.GVK_SANDBOX, C.GVK_RUNTIME)), NOW)
        desired = first["children"]
    except Exception:  # noqa: BLE001 - reported by the fuzz test itself
        desired = []
    for i, child in enumerate(desired):
        child = copy.deepcopy(child)
        phase = draw(st.sampled_from(["Ready", "Pending", "Failed", "Assigned", None]))
        if phase == "Assigned" and sandboxes:
            target = draw(st.sampled_from(sandboxes))
            child["spec"]["assignment"] = {"sandboxName": target["metadata"]["name"], "sandboxUid": target["metadata"]["uid"]}
        obj = observed(child, pool, **({"phase": phase, "podName": child["metadata"]["name"]} if phase else {}))
        obj["metadata"]["creationTimestamp"] = draw(TIMESTAMPS)
        members.append(obj)
    return sync_request_for(pool, members, rel_runtimes + sandboxes, (C.GVK_WARMPOD,), (C.GVK_SANDBOX, C.GVK_RUNTIME),
                            finalizing=hook == "finalize")


@st.composite
def warmpod_request(draw: Any, hook: str = "sync") -> dict[str, Any]:
    from hooks import warmpod_sync
    parent = draw(crd_object("WarmPod", with_status=False))
    spec = parent["spec"]
    spec["image"] = draw(st.sampled_from([RTE["spec"]["image"], spec["image"]]))
    if "assignment" in spec and draw(st.booleans()):
        spec["assignment"] = {"sandboxName": "victim", "sandboxUid": fake_uid("sb", "demo", "victim")}
    parent["metadata"]["ownerReferences"] = [{"apiVersion": C.API_VERSION, "kind": C.KIND_WARMPOOL, "name": spec["poolRef"]["name"],
                                              "uid": fake_uid("wp", "x"), "controller": True}]
    if hook == "finalize":
        parent["metadata"]["deletionTimestamp"] = "2026-11-22T11:59:59Z"
    alive = copy.deepcopy(parent)
    alive["metadata"].pop("deletionTimestamp", None)
    if draw(st.booleans()):  # an earlier assignment state, so the pod may carry other labels
        alive["spec"].pop("assignment", None)
    try:
        desired = warmpod_sync.sync(sync_request_for(alive, [], [], (C.GVK_POD, C.GVK_NETWORK_POLICY), ()), NOW)["children"]
    except Exception:  # noqa: BLE001
        desired = []
    state = draw(POD_STATES)
    children = []
    for child in desired:
        if draw(st.integers(0, 4)) == 0:
            continue
        obj = observed(child, parent, **(pod_status(state) if child["kind"] == "Pod" else {}))
        if child["kind"] == "Pod" and state == "deleting":
            obj["metadata"]["deletionTimestamp"] = "2026-11-22T11:59:59Z"
        children.append(obj)
    return sync_request_for(parent, children, [], (C.GVK_POD, C.GVK_NETWORK_POLICY), (), finalizing=hook == "finalize")


@st.composite
def tenantnamespace_request(draw: Any, hook: str = "sync") -> dict[str, Any]:
    from hooks import namespace_sync
    target = draw(namespace_object())
    if hook == "customize":  # Metacontroller sends the target as "parent" to customize hooks
        return {"controller": {"metadata": {"name": "llmsafespace-tenantnamespace"}}, "parent": target}
    keys = (C.GVK_NETWORK_POLICY, C.GVK_RESOURCE_QUOTA, C.GVK_LIMIT_RANGE)
    attachments: list[dict[str, Any]] = []
    if draw(st.booleans()):
        alive = copy.deepcopy(target)
        alive["metadata"]["annotations"] = {}
        try:
            attachments = namespace_sync.sync({"object": alive, "attachments": {k: {} for k in keys}, "related": {}}, NOW)["attachments"]
        except Exception:  # noqa: BLE001
            attachments = []
        attachments = [observed({**a, "metadata": {**a["metadata"], "namespace": target["metadata"]["name"]}}, target)
                       for a in attachments]
    request = {"controller": {"metadata": {"name": "llmsafespace-tenantnamespace"}}, "object": target,
               "attachments": {k: {} for k in keys}, "related": {}, "finalizing": False}
    request["attachments"].update(group(attachments))
    return request


def sync_request_for(parent: dict[str, Any], children: list[dict[str, Any]], related: list[dict[str, Any]],
                     child_keys: tuple[str, ...], related_keys: tuple[str, ...], finalizing: bool = False) -> dict[str, Any]:
    from tests.factory import sync_request
    return sync_request(parent, children=children, related=related, finalizing=finalizing,
                        child_keys=child_keys, related_keys=related_keys)


KIND_REQUESTS.update({
    "runtimeenvironment": lambda hook: runtime_request(hook),
    "sandboxprofile": lambda hook: profile_request(hook),
    "warmpool": lambda hook: warmpool_request(hook),
    "warmpod": lambda hook: warmpod_request(hook),
    "tenantnamespace": lambda hook: tenantnamespace_request(hook),
})


# ---------------------------------------------------------------------------------------------
# Warm-pool lifecycles for the convergence harness (tests/test_convergence.py): each is a plain
# dict of choices; the test turns it into objects and rounds.

# What can go missing or become invalid under a warm-served sandbox about to be deleted.
BREAKAGES = ("none", "runtime-deleted", "runtime-unavailable", "pool-invalid", "pool-custom", "pool-deleted")


def _pool_shape(draw: Any, min_sizes: st.SearchStrategy[int]) -> dict[str, Any]:
    spec: dict[str, Any] = {"minSize": draw(min_sizes)}
    if draw(st.booleans()):
        spec["autoScaling"] = {"enabled": True, "targetUtilization": draw(st.sampled_from([50, 80])),
                               "scaleDownDelay": draw(st.sampled_from([10, 60]))}
    if draw(st.booleans()):
        spec["maxSize"] = spec["minSize"] + draw(st.integers(1, 4))
    return spec


@st.composite
def deletion_scenario(draw: Any) -> dict[str, Any]:
    """Warm-served sandboxes deleted while, before or after, their pool's inputs break."""
    return {
        "seed": draw(st.integers(0, 2**16)),
        "stale": draw(st.sampled_from([0.0, 0.15, 0.3])),
        "pool": _pool_shape(draw, st.integers(0, 3)),
        "sandboxes": draw(st.integers(1, 4)),
        "breakage": draw(st.sampled_from(BREAKAGES)),
        "break_before": draw(st.booleans()),
        "gap": draw(st.integers(0, 3)),  # rounds between the breakage and the deletions (or back)
        "kubelet_speed": draw(st.sampled_from([0.5, 0.7, 1.0])),
    }


@st.composite
def ttl_scenario(draw: Any) -> dict[str, Any]:
    """A pool whose idle pods expire several times over, with a kubelet of random speed."""
    spec = _pool_shape(draw, st.integers(1, 5))
    spec["ttl"] = draw(st.integers(10, 60))
    return {"seed": draw(st.integers(0, 2**16)), "stale": draw(st.sampled_from([0.0, 0.15, 0.3])), "pool": spec,
            "kubelet_speed": draw(st.sampled_from([0.4, 0.7, 1.0]))}


@st.composite
def burst_scenario(draw: Any) -> dict[str, Any]:
    """A burst of warm sandboxes arriving at a pool of minSize 0 to 2 (maxSize, when set, leaves
    room for the burst)."""
    burst = draw(st.integers(1, 6))
    spec = _pool_shape(draw, st.integers(0, 2))
    if "maxSize" in spec:
        spec["maxSize"] = max(spec["maxSize"], burst)
    return {"seed": draw(st.integers(0, 2**16)), "stale": draw(st.sampled_from([0.0, 0.15])), "pool": spec,
            "burst": burst, "spread": draw(st.integers(0, 2))}  # rounds between two arrivals
