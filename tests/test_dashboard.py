"""The Grafana dashboard the chart ships (chart/dashboards/llmsafespace.json, dashboards.enabled).

- The ConfigMap renders only when enabled, carries the sidecar's label (key and value configurable)
  and annotations, and embeds the file byte for byte; the packaged chart contains the file.
- The JSON is a dashboard Grafana loads: schemaVersion, unique panel ids, a gridPos on every
  panel, every query on the $datasource variable (no data source UID built in), every variable a
  query uses defined.
- Every query names only series the servers really export: the hook server and the gateway run
  in-process (Flask test clients), are called so that labelled series exist, /metrics is scraped
  and parsed with prometheus_client.parser, and each metric name of each expression (extracted by
  a small PromQL tokenizer) must be a series of a scraped family (`_bucket`/`_sum`/`_count` only
  of a histogram), with every label it matches or groups by on that family, and every literal
  label value it matches among the scraped ones. The checker itself is tested on wrong names.
"""
from __future__ import annotations

import copy
import json
import os
import re
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import kubernetes_validate
import pytest
from kubernetes import client as k8s_client
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from gateway import signing
from gateway.app import create_app as create_gateway
from gateway.kube import Kube
from hooks.config import Config
from hooks.server import app as hook_app
from tests import sandbox_cases, warm_cases
from tests.factory import NOW
from tests.gateway_support import GATEWAY_SA_TOKEN, FakeApiServer, Grant
from tests.test_chart import CHART, K8S_VERSION, NAMESPACE, RELEASE, helm, render

DASHBOARD_FILE = CHART / "dashboards" / "llmsafespace.json"
DATA_KEY = "llmsafespace.json"
ENABLED = ("--set", "dashboards.enabled=true")

# Labels Prometheus adds to every series of a target (the ServiceMonitor's job, namespace, pod...).
TARGET_LABELS = frozenset({"job", "namespace", "instance", "pod", "service", "container", "endpoint"})
# Grafana's own variables, usable in any query.
GRAFANA_VARIABLES = frozenset({"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s", "__range_ms"})


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested (collapsed) panels included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable (label_values unwrapped)."""
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            yield f"panel {panel['id']} {panel.get('title')!r} target {target.get('refId')}", target["expr"]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"] if isinstance(var["query"], str) else var["query"]["query"]
            yield f"variable {var['name']!r}", label_values_selector(query)


def label_values_selector(query: str) -> str:
    """Grafana's `label_values(<selector>, <label>)`, as the PromQL `group by (<label>) (<selector>)`
    (what it asks Prometheus), so the label is checked like any grouping label."""
    match = re.fullmatch(r"\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*", query, re.S)
    assert match, f"variable query {query!r} is not label_values(<selector>, <label>)"
    return f"group by ({match.group(2)}) ({match.group(1)})"


# --- a small PromQL tokenizer ----------------------------------------------------------------------

# Aggregations, binary-operator words, modifiers and literals: never metric names.
KEYWORDS = frozenset({
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile",
    "limitk", "limit_ratio", "and", "or", "unless", "atan2", "bool", "offset", "start", "end", "inf", "nan",
})
GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
FUNCTIONS = frozenset({
    "abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh", "avg_over_time", "ceil",
    "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh", "count_over_time", "day_of_month", "day_of_week",
    "day_of_year", "days_in_month", "deg", "delta", "deriv", "exp", "floor", "histogram_avg", "histogram_count",
    "histogram_fraction", "histogram_quantile", "histogram_stddev", "histogram_stdvar", "histogram_sum", "holt_winters",
    "hour", "idelta", "increase", "irate", "label_join", "label_replace", "last_over_time", "ln", "log10", "log2",
    "mad_over_time", "max_over_time", "min_over_time", "minute", "month", "pi", "predict_linear", "present_over_time",
    "quantile_over_time", "rad", "rate", "resets", "round", "scalar", "sgn", "sin", "sinh", "sort", "sort_by_label",
    "sort_by_label_desc", "sort_desc", "sqrt", "stddev_over_time", "stdvar_over_time", "sum_over_time", "tan", "tanh",
    "time", "timestamp", "vector", "year",
})
TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<var>\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*)
  | (?P<number>(?:0[xX][0-9a-fA-F]+|[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)(?:[a-zA-Z]+[0-9]*)*)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=(){}\[\],@])
""", re.X)

VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::[^}]*)?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


