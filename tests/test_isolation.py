"""Isolation checked with real tools, on what the hooks actually emit.

1. checkov (Kubernetes framework, offline): every pod the hooks can emit — every sandbox case of
   tests/sandbox_cases.py (all security levels, profiles, storage, pinning, warm fallbacks), a
   runtime pinned by digest, and the warm pods of hooks/warmpod_sync.py (idle, assigned, high
   security with preload scripts) — written as YAML next to the NetworkPolicies emitted with it,
   scanned in one run. Zero failed checks apart from EXEMPTIONS, each with its reason; the
   number of scanned resources must equal what was written (checkov can silently scan nothing).
2. np-guard's nca (network-config-analyzer): the NetworkPolicies of several sandboxes in one
   namespace, next to the API, the hook server, cluster DNS, other kube-system pods, unrelated and
   impersonating pods, analysed as a connectivity report (txt_no_fw_rules, one line per allowed
   connection) and with --forbids / --permits queries.

The tools come from tools/install_tools.py (.tools/bin); a missing tool fails the test with the
command that installs it. Nothing here is skipped."""
from __future__ import annotations

import copy
import ipaddress
import json
import re
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable

import pytest
import yaml

from hooks import constants as C
from hooks.config import Config
from hooks.server.routes import ROUTES
from tests import sandbox_cases
from tests.factory import NOW, fake_uid, runtime, sandbox, sync_request
from tests.tooling import tool

# ---------------------------------------------------------------------------------------------
# What the hooks emit


def _children(path: str, request: dict[str, Any], config: Config = Config()) -> list[dict[str, Any]]:
    return ROUTES[path].function(copy.deepcopy(request), NOW, config)["children"]