@dataclass
class Selector:
    metric: Optional[str]  # None: only {__name__...} matchers
    matchers: list[tuple[str, str, str]] = field(default_factory=list)  # (label, op, value)

    def names(self) -> list[str]:
        """The metric names this selector reads: its name, or those of its __name__ matchers (=, or
        =~ with an alternation of literal names); anything else cannot be checked and is refused."""
        if self.metric is not None:
            return [self.metric]
        out = []
        for label, op, value in self.matchers:
            if label != "__name__":
                continue
            alternatives = value.split("|") if op == "=~" else [value]
            if op not in ("=", "=~") or not all(re.fullmatch(r"[A-Za-z_:][A-Za-z0-9_:]*", a) for a in alternatives):
                raise ValueError(f"__name__{op}{value!r} is not a list of metric names")
            out += alternatives
        if not out:
            raise ValueError("a selector without a metric name")
        return out


@dataclass
class Parsed:
    selectors: list[Selector]
    grouping: set[str]  # labels of by/without/on/ignoring/group_left/group_right
    variables: set[str]  # $name, ${name}, ${name:format}


def tokens(expr: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(expr):
        match = TOKEN.match(expr, pos)
        if not match:
            raise ValueError(f"cannot tokenize {expr[pos:pos + 20]!r} at {pos}")
        if match.lastgroup != "ws":
            out.append((match.lastgroup, match.group()))
        pos = match.end()
    return out


def parse(expr: str) -> Parsed:
    toks = tokens(expr)
    selectors: list[Selector] = []
    grouping: set[str] = set()
    variables = {a or b for a, b in VARIABLE.findall(expr)}  # in label values too
    i = 0

    def matchers(i: int) -> tuple[list[tuple[str, str, str]], int]:
        """Label matchers from toks[i] == "{" to its "}"; returns them and the index after it."""
        out, i = [], i + 1
        while toks[i][1] != "}":
            (label_kind, label), (op_kind, op), (value_kind, value) = toks[i:i + 3]
            if label_kind != "ident" or op not in ("=", "!=", "=~", "!~") or value_kind != "string":
                raise ValueError(f"bad label matcher {label}{op}{value} in {expr!r}")
            out.append((label, op, json.loads(value) if value.startswith('"') else value[1:-1]))
            i += 3
            if toks[i][1] == ",":
                i += 1
        return out, i + 1

    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1][1] if i + 1 < len(toks) else ""
        if kind == "ident" and text in GROUPING:
            i += 1
            if nxt == "(":
                i += 1
                while toks[i][1] != ")":
                    if toks[i][0] == "ident":
                        grouping.add(toks[i][1])
                    i += 1
                i += 1
        elif kind == "ident" and text in KEYWORDS:
            i += 1
        elif kind == "ident" and nxt == "(":
            if text not in FUNCTIONS:
                raise ValueError(f"unknown PromQL function {text}() in {expr!r}")
            i += 1
        elif kind == "ident":
            selector = Selector(text)
            i += 1
            if nxt == "{":
                selector.matchers, i = matchers(i)
            selectors.append(selector)
        elif text == "{":
            found, i = matchers(i)
            selectors.append(Selector(None, found))
        elif text == "[":  # a range or subquery: durations and $__rate_interval only
            while toks[i][1] != "]":
                i += 1
            i += 1
        else:
            i += 1
    return Parsed(selectors, grouping, variables)


def metric_names(expr: str) -> list[str]:
    return [name for s in parse(expr).selectors for name in s.names()]


# --- what the servers export -----------------------------------------------------------------------

def exported_series(text: str) -> dict[str, list[dict[str, str]]]:
    """Series name -> the label sets scraped for it, for every family of an exposition. A family's
    series: a counter's <name>_total, a histogram's <name>_bucket, _sum and _count, a gauge's
    <name>. The *_created gauges are left out: in multiprocess mode (gunicorn, the chart) there
    are none, so a panel must not use them."""
    families = list(text_string_to_metric_families(text))
    names = {f.name for f in families}
    out: dict[str, list[dict[str, str]]] = {}
    for family in families:
        if family.type == "gauge" and family.name.endswith("_created") and family.name[:-len("_created")] in names:
            continue
        series = {"counter": [f"{family.name}_total"],
                  "histogram": [f"{family.name}_bucket", f"{family.name}_sum", f"{family.name}_count"],
                  "summary": [family.name, f"{family.name}_sum", f"{family.name}_count"]}.get(family.type, [family.name])
        for name in series:
            out.setdefault(name, [])
        for sample in family.samples:
            if sample.name in series:
                out[sample.name].append(dict(sample.labels))
    return out