def warmpod_parent(name: str = "python-0", assigned_to: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    parent: dict[str, Any] = {
        "apiVersion": C.API_VERSION, "kind": C.KIND_WARMPOD,
        "metadata": {"name": name, "namespace": "demo", "uid": fake_uid("wpod", name), "generation": 1,
                     "creationTimestamp": "2026-11-22T11:00:00Z",
                     "labels": {C.LABEL_WARMPOOL: "python"}},
        "spec": {"poolRef": {"name": "python"}, "runtime": "python-3.11", "image": runtime()["spec"]["image"],
                 "securityLevel": "standard", "resources": {"cpu": "500m", "memory": "512Mi", "ephemeralStorage": "1Gi"},
                 **spec},
    }
    if assigned_to is not None:
        parent["spec"]["assignment"] = {"sandboxName": assigned_to["metadata"]["name"], "sandboxUid": assigned_to["metadata"]["uid"]}
    return parent


def warmpod_request(parent: dict[str, Any]) -> dict[str, Any]:
    return sync_request(parent, child_keys=(C.GVK_POD, C.GVK_NETWORK_POLICY), related_keys=())


# Every spec knob that shapes the pod, at its usual value and its extremes.
POD_KNOBS: list[dict[str, Any]] = [
    {"securityLevel": "high", "securityContext": {"runAsUser": 2**31 - 1, "runAsGroup": 2**31 - 1}},
    {"securityLevel": "custom", "securityContext": {"runAsUser": 1, "runAsGroup": 1, "seccompProfile": {
        "type": "Localhost", "localhostProfile": "profiles/strict.json"}}},
    {"securityContext": {"runAsUser": 65534, "runAsGroup": 65534, "seccompProfile": {"type": "RuntimeDefault"}}},
    {"filesystem": {"writablePaths": []}, "resources": {"cpu": "1m", "memory": "1Ki", "ephemeralStorage": "1Ki"}},
    {"filesystem": {"writablePaths": [f"/w/{i}" for i in range(32)]}, "timeout": 3600, "lifetimeSeconds": 31_536_000},
    {"storage": {"persistent": True, "volumeSize": "1Ti", "storageClassName": "fast"}, "resources": {"cpuPinning": True, "cpu": "64", "memory": "512Gi"}},
    {"securityLevel": "high", "storage": {"persistent": True}, "networkAccess": {"ingress": True, "egress": [{"cidr": "::/0"}]}},
]


def _sandbox_sources() -> dict[str, dict[str, Any]]:
    out = {f"sandbox-{k}": v() for k, v in sandbox_cases.SYNC_CASES.items()}
    for i, spec in enumerate(POD_KNOBS):
        out[f"sandbox-knobs-{i}"] = sandbox_cases.creating(sandbox(f"knobs-{i}", spec=spec), runtime())
    digest_rte = runtime(image="ghcr.io/llmsafespace/runtime-python@sha256:" + "0" * 64)
    out["sandbox-digest-image"] = sandbox_cases.creating(sandbox("pinned-image"), digest_rte)
    out["sandbox-digest-image-high"] = sandbox_cases.creating(sandbox("pinned-high", spec={"securityLevel": "high"}), digest_rte)
    return out


def _warmpod_sources() -> dict[str, dict[str, Any]]:
    user = sandbox("user")
    return {
        "warmpod-idle": warmpod_request(warmpod_parent()),
        "warmpod-assigned": warmpod_request(warmpod_parent("python-1", assigned_to=user)),
        "warmpod-high-preload": warmpod_request(warmpod_parent("python-2", securityLevel="high", preloadScripts=[
            {"name": "import-numpy", "script": "python -c 'import numpy'"}])),
        "warmpod-digest": warmpod_request(warmpod_parent("python-3", image="ghcr.io/llmsafespace/runtime-python@sha256:" + "0" * 64)),
    }


# Route path -> representative requests. Every route whose controller can create Pods must be
# listed (test_every_pod_emitting_route_is_scanned checks it).
POD_SOURCES: dict[str, Callable[[], dict[str, dict[str, Any]]]] = {
    "/sandbox/sync": _sandbox_sources,
    "/warmpod/sync": _warmpod_sources,
}


def pod_emitting_routes() -> set[str]:
    """Sync routes of controllers whose manifest lists pods as a child resource."""
    from tests.strategies import manifest_for
    out = set()
    for path, route in ROUTES.items():
        if route.hook != "sync":
            continue
        kind, spec, _ = manifest_for(path)
        rules = spec.get("attachments") if kind == "DecoratorController" else spec.get("childResources")
        if any(r["resource"] == "pods" for r in rules or []):
            out.add(path)
    return out


def emitted_workloads() -> dict[str, list[dict[str, Any]]]:
    """case -> the Pods and NetworkPolicies one sync emits (cases without a pod are left out)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for path, sources in POD_SOURCES.items():
        if path not in ROUTES:
            continue  # that hook has not landed yet
        for case, request in sources().items():
            objs = [c for c in _children(path, request) if c["kind"] in ("Pod", "NetworkPolicy")]
            if any(o["kind"] == "Pod" for o in objs):
                out[case] = objs
    return out


# Pod fields the API server stores only when true (plain booleans with omitempty): a false value
# we emit is dropped, so the child never equals what we asked for and Metacontroller rewrites an
# InPlace child on every sync (seen on a real control plane: 5 PUTs per warm pod).
DROPPED_WHEN_FALSE = {"spec": ("hostNetwork", "hostPID", "hostIPC"), "container": ("stdin", "stdinOnce", "tty")}


def test_pods_are_in_the_api_servers_canonical_form() -> None:
    pods = [o for objs in emitted_workloads().values() for o in objs if o["kind"] == "Pod"]
    assert pods
    for pod in pods:
        spec = pod["spec"]
        assert not [k for k in DROPPED_WHEN_FALSE["spec"] if spec.get(k) is False], pod["metadata"]["name"]
        for container in spec["containers"] + spec.get("initContainers", []):
            assert not [k for k in DROPPED_WHEN_FALSE["container"] if container.get(k) is False], pod["metadata"]["name"]


# ---------------------------------------------------------------------------------------------
# 1. checkov

CHECKOV_ARGS = ("--framework", "kubernetes", "--compact", "--skip-download", "-o", "json")
# check id -> (reason, which pods it applies to). Nothing else may fail.
EXEMPTIONS: dict[str, tuple[str, Callable[[dict[str, Any]], bool]]] = {
    "CKV_K8S_43": (
        "image digest: runtime images come from RuntimeEnvironment.spec.image, by tag unless the operator pins a "
        "digest there (pods of a digest-pinned runtime are scanned without this exemption); hooks cannot resolve tags",
        lambda pod: any("@sha256:" not in c["image"] for c in pod["spec"]["containers"] + pod["spec"].get("initContainers", [])),
    ),
    "CKV_K8S_15": (
        "imagePullPolicy Always: IfNotPresent on purpose, for cold-start latency and warm pods; runtime images are "
        "operator-curated and readable by every tenant, so a cached image reveals nothing; pin digests for immutability",
        lambda pod: True,
    ),
    "CKV_K8S_40": (
        "UID >= 10000: sandboxes run as 1000 by default (the runtime images' user, original design) and tenants "
        "may choose any non-root UID; runAsNonRoot, no capabilities, no privilege escalation, seccomp and gVisor "
        "(high) bound what a UID can do on the node",
        lambda pod: pod["spec"]["securityContext"]["runAsUser"] < 10000,
    ),
    "CKV_K8S_35": (
        "secrets as files rather than environment variables: spec.env valueFrom.secretKeyRef and spec.envFrom are "
        "what users ask for (issue 15; agents read API keys from the environment); only the sandbox's own Secrets, "
        "by reference, reach its own container (docs/environment.md)",
        lambda pod: any("env" in c or "envFrom" in c for c in pod["spec"]["containers"]),
    ),
    "CKV_K8S_31": (
        "seccomp runtime/default: pods of securityLevel custom (or of a profile naming one) use a Localhost "
        "profile, which Pod Security 'restricted' allows and which is stricter by design",
        lambda pod: pod["spec"]["securityContext"]["seccompProfile"]["type"] == "Localhost",
    ),
}
# Checks that implement Pod Security Standards "restricted" (and baseline) controls: each must
# have been evaluated (passed, or failed under an exemption above) for every pod.
PSS_CHECKS = (
    "CKV_K8S_16",  # privileged
    "CKV_K8S_17", "CKV_K8S_18", "CKV_K8S_19",  # host PID / IPC / network
    "CKV_K8S_20",  # allowPrivilegeEscalation
    "CKV_K8S_23",  # runAsNonRoot
    "CKV_K8S_25", "CKV_K8S_28", "CKV_K8S_37", "CKV_K8S_39",  # capabilities
    "CKV_K8S_26",  # hostPort
    "CKV_K8S_27",  # host path to the docker socket
    "CKV_K8S_31",  # seccomp
    "CKV_K8S_22",  # read-only root filesystem (beyond PSS)
    "CKV_K8S_38",  # service-account token automount (beyond PSS)
    "CKV2_K8S_6",  # a NetworkPolicy selects the pod
)


def _resource_id(obj: dict[str, Any]) -> str:
    return f"{obj['kind']}.{obj['metadata']['namespace']}.{obj['metadata']['name']}"


@pytest.fixture(scope="module")
def checkov_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    workloads = emitted_workloads()
    directory = tmp_path_factory.mktemp("checkov")
    written: dict[str, dict[str, Any]] = {}
    for case, objs in sorted(workloads.items()):
        # One namespace per case: names repeat across cases, and checkov keys resources by name.
        objs = copy.deepcopy(objs)
        for obj in objs:
            obj["metadata"]["namespace"] = f"case-{case}"[:63].rstrip("-")
            written[_resource_id(obj)] = obj
        (directory / f"{case}.yaml").write_text(yaml.safe_dump_all(objs, sort_keys=True), encoding="utf-8")
    result = subprocess.run([tool("checkov"), "-d", str(directory), *CHECKOV_ARGS],
                            capture_output=True, text=True, timeout=300)
    assert result.stdout.strip(), f"checkov printed nothing (rc {result.returncode}):\n{result.stderr[-3000:]}"
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    kubernetes = [r for r in reports if r.get("check_type") == "kubernetes"]
    assert len(kubernetes) == 1, f"checkov ran no kubernetes scan: {[r.get('check_type') for r in reports]}"
    return {"report": kubernetes[0], "written": written, "workloads": workloads, "rc": result.returncode}


def test_every_pod_emitting_route_is_scanned() -> None:
    missing = pod_emitting_routes() - set(POD_SOURCES)
    assert not missing, f"routes that create Pods but have no cases in POD_SOURCES: {sorted(missing)}"


def test_checkov_scanned_everything_written(checkov_report: dict[str, Any]) -> None:
    summary = checkov_report["report"]["summary"]
    written = checkov_report["written"]
    assert summary["parsing_errors"] == 0, checkov_report["report"]["results"].get("parsing_errors")
    assert summary["resource_count"] == len(written), (summary, len(written))
    pods = {k for k, v in written.items() if v["kind"] == "Pod"}
    assert len(pods) >= len(sandbox_cases.SYNC_CASES) - 5  # cases without a pod: invalid, waiting, expired, ...
    assert all(any(f".case-sandbox-knobs-{i}." in p for p in pods) for i in range(len(POD_KNOBS))), "a knob case emitted no pod"
    results = checkov_report["report"]["results"]
    evaluated = {r["resource"] for key in ("passed_checks", "failed_checks") for r in results.get(key, [])}
    assert pods <= evaluated, f"pods checkov did not evaluate: {sorted(pods - evaluated)}"
    if "/warmpod/sync" in ROUTES:
        assert any(".case-warmpod-" in p for p in pods), "no warm pod was scanned"


def test_no_failed_checks_beyond_the_exemptions(checkov_report: dict[str, Any]) -> None:
    written = checkov_report["written"]
    unexpected = []
    for failure in checkov_report["report"]["results"].get("failed_checks", []):
        obj = written.get(failure["resource"])
        exemption = EXEMPTIONS.get(failure["check_id"])
        if obj is None or exemption is None or not exemption[1](obj):
            unexpected.append(f"{failure['resource']}: {failure['check_id']} {failure['check_name']}")
    assert not unexpected, "checkov failures without an exemption:\n" + "\n".join(sorted(unexpected))
    if not unexpected:
        assert checkov_report["rc"] in (0, 1)


def test_pod_security_checks_ran_for_every_pod(checkov_report: dict[str, Any]) -> None:
    results = checkov_report["report"]["results"]
    seen: dict[str, set[str]] = defaultdict(set)
    for key in ("passed_checks", "failed_checks"):
        for r in results.get(key, []):
            seen[r["resource"]].add(r["check_id"])
    for resource, obj in checkov_report["written"].items():
        if obj["kind"] == "Pod":
            missing = set(PSS_CHECKS) - seen[resource]
            assert not missing, f"{resource}: checkov did not evaluate {sorted(missing)}"


def test_digest_pinned_pods_need_no_image_exemption(checkov_report: dict[str, Any]) -> None:
    pinned = {k for k, v in checkov_report["written"].items()
              if v["kind"] == "Pod" and "@sha256:" in v["spec"]["containers"][0]["image"]}
    assert pinned, "no digest-pinned pod was scanned"
    failed = {(r["resource"], r["check_id"]) for r in checkov_report["report"]["results"].get("failed_checks", [])}
    assert not {(p, "CKV_K8S_43") for p in pinned} & failed


def test_exemptions_are_still_needed(checkov_report: dict[str, Any]) -> None:
    """An exemption nobody needs any more is removed, so it cannot hide a later regression."""
    failed = {r["check_id"] for r in checkov_report["report"]["results"].get("failed_checks", [])}
    assert set(EXEMPTIONS) <= failed, f"unused exemptions: {sorted(set(EXEMPTIONS) - failed)}"


# ---------------------------------------------------------------------------------------------
# 2. nca: who can talk to whom

TENANT = "demo"
API_NS = Config().api_namespace
DNS_NS = Config().dns_namespace
FETCHER_RULES = [
    {"domain": "pypi.org", "ports": [{"port": 443}]},
    {"cidr": "203.0.113.0/24", "ports": [{"port": 5432}, {"port": 53, "protocol": "UDP"}]},
    {"cidr": "::/0", "ports": [{"port": 443}]},
    {"cidr": "8.0.0.0/6", "ports": [{"port": 22}]},  # contains 10.0.0.0/8: must stay excluded
]


def _plain_pod(name: str, ns: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "registry.example/x:1"}]}}


def _sandboxes() -> dict[str, dict[str, Any]]:
    return {
        "fetcher": sandbox("fetcher", spec={"networkAccess": {"egress": FETCHER_RULES}}),
        "webapp": sandbox("webapp", spec={"networkAccess": {"ingress": True}}),
        "plain": sandbox("plain"),
    }


class Topology:
    """Pods, namespaces and the emitted policies, written for nca."""

    def __init__(self, directory: Path, config: Config = Config()) -> None:
        self.dir = directory
        self.config = config
        self.policies: list[dict[str, Any]] = []
        self.pods: list[dict[str, Any]] = []
        self.sandbox_pods: dict[str, str] = {}  # sandbox name -> "ns/pod"
        self.ingress_open: set[str] = set()
        rte = runtime()
        for sb_name, parent in _sandboxes().items():
            children = _children("/sandbox/sync", sandbox_cases.creating(parent, rte), config)
            self.policies += [c for c in children if c["kind"] == "NetworkPolicy"]
            pod = next(c for c in children if c["kind"] == "Pod")
            self.pods.append(pod)
            self.sandbox_pods[sb_name] = f"{TENANT}/{pod['metadata']['name']}"
            if parent["spec"].get("networkAccess", {}).get("ingress"):
                self.ingress_open.add(sb_name)
        if "/warmpod/sync" in ROUTES:
            self._add_warm_pods(rte)
        self.pods += [
            _plain_pod("api-0", API_NS, {C.LABEL_APP: C.APP_NAME, C.LABEL_COMPONENT: C.COMPONENT_API}),
            _plain_pod("hooks-0", API_NS, {C.LABEL_APP: C.APP_NAME, C.LABEL_COMPONENT: "hooks"}),
            _plain_pod("coredns-0", DNS_NS, dict(Config().dns_pod_labels)),
            _plain_pod("metrics-server-0", DNS_NS, {"k8s-app": "metrics-server"}),
            _plain_pod("intruder", "other", {"app": "intruder"}),
            # Impersonators: the API's labels, but in the wrong namespace.
            _plain_pod("fake-api", "other", {C.LABEL_APP: C.APP_NAME, C.LABEL_COMPONENT: C.COMPONENT_API}),
            _plain_pod("fake-api", TENANT, {C.LABEL_APP: C.APP_NAME, C.LABEL_COMPONENT: C.COMPONENT_API}),
        ]
        namespaces = sorted({p["metadata"]["namespace"] for p in self.pods})
        self.namespaces = [{"apiVersion": "v1", "kind": "Namespace",
                            "metadata": {"name": n, "labels": {"kubernetes.io/metadata.name": n}}} for n in namespaces]
        self.np_file = self._write("policies.yaml", self.policies)
        self.pod_file = self._write("pods.yaml", {"apiVersion": "v1", "kind": "PodList", "items": self.pods})
        self.ns_file = self._write("namespaces.yaml", {"apiVersion": "v1", "kind": "NamespaceList", "items": self.namespaces})

    def _add_warm_pods(self, rte: dict[str, Any]) -> None:
        """An idle warm pod, and a sandbox served by a warm pod (its policies select the pod)."""
        idle = _children("/warmpod/sync", warmpod_request(warmpod_parent("python-0")), self.config)
        self.policies += [c for c in idle if c["kind"] == "NetworkPolicy"]
        self.idle_warm_pod = f"{TENANT}/" + next(c for c in idle if c["kind"] == "Pod")["metadata"]["name"]
        self.pods += [c for c in idle if c["kind"] == "Pod"]
        warm_request = sandbox_cases.warm_bound()
        parent = warm_request["parent"]
        warm_pod = warmpod_parent("python-1", assigned_to=parent)
        assigned = _children("/warmpod/sync", warmpod_request(warm_pod), self.config)
        # The WarmPod the sandbox adopts is this one: its policies select this pod's serving selector.
        bound = next(iter(warm_request["related"][C.GVK_WARMPOD].values()))
        bound["metadata"]["uid"] = warm_pod["metadata"]["uid"]
        bound["status"]["servingSelector"] = {C.LABEL_APP: C.APP_NAME, C.LABEL_WARMPOD_UID: warm_pod["metadata"]["uid"]}
        self.policies += [c for c in assigned if c["kind"] == "NetworkPolicy"]
        self.policies += [c for c in _children("/sandbox/sync", warm_request, self.config) if c["kind"] == "NetworkPolicy"]
        pod = next(c for c in assigned if c["kind"] == "Pod")
        self.pods.append(pod)
        self.sandbox_pods[parent["metadata"]["name"]] = f"{TENANT}/{pod['metadata']['name']}"

    def _write(self, name: str, content: Any) -> Path:
        path = self.dir / name
        docs = content if isinstance(content, list) else [content]
        path.write_text(yaml.safe_dump_all(docs, sort_keys=True), encoding="utf-8")
        return path

    def nca(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([tool("nca"), *args, "--pod_list", str(self.pod_file), "--ns_list", str(self.ns_file)],
                              capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Topology:
    return Topology(tmp_path_factory.mktemp("nca"))


# "src => dst : conn" lines of `--output_format txt_no_fw_rules`.
_LINE = re.compile(r"^(?P<src>\S+) => (?P<dst>\S+) : (?P<conn>.+)$")
ALL = frozenset({("ALL", 0)})


def parse_conn(text: str) -> frozenset[tuple[str, int]]:
    """"All connections" -> ALL; "{protocols:TCP, UDP,dst_ports:53}" -> {(TCP,53),(UDP,53)}.
    Port ranges a-b are expanded (the policies here only name a few ports)."""
    text = text.strip()
    if text == "All connections":
        return ALL
    out: set[tuple[str, int]] = set()
    for part in re.findall(r"\{([^}]*)\}", text):
        protos = re.search(r"protocols:([A-Z, ]+?)(,dst_ports|$)", part)
        ports = re.search(r"dst_ports:([0-9,\-]+)", part)
        assert protos and ports, f"cannot read nca connection {text!r}"
        for proto in (p.strip() for p in protos.group(1).split(",")):
            for item in ports.group(1).split(","):
                low, _, high = item.partition("-")
                for port in range(int(low), int(high or low) + 1):
                    out.add((proto, port))
    assert out, f"cannot read nca connection {text!r}"
    return frozenset(out)


def _endpoint(text: str) -> Any:
    if text.endswith("[Pod]"):
        return text.removesuffix("[Pod]")
    low, _, high = text.partition("-")
    return (ipaddress.ip_address(low), ipaddress.ip_address(high or low))


@pytest.fixture(scope="module")
def connectivity(topology: Topology) -> dict[tuple[Any, Any], frozenset[tuple[str, int]]]:
    return _connectivity(topology)


def _connectivity(topology: Topology) -> dict[tuple[Any, Any], frozenset[tuple[str, int]]]:
    result = topology.nca("--connectivity", str(topology.np_file), "--output_format", "txt_no_fw_rules", "--print_ipv6")
    assert result.returncode == 0, result.stdout + result.stderr
    conns: dict[tuple[Any, Any], frozenset[tuple[str, int]]] = {}
    for line in result.stdout.splitlines():
        match = _LINE.match(line.strip())
        if match:  # one line per protocol group: merge them
            key = (_endpoint(match["src"]), _endpoint(match["dst"]))
            conn = parse_conn(match["conn"])
            conns[key] = ALL if ALL in (conn, conns.get(key)) else conns.get(key, frozenset()) | conn
    assert len(conns) > 10, f"nca reported almost nothing:\n{result.stdout}\n{result.stderr}"
    return conns


API_POD = f"{API_NS}/api-0"
DNS_POD = f"{DNS_NS}/coredns-0"
# Written out, not read from hooks/constants.py: the list the hooks exclude is what is under test.
PRIVATE = [ipaddress.ip_network(c) for c in (
    "10.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16",
    "fc00::/7", "fe80::/10",
    # IPv6 spellings of IPv4 addresses (issue 13, item 3): IPv4-compatible, IPv4-mapped, NAT64, 6to4.
    "::/96", "::ffff:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48", "2002::/16",
)]
SANDBOX_PORT = frozenset({("TCP", C.SANDBOX_PORT)})
DNS = frozenset({("TCP", 53), ("UDP", 53)})


def _overlaps(low: Any, high: Any, net: Any) -> bool:
    return low.version == net.version and low <= net.broadcast_address and high >= net.network_address


def test_sandboxes_accept_only_the_api_and_their_own_ingress(topology: Topology, connectivity: dict[Any, Any]) -> None:
    for sb_name, pod in topology.sandbox_pods.items():
        sources = {src: conn for (src, dst), conn in connectivity.items() if dst == pod}
        assert sources.get(API_POD) == SANDBOX_PORT, f"{pod}: the API must reach it on exactly TCP {C.SANDBOX_PORT}"
        for src, conn in sources.items():
            if src == API_POD:
                continue
            assert sb_name in topology.ingress_open, f"{pod} accepts {set(conn)} from {src}"
            assert conn == SANDBOX_PORT, f"{pod}: ingress opens more than the sandbox port to {src}: {set(conn)}"
        if sb_name not in topology.ingress_open:
            assert set(sources) == {API_POD}, f"{pod} accepts traffic from {sorted(map(str, sources))}"


def test_sandboxes_reach_no_other_pod_but_dns_and_the_api(topology: Topology, connectivity: dict[Any, Any]) -> None:
    for pod in topology.sandbox_pods.values():
        targets = {dst: conn for (src, dst), conn in connectivity.items() if src == pod and isinstance(dst, str)}
        assert targets.get(DNS_POD) == DNS, f"{pod}: DNS must be reachable on exactly 53/TCP+UDP, got {targets.get(DNS_POD)}"
        assert API_POD in targets, f"{pod} cannot reach the API"
        assert set(targets) == {DNS_POD, API_POD}, f"{pod} reaches {sorted(set(targets) - {DNS_POD, API_POD})}"


def _allowed_ports(rule: dict[str, Any]) -> frozenset[tuple[str, int]]:
    ports = rule.get("ports") or [{"port": 443}, {"port": 80}]
    return frozenset((p.get("protocol", "TCP"), p["port"]) for p in ports)


def _rule_net(rule: dict[str, Any]) -> Any:
    return ipaddress.ip_network(rule.get("cidr") or C.PUBLIC_CIDR)


def test_sandbox_egress_reaches_only_public_addresses_on_allowed_ports(topology: Topology, connectivity: dict[Any, Any]) -> None:
    rules = {"fetcher": FETCHER_RULES}
    for sb_name, pod in topology.sandbox_pods.items():
        ranges = {dst: conn for (src, dst), conn in connectivity.items() if src == pod and not isinstance(dst, str)}
        if not rules.get(sb_name):
            assert not ranges, f"{pod} (no egress rules) reaches {ranges}"
            continue
        assert ranges, f"{pod}: its egress rules open nothing"
        for (low, high), conn in ranges.items():
            for net in PRIVATE:
                assert not _overlaps(low, high, net), f"{pod} reaches {low}-{high}, inside private range {net}"
            allowed: set[tuple[str, int]] = set()
            for rule in rules[sb_name]:
                net = _rule_net(rule)
                if low.version == net.version and net.network_address <= low and high <= net.broadcast_address:
                    allowed |= _allowed_ports(rule)
            assert conn != ALL and conn <= allowed, f"{pod} reaches {low}-{high} on {sorted(conn - allowed)}"


def test_idle_warm_pods_are_unreachable_and_reach_nothing(topology: Topology, connectivity: dict[Any, Any]) -> None:
    if "/warmpod/sync" not in ROUTES:
        return  # no warm pods before hooks/warmpod_sync.py is routed
    pod = topology.idle_warm_pod
    touching = {(s, d): c for (s, d), c in connectivity.items() if pod in (s, d)}
    assert not touching, f"idle warm pod {pod}: {touching}"


# --forbids / --permits: NetworkPolicy-shaped statements of what must (not) be possible.

def _statement(name: str, ns: str, selector: dict[str, str], direction: str, peers: list[dict[str, Any]],
               ports: Iterable[tuple[str, int]] = ()) -> dict[str, Any]:
    rule: dict[str, Any] = {"to" if direction == "Egress" else "from": peers}
    if ports:
        rule["ports"] = [{"protocol": p, "port": n} for p, n in ports]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": name, "namespace": ns},
            "spec": {"podSelector": {"matchLabels": selector}, "policyTypes": [direction], direction.lower(): [rule]}}


def _sandbox_selector(topology: Topology, sb_name: str) -> dict[str, str]:
    pod_ref = topology.sandbox_pods[sb_name]
    pod = next(p for p in topology.pods if f"{p['metadata']['namespace']}/{p['metadata']['name']}" == pod_ref)
    return {C.LABEL_SANDBOX_UID: pod["metadata"]["labels"][C.LABEL_SANDBOX_UID]}


def _query(topology: Topology, query: str, statements: list[dict[str, Any]], name: str) -> subprocess.CompletedProcess[str]:
    path = topology._write(name, statements)
    return topology.nca(f"--{query}", str(path), "--base_np_list", str(topology.np_file))


def test_nca_forbids_cross_sandbox_private_and_impersonated_traffic(topology: Topology) -> None:
    statements = []
    names = sorted(topology.sandbox_pods)
    for a in names:
        sel = _sandbox_selector(topology, a)
        others = [{"podSelector": {"matchLabels": _sandbox_selector(topology, b)}} for b in names if b != a]
        statements.append(_statement(f"{a}-to-sandboxes", TENANT, sel, "Egress", others))
        statements.append(_statement(f"{a}-to-private", TENANT, sel, "Egress",
                                     [{"ipBlock": {"cidr": str(c)}} for c in PRIVATE]))
        statements.append(_statement(f"{a}-to-metadata-in-ipv6", TENANT, sel, "Egress", [
            {"ipBlock": {"cidr": c}} for c in ("::ffff:169.254.169.254/128", "64:ff9b::a9fe:a9fe/128", "2002:a9fe:a9fe::/48")]))
        statements.append(_statement(f"{a}-to-hooks-and-kube-system", TENANT, sel, "Egress", [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": API_NS}},
             "podSelector": {"matchLabels": {C.LABEL_COMPONENT: "hooks"}}},
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": DNS_NS}},
             "podSelector": {"matchLabels": {"k8s-app": "metrics-server"}}}]))
        if a not in topology.ingress_open:
            statements.append(_statement(f"{a}-from-impersonators", TENANT, sel, "Ingress", [
                {"podSelector": {"matchLabels": {C.LABEL_COMPONENT: C.COMPONENT_API}}},
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "other"}}}]))
            statements.append(_statement(f"{a}-from-api-other-ports", TENANT, sel, "Ingress", [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": API_NS}}}],
                [("TCP", 22), ("TCP", 8081), ("UDP", 8080)]))
        statements.append(_statement(f"{a}-dns-other-ports", TENANT, sel, "Egress", [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": DNS_NS}}}], [("TCP", 80), ("UDP", 123)]))
    result = _query(topology, "forbids", statements, "forbid.yaml")
    assert result.returncode == 0, f"nca --forbids failed:\n{result.stdout}\n{result.stderr}"
    assert "forbids connections specified in" in result.stdout


def test_nca_permits_what_sandboxes_need(topology: Topology) -> None:
    statements = []
    for sb_name in sorted(topology.sandbox_pods):
        sel = _sandbox_selector(topology, sb_name)
        statements.append(_statement(f"{sb_name}-dns", TENANT, sel, "Egress", [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": DNS_NS}},
             "podSelector": {"matchLabels": dict(Config().dns_pod_labels)}}], sorted(DNS)))
        statements.append(_statement(f"{sb_name}-from-api", TENANT, sel, "Ingress", [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": API_NS}},
             "podSelector": {"matchLabels": {C.LABEL_APP: C.APP_NAME, C.LABEL_COMPONENT: C.COMPONENT_API}}}],
            sorted(SANDBOX_PORT)))
    sel = _sandbox_selector(topology, "fetcher")
    statements.append(_statement("fetcher-pypi", TENANT, sel, "Egress",
                                 [{"ipBlock": {"cidr": "0.0.0.0/0", "except": list(C.PRIVATE_CIDRS)}}], [("TCP", 443)]))
    statements.append(_statement("fetcher-db", TENANT, sel, "Egress",
                                 [{"ipBlock": {"cidr": "203.0.113.0/24"}}], [("TCP", 5432), ("UDP", 53)]))
    result = _query(topology, "permits", statements, "permit.yaml")
    assert result.returncode == 0, f"nca --permits failed:\n{result.stdout}\n{result.stderr}"


# NodeLocal DNSCache: pods query a link-local address on their node (169.254.20.10), which the
# private-range exclusion and the kube-dns pod selector both block. The operator names it.
NODE_LOCAL_DNS = ipaddress.ip_address("169.254.20.10")
NODE_LOCAL_CONFIG = Config(node_local_dns_addresses=(str(NODE_LOCAL_DNS),), node_local_dns_port=53)


@pytest.fixture(scope="module")
def node_local_topology(tmp_path_factory: pytest.TempPathFactory) -> Topology:
    return Topology(tmp_path_factory.mktemp("nca-node-local"), NODE_LOCAL_CONFIG)


def _link_local(connectivity: dict[Any, Any], pod: str) -> dict[Any, frozenset[tuple[str, int]]]:
    net = ipaddress.ip_network("169.254.0.0/16")
    return {dst: conn for (src, dst), conn in connectivity.items()
            if src == pod and not isinstance(dst, str) and _overlaps(dst[0], dst[1], net)}


def test_node_local_dns_is_reachable_on_exactly_its_address_and_port(node_local_topology: Topology) -> None:
    conns = _connectivity(node_local_topology)
    for pod in node_local_topology.sandbox_pods.values():
        assert _link_local(conns, pod) == {(NODE_LOCAL_DNS, NODE_LOCAL_DNS): DNS}, f"{pod}: {_link_local(conns, pod)}"
        targets = {dst for (src, dst) in conns if src == pod and isinstance(dst, str)}
        assert targets == {DNS_POD, API_POD}, f"{pod} reaches {sorted(targets)}"  # kube-dns stays reachable
    # An idle warm pod still reaches nothing.
    if "/warmpod/sync" in ROUTES:
        assert not {k for k in conns if node_local_topology.idle_warm_pod in k}


def test_node_local_dns_is_closed_by_default(topology: Topology, connectivity: dict[Any, Any]) -> None:
    for pod in topology.sandbox_pods.values():
        assert _link_local(connectivity, pod) == {}, pod


def test_nca_permits_node_local_dns_and_forbids_its_other_ports(node_local_topology: Topology) -> None:
    allowed, forbidden = [], []
    for sb_name in sorted(node_local_topology.sandbox_pods):
        sel = _sandbox_selector(node_local_topology, sb_name)
        peer = [{"ipBlock": {"cidr": f"{NODE_LOCAL_DNS}/32"}}]
        allowed.append(_statement(f"{sb_name}-node-local-dns", TENANT, sel, "Egress", peer, sorted(DNS)))
        forbidden.append(_statement(f"{sb_name}-node-local-other", TENANT, sel, "Egress", peer, [("TCP", 80), ("TCP", 8080), ("UDP", 123)]))
        forbidden.append(_statement(f"{sb_name}-metadata", TENANT, sel, "Egress", [{"ipBlock": {"cidr": "169.254.169.254/32"}}]))
    permits = _query(node_local_topology, "permits", allowed, "permit-node-local.yaml")
    assert permits.returncode == 0, f"nca --permits failed:\n{permits.stdout}\n{permits.stderr}"
    forbids = _query(node_local_topology, "forbids", forbidden, "forbid-node-local.yaml")
    assert forbids.returncode == 0, f"nca --forbids failed:\n{forbids.stdout}\n{forbids.stderr}"