def problems(expr: str, exported: dict[str, list[dict[str, str]]]) -> list[str]:
    """What is wrong with `expr` against the exported series ([] when nothing)."""
    try:
        parsed = parse(expr)
        selected = [(s, name) for s in parsed.selectors for name in s.names()]
    except (ValueError, IndexError) as exc:
        return [f"cannot check: {exc}"]
    if not selected:
        return ["names no metric"]
    out: list[str] = []
    known_labels = set(TARGET_LABELS)
    for selector, name in selected:
        if name not in exported:
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            hint = f" ({base} is not a histogram)" if base != name and f"{base}_total" in exported else ""
            out.append(f"{name}: no such series in the scrape{hint}")
            continue
        samples = exported[name]
        if not samples:
            out.append(f"{name}: the scrape has no series of it (the test's calls must produce one)")
            continue
        labels = {k for s in samples for k in s}
        known_labels |= labels
        for label, op, value in selector.matchers:
            if label == "__name__" or label in TARGET_LABELS:
                continue
            if label not in labels:
                out.append(f"{name}: has no label {label!r} (its labels: {sorted(labels)})")
            elif op in ("=", "!=") and "$" not in value and value not in {s.get(label) for s in samples}:
                out.append(f"{name}: {label}={value!r} was never exported (seen: {sorted({s.get(label) for s in samples})})")
    if out:
        return out  # grouping labels are judged against metrics that exist
    for label in sorted(parsed.grouping - known_labels - {"le"}):
        out.append(f"groups by {label!r}, a label of none of {sorted({n for _, n in selected})}")
    if "le" in parsed.grouping and not any(n.endswith("_bucket") for _, n in selected):
        out.append("groups by 'le' without a histogram's _bucket series")
    return out


def check_dashboard(dashboard: dict[str, Any], exported: dict[str, list[dict[str, str]]]) -> list[str]:
    return [f"{where}: {p}" for where, expr in queries(dashboard) for p in problems(expr, exported)]


# --- the servers, in-process -----------------------------------------------------------------------

def hook_server_scrape() -> str:
    """The hook server after calls that give every family a labelled series: sandboxes created,
    running, failed, served warm and cold, invalid, deleted; warm pools scaled; bad requests."""
    app = hook_app.create_app(Config(), clock=lambda: NOW, env={}, log_stream=open(os.devnull, "w"))
    client = app.test_client()

    def post(path: str, body: Any) -> int:
        data = body if isinstance(body, bytes) else json.dumps(body)
        return client.post(path, data=data, content_type="application/json").status_code

    for case in (sandbox_cases.minimal, sandbox_cases.observed_running, sandbox_cases.observed_failed,
                 sandbox_cases.warm_bound, sandbox_cases.warm_timeout, sandbox_cases.invalid_new):
        assert post("/sandbox/sync", case()) == 200, case.__name__
    assert post("/sandbox/finalize", {**sandbox_cases.first_sync(), "finalizing": True}) == 200
    for case in (warm_cases.empty, warm_cases.refill):
        assert post("/warmpool/sync", case()) == 200, case.__name__
    assert post("/sandbox/sync", b"{nope") == 400
    assert post("/sandbox/sync", {"children": {}}) == 400
    response = client.get("/metrics")
    assert response.status_code == 200
    return response.get_data(as_text=True)


class StubRuntime:
    """Stands in for a sandbox's runtime: answers /v1/exec with an NDJSON exit line, and 401 (the
    runtime does not trust the gateway's key) to GET /v1/files."""

    def __init__(self) -> None:
        self.server = make_server("127.0.0.1", 0, self.wsgi, threaded=True)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @Request.application
    def wsgi(self, request: Request) -> Response:
        if request.path == "/v1/files":
            return Response(json.dumps({"error": "bad signature"}), 401, mimetype="application/json")
        return Response(json.dumps({"type": "exit", "exit_code": 0}) + "\n", 200, mimetype="application/x-ndjson")

    def stop(self) -> None:
        self.server.shutdown()


def gateway_scrape(tmp: Path) -> str:
    """The gateway after calls that give every family a labelled series: an exec answered (and its
    activity written), calls without a token and without the right, reviews from the cache, a
    suspended sandbox resumed, runtimes unreachable and refusing the signature."""
    ns, alice, bob = "team-a", "alice-token", "bob-token"
    key = tmp / "key.pem"
    key.write_bytes(signing.generate()[0])
    runtime = StubRuntime()
    api = FakeApiServer(users={alice: {"username": "alice", "uid": "1", "groups": ["dev"]},
                               bob: {"username": "bob", "uid": "2", "groups": ["dev"]}},
                        grants=[Grant("alice", ns, "sandboxes", "exec", ("create",)),
                                Grant("alice", ns, "sandboxes", "files", ("get",)),
                                Grant("alice", ns, "sandboxes", "", ("patch",))])
    try:
        with api:
            api.put_sandbox(ns, "sb")
            api.put_sandbox(ns, "gone", pod_ip="127.0.0.2")  # nothing listens there: connect error
            api.put_sandbox(ns, "sleepy")
            api.set_state(ns, "sleepy", phase="Suspended", ready=False, reason="Suspended", suspended="IdleTimeout")
            configuration = k8s_client.Configuration()
            configuration.host = api.url
            configuration.api_key = {"authorization": GATEWAY_SA_TOKEN}
            configuration.api_key_prefix = {"authorization": "Bearer"}
            app = create_gateway({"LLMSS_GATEWAY_SIGNING_KEY_FILE": str(key), "LLMSS_GATEWAY_RUNTIME_PORT": str(runtime.port)},
                                 kube=Kube(configuration), log_stream=open(os.devnull, "w"))
            client = app.test_client()

            def call(name: str, token: Optional[str], method: str = "POST", op: str = "exec") -> int:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                response = client.open(f"/v1/namespaces/{ns}/sandboxes/{name}/{op}", method=method, headers=headers,
                                       data=json.dumps({"cmd": ["echo", "hi"]}) if method == "POST" else None)
                response.get_data()  # a streamed answer is counted when it ends
                return response.status_code

            assert call("sb", alice) == 200
            assert call("sb", alice) == 200  # reviews from the cache
            assert call("sb", None) == 401
            assert call("sb", bob) == 403
            assert call("gone", alice) == 502
            assert call("sb", alice, "GET", "files") == 502
            assert call("sleepy", alice) == 409
            response = client.get("/metrics")
            assert response.status_code == 200
            return response.get_data(as_text=True)
    finally:
        runtime.stop()


@pytest.fixture(scope="module")
def scrapes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return {"hook server": hook_server_scrape(), "gateway": gateway_scrape(tmp_path_factory.mktemp("gateway"))}


@pytest.fixture(scope="module")
def exported(scrapes: dict[str, str]) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for text in scrapes.values():
        for name, samples in exported_series(text).items():
            assert name not in out, f"{name} is exported by both servers"
            out[name] = samples
    return out


# --- the dashboard is a dashboard ------------------------------------------------------------------

def test_dashboard_json_is_a_grafana_dashboard() -> None:
    text = DASHBOARD_FILE.read_text(encoding="utf-8")
    dashboard = json.loads(text)
    assert text.endswith("}\n") and json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n" == text, \
        "keep the file as json.dumps(indent=2) writes it (reviewable diffs)"
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert dashboard["title"] and re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dashboard["uid"])
    assert dashboard.get("id") is None, "an exported id would clash with the importing Grafana's own"
    panels = list(all_panels(dashboard))
    assert len(panels) >= 10
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(i for i in ids if ids.count(i) > 1)}"
    cells: dict[tuple[int, int], int] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= set(grid) and all(isinstance(grid[k], int) for k in "hwxy"), panel["id"]
        assert grid["w"] > 0 and grid["h"] > 0 and 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["id"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"panels {cells[(x, y)]} and {panel['id']} overlap"
                cells[(x, y)] = panel["id"]
        if panel["type"] == "row":
            continue
        assert panel["title"] and panel["targets"], panel["id"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["id"]
        assert all(t["expr"].strip() for t in panel["targets"]), panel["id"]


def _datasources(node: Any) -> Iterator[Any]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield value
            yield from _datasources(value)
    elif isinstance(node, list):
        for value in node:
            yield from _datasources(value)


def test_every_query_uses_the_datasource_variable_and_defined_variables() -> None:
    dashboard = load_dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert {"namespace", "job", "gateway_job"} <= set(variables)
    for name in ("namespace", "job", "gateway_job"):
        assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*", \
            f"{name}: All must also match series without the label (a scrape config that adds none)"
    annotation = {"type": "grafana", "uid": "-- Grafana --"}  # Grafana's built-in annotations
    for ds in _datasources(dashboard):
        assert ds in ({"type": "prometheus", "uid": "${datasource}"}, annotation), f"hard-coded data source {ds}"
    for panel in all_panels(dashboard):
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"
            assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])
    for where, expr in queries(dashboard):
        unknown = parse(expr).variables - set(variables) - GRAFANA_VARIABLES
        assert not unknown, f"{where} uses undefined variables {sorted(unknown)}"


# --- the ConfigMap ---------------------------------------------------------------------------------

def dashboard_configmaps(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == "ConfigMap" and DATA_KEY in (d.get("data") or {})]


def test_configmap_renders_only_when_enabled() -> None:
    assert dashboard_configmaps(render()) == []
    assert dashboard_configmaps(render(None, "--set", "gateway.enabled=false", "--set", "dashboards.enabled=false")) == []
    (cm,) = dashboard_configmaps(render(None, *ENABLED))
    kubernetes_validate.validate(cm, K8S_VERSION, strict=True)
    assert cm["metadata"]["namespace"] == NAMESPACE
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
    assert "annotations" not in cm["metadata"]
    assert cm["data"][DATA_KEY] == DASHBOARD_FILE.read_text(encoding="utf-8"), "the ConfigMap embeds the file byte for byte"
    assert json.loads(cm["data"][DATA_KEY]) == load_dashboard()


def test_configmap_label_annotations_and_namespace_are_configurable() -> None:
    (cm,) = dashboard_configmaps(render(None, *ENABLED, "--set", "dashboards.label=example.com/dashboard",
                                        "--set-string", "dashboards.labelValue=llmsafespace",
                                        "--set", "dashboards.labels.team=platform",
                                        "--set", "dashboards.annotations.grafana_folder=LLMSafeSpace",
                                        "--set", "dashboards.namespace=monitoring"))
    kubernetes_validate.validate(cm, K8S_VERSION, strict=True)
    labels = cm["metadata"]["labels"]
    assert labels["example.com/dashboard"] == "llmsafespace" and labels["team"] == "platform"
    assert "grafana_dashboard" not in labels
    assert cm["metadata"]["annotations"] == {"grafana_folder": "LLMSafeSpace"}
    assert cm["metadata"]["namespace"] == "monitoring"


@pytest.mark.parametrize("args,message", [
    (["--set", "dashboards.enabeld=true"], "at '/dashboards': additional properties 'enabeld' not allowed"),
    (["--set", "dashboards.label=bad key"], "at '/dashboards/label'"),
    (["--set-string", "dashboards.labelValue=not a value"], "at '/dashboards/labelValue'"),
    (["--set", "dashboards.namespace=Monitoring"], "at '/dashboards/namespace'"),
    (["--set", "dashboards.enabled=true", "--set-string", "dashboards.labels.grafana_dashboard=0"],
     "dashboards.labels: grafana_dashboard is set by dashboards.label and dashboards.labelValue"),
], ids=["unknown-key", "bad-label", "bad-label-value", "bad-namespace", "label-twice"])
def test_bad_dashboard_values_are_rejected(args: list[str], message: str) -> None:
    proc = helm("template", RELEASE, str(CHART), *args)
    assert proc.returncode != 0, f"helm accepted {args}"
    assert message in proc.stderr, proc.stderr


def test_packaged_chart_contains_the_dashboard(tmp_path: Path) -> None:
    proc = helm("package", str(CHART), "--destination", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    (archive,) = tmp_path.glob("llmsafespace-*.tgz")
    with tarfile.open(archive) as tar:
        member = tar.extractfile("llmsafespace/dashboards/llmsafespace.json")
        assert member is not None and member.read() == DASHBOARD_FILE.read_bytes()


# --- every query names what the servers export -----------------------------------------------------

def test_the_scrapes_have_a_series_of_every_family(exported: dict[str, list[dict[str, str]]]) -> None:
    """Else a label or value check below would have nothing to check against."""
    assert not [name for name, samples in exported.items() if not samples]
    assert {"llmsafespace_hook_requests_total", "llmsafespace_gateway_requests_total"} <= set(exported)


def test_every_panel_query_names_only_exported_metrics(exported: dict[str, list[dict[str, str]]]) -> None:
    found = check_dashboard(load_dashboard(), exported)
    assert not found, "\n".join(found)


def test_every_exported_metric_is_on_the_dashboard(exported: dict[str, list[dict[str, str]]]) -> None:
    """A metric added to a server gets a panel (or this test says which one has none)."""
    used = {re.sub(r"_(bucket|sum|count)$", "", n) for _, expr in queries(load_dashboard()) for n in metric_names(expr)}
    families = {re.sub(r"_(bucket|sum|count)$", "", n) for n in exported}
    assert families - used == set()


def test_tokenizer_finds_metric_names_only() -> None:
    assert metric_names('histogram_quantile(0.99, sum by (le, controller) (rate(a_bucket{job=~"$job", x="by(rate)"}[$__rate_interval])))') \
        == ["a_bucket"]
    assert metric_names("sum without (pod) (increase(b_total[1h30m] offset 5m)) / on (job) group_left (le) c") == ["b_total", "c"]
    assert metric_names("d_total > bool 0 and e_total or vector(1) unless f_count") == ["d_total", "e_total", "f_count"]
    assert metric_names('{__name__=~"g_total|h_total", namespace="on"}') == ["g_total", "h_total"]
    assert metric_names("count(sum by (le) (i_bucket))  * 1e-3 + inf") == ["i_bucket"]
    assert parse('rate(x[${__rate_interval}]) + y{a=~"${namespace:regex}", b="$job"}').variables == {"__rate_interval", "namespace", "job"}
    with pytest.raises(ValueError, match="unknown PromQL function"):
        parse("hisogram_quantile(0.9, x_bucket)")
    with pytest.raises(ValueError, match="not a list of metric names"):
        metric_names('{__name__=~"llmsafespace_.*"}')


@pytest.mark.parametrize("expr,problem", [
    ("rate(llmsafespace_hook_request_total[5m])", "llmsafespace_hook_request_total: no such series"),
    ("rate(llmsafespace_hook_requests[5m])", "llmsafespace_hook_requests: no such series"),
    ("llmsafespace_hook_duration_seconds", "llmsafespace_hook_duration_seconds: no such series"),  # a histogram's family name
    ("rate(llmsafespace_hook_requests_count[5m])", "(llmsafespace_hook_requests is not a histogram)"),
    ("llmsafespace_hook_requests_created", "llmsafespace_hook_requests_created: no such series"),  # none in multiprocess mode
    ("rate(llmsafespace_gateway_request_total[5m])", "llmsafespace_gateway_request_total: no such series"),
    ('llmsafespace_hook_requests_total{outcomes="ok"}', "has no label 'outcomes'"),
    ('llmsafespace_hook_requests_total{outcome="errors"}', "outcome='errors' was never exported"),
    ("sum by (path) (rate(llmsafespace_hook_requests_total[5m]))", "groups by 'path'"),
    ("histogram_quantile(0.9, sum by (le) (rate(llmsafespace_gateway_requests_total[5m])))", "groups by 'le' without"),
    ('{__name__=~"llmsafespace_hook_.+"}', "cannot check"),
    ("sum(rate(some_metric_total[5m]))", "some_metric_total: no such series"),
    ("vector(1)", "names no metric"),
])
def test_checker_catches_wrong_queries(exported: dict[str, list[dict[str, str]]], expr: str, problem: str) -> None:
    found = problems(expr, exported)
    assert any(problem in p for p in found), found


def test_checker_accepts_right_queries(exported: dict[str, list[dict[str, str]]]) -> None:
    for expr in ("rate(llmsafespace_hook_duration_seconds_count[5m])",
                 'sum by (le, controller, hook) (rate(llmsafespace_hook_duration_seconds_bucket{job=~"$job"}[5m]))',
                 'llmsafespace_gateway_requests_total{status="401", code="unauthenticated"}'):
        assert problems(expr, exported) == [], expr


def test_a_wrong_name_in_the_dashboard_fails_the_check(exported: dict[str, list[dict[str, str]]]) -> None:
    dashboard = copy.deepcopy(load_dashboard())
    target = next(p for p in all_panels(dashboard) if p.get("title") == "Activity writes")["targets"][0]
    target["expr"] = target["expr"].replace("llmsafespace_gateway_activity_writes_total", "llmsafespace_gateway_activity_write_total")
    found = check_dashboard(dashboard, exported)
    assert len(found) == 1 and "'Activity writes'" in found[0] and "activity_write_total: no such series" in found[0], found
    variable = next(v for v in dashboard["templating"]["list"] if v["name"] == "job")
    variable["query"] = variable["query"].replace(", job)", ", jobs)")
    assert any("variable 'job'" in p and "groups by 'jobs'" in p for p in check_dashboard(dashboard, exported))
