"""The Helm chart in chart/, rendered by the real helm (v4, tests/tooling.py) and checked offline.

- `helm lint --strict` and `helm template --include-crds` over the default values and every
  chart/ci/*-values.yaml; every rendered object validated: built-in kinds and the CRDs with
  kubernetes-validate (strict, Kubernetes 1.33), CompositeController/DecoratorController with
  jsonschema against Metacontroller's own CRD schema (tests/schemas/, strict), ServiceMonitor
  structurally (no schema is available offline).
- One source of truth: the CRDs are crds/*.yaml (chart/crds is a symlink) and the controller
  objects are metacontroller/*.yaml with only the webhook host (and auth) rewritten.
- Every tunable the hooks read is set from values, in a form hooks/config.py accepts.
- Bad values fail at render time with a message naming the value.
- Golden file of the default render (without the CRDs, which are compared with crds/ instead):
  tests/golden/chart/default.yaml, rewritten with LLMSS_UPDATE_GOLDEN=1.
"""
from __future__ import annotations

import base64
import copy
import difflib
import functools
import hashlib

import json

import re
import shlex
import subprocess
import tarfile
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

import jsonschema
import kubernetes_validate
import pytest
import yaml

from hooks.config import ENV_PREFIX, Config, ConfigError, check_env
from hooks.server.routes import ROUTES
from tests.golden import GOLDEN_DIR, UPDATE
from tests.tooling import tool

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "chart"
BUNDLE = CHART / "with-metacontroller"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
VALUE_SETS = [None, *CI_VALUES]  # None: the chart's defaults
K8S_VERSION = "1.33"
RELEASE, NAMESPACE = "llmsafespace", "llmsafespace"
MC_KINDS = ("CompositeController", "DecoratorController")
MC_SCHEMAS = ROOT / "tests" / "schemas" / "metacontroller-v4.17.2"
# Metacontroller's official chart labels its pods app.kubernetes.io/name=<chart name> (see its
# templates/_helpers.tpl, selectorLabels), and the chart is called metacontroller-helm.
MC_CHART_POD_LABELS = {"app.kubernetes.io/name": "metacontroller-helm"}
GOLDEN_FILE = GOLDEN_DIR / "chart" / "default.yaml"


def value_id(values: Path | None) -> str:
    return "defaults" if values is None else values.name


# --- running helm ---------------------------------------------------------------------------------

def helm(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([tool("helm"), *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    # Helm logs every symlink it follows (chart/crds, chart/files/metacontroller) at INFO level.
    proc.stderr = "\n".join(l for l in proc.stderr.splitlines() if "found symbolic link in path" not in l)
    return proc


@functools.lru_cache(maxsize=None)
def render_text(values: Path | None = None, *extra: str, release: str = RELEASE,
                namespace: str = NAMESPACE, crds: bool = True) -> str:
    args = ["template", release, str(CHART), "--namespace", namespace]
    if crds:
        args.append("--include-crds")
    if values is not None:
        args += ["--values", str(values)]
    proc = helm(*args, *extra)
    assert proc.returncode == 0, f"helm {' '.join(args + list(extra))} failed:\n{proc.stderr}"
    return proc.stdout


def render(values: Path | None = None, *extra: str, **kw: Any) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(render_text(values, *extra, **kw)) if d]


def is_gateway(doc: dict[str, Any]) -> bool:
    return ((doc.get("metadata") or {}).get("labels") or {}).get("app.kubernetes.io/component") == "gateway"


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The one object of `kind` that is not the gateway's (tests/test_chart_gateway.py has those)."""
    found = [d for d in docs if d["kind"] == kind and not is_gateway(d)]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def hooks_name(release: str = RELEASE) -> str:
    return f"{release}-hooks" if "llmsafespace" in release else f"{release}-llmsafespace-hooks"


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (c,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def env_of(docs: list[dict[str, Any]]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(docs)["env"] if "value" in e}


def source_controllers() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted((ROOT / "metacontroller").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                yield path, doc


# --- lint and schema validation -------------------------------------------------------------------

@pytest.mark.parametrize("values", VALUE_SETS, ids=value_id)
def test_helm_lint_strict(values: Path | None) -> None:
    args = ["lint", "--strict", str(CHART), "--namespace", NAMESPACE]
    if values is not None:
        args += ["--values", str(values)]
    proc = helm(*args)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "[WARNING]" not in out and "[ERROR]" not in out, out
    assert "1 chart(s) linted, 0 chart(s) failed" in out


def test_ci_value_sets_exist() -> None:
    names = {p.name for p in CI_VALUES}
    assert {"minimal-values.yaml", "production-values.yaml", "custom-runtime-values.yaml"} <= names


def _strict(schema: Any) -> Any:
    """Reject unknown fields, like kubectl's strict field validation and kubernetes-validate's
    strict mode: every object schema that lists properties gets additionalProperties: false."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out \
                and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@functools.lru_cache(maxsize=None)
def mc_validator(kind: str) -> jsonschema.Draft7Validator:
    schema = json.loads((MC_SCHEMAS / f"{kind.lower()}.json").read_text(encoding="utf-8"))
    schema.pop("$comment", None)
    return jsonschema.Draft7Validator(_strict(schema))


def check_service_monitor(sm: dict[str, Any], docs: list[dict[str, Any]]) -> None:
    """No schema for monitoring.coreos.com offline: check the fields the operator needs."""
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(sm) == {"apiVersion", "kind", "metadata", "spec"}
    assert sm["metadata"]["name"] and sm["metadata"]["namespace"] == NAMESPACE
    spec = sm["spec"]
    assert set(spec) <= {"selector", "namespaceSelector", "endpoints", "jobLabel", "targetLabels"}
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    service = one(docs, "Service")
    selector = spec["selector"]["matchLabels"]
    assert selector and selector.items() <= service["metadata"]["labels"].items(), "selects no Service"
    assert spec["endpoints"], "no endpoints"
    port_names = {p["name"] for p in service["spec"]["ports"]}
    for ep in spec["endpoints"]:
        assert set(ep) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}, ep
        assert ep["port"] in port_names, f"endpoint port {ep['port']} is not a Service port {port_names}"
        assert ep["path"].startswith("/")
        assert ep["scheme"] in ("http", "https")
        for key in ("interval", "scrapeTimeout"):
            assert re.fullmatch(r"([0-9]+(ms|s|m|h))+", ep[key]), f"{key}: {ep[key]!r} is not a duration"


@pytest.mark.parametrize("values", VALUE_SETS, ids=value_id)
def test_every_rendered_object_is_valid(values: Path | None) -> None:
    docs = render(values)
    kinds = {d["kind"] for d in docs}
    assert {"CustomResourceDefinition", "Deployment", "Service", "CompositeController"} <= kinds
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in MC_KINDS:
            errors = sorted(mc_validator(doc["kind"]).iter_errors(doc), key=lambda e: list(e.path))
            assert not errors, f"{name}: " + "; ".join(f"{list(e.path)}: {e.message}" for e in errors)
        elif doc["kind"] == "ServiceMonitor":
            check_service_monitor(doc, docs)
        else:
            try:
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{name} ({value_id(values)}): {exc.message} at {list(exc.path)}")
        if doc["kind"] not in ("CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", *MC_KINDS):
            assert doc["metadata"].get("namespace") == NAMESPACE, f"{name} has no namespace"


def test_strict_metacontroller_schema_catches_a_typo() -> None:
    """The vendored schema, made strict, really rejects unknown and mistyped fields."""
    (_, doc), *_ = source_controllers()
    bad = copy.deepcopy(doc)
    hook = next(iter(bad["spec"]["hooks"].values()))
    hook["webhook"]["authorisation"] = {"secretRef": {"name": "x"}}
    hook["version"] = "v3"
    messages = " ".join(e.message for e in mc_validator(bad["kind"]).iter_errors(bad))
    assert "authorisation" in messages and "'v3' is not one of" in messages


# --- one source of truth --------------------------------------------------------------------------

def test_chart_reads_the_repository_files_through_symlinks() -> None:
    assert (CHART / "crds").is_symlink() and (CHART / "crds").resolve() == ROOT / "crds"
    link = CHART / "files" / "metacontroller"
    assert link.is_symlink() and link.resolve() == ROOT / "metacontroller"


def test_rendered_crds_are_exactly_crds_dir() -> None:
    rendered = [d for d in render() if d["kind"] == "CustomResourceDefinition"]
    source = [yaml.safe_load(p.read_text(encoding="utf-8")) for p in sorted((ROOT / "crds").glob("*.yaml"))]
    key = lambda d: d["metadata"]["name"]  # noqa: E731
    assert sorted(rendered, key=key) == sorted(source, key=key)
    assert all(d["kind"] != "CustomResourceDefinition" for d in render(crds=False))


def test_packaged_chart_contains_the_repository_files_byte_for_byte(tmp_path: Path) -> None:
    proc = helm("package", str(CHART), "--destination", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    (archive,) = tmp_path.glob("llmsafespace-*.tgz")
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers() if m.isfile()}
        for sub, prefix in (("crds", "llmsafespace/crds/"), ("metacontroller", "llmsafespace/files/metacontroller/")):
            for path in sorted((ROOT / sub).glob("*.yaml")):
                member = members.get(prefix + path.name)
                assert member is not None, f"{prefix}{path.name} missing from the package"
                assert tar.extractfile(member).read() == path.read_bytes()
        assert not any("with-metacontroller" in n for n in members), "the bundle must not be packaged"


def _without_webhook_endpoint(spec: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(spec)
    for hook in (spec.get("hooks") or {}).values():
        for key in ("url", "service", "path", "authorization", "basicAuth"):
            hook.get("webhook", {}).pop(key, None)
    return spec


@pytest.mark.parametrize(
    "release,namespace,extra,netloc",
    [
        (RELEASE, NAMESPACE, (), "llmsafespace-hooks.llmsafespace.svc:80"),
        ("sbx", "platform", ("--set", "service.port=8081"), "sbx-llmsafespace-hooks.platform.svc:8081"),
    ],
    ids=["default-release", "other-release-namespace-port"],
)
def test_controllers_are_the_manifests_pointed_at_the_release_service(
        release: str, namespace: str, extra: tuple[str, ...], netloc: str) -> None:
    docs = render(None, *extra, release=release, namespace=namespace)
    rendered = {(d["kind"], d["metadata"]["name"]): d for d in docs if d["kind"] in MC_KINDS}
    sources = {(d["kind"], d["metadata"]["name"]): (p, d) for p, d in source_controllers()}
    assert set(rendered) == set(sources), "controllers rendered != metacontroller/*.yaml"
    service = one(docs, "Service")
    assert f"{service['metadata']['name']}.{namespace}.svc:{service['spec']['ports'][0]['port']}" == netloc
    for key, (path, src) in sources.items():
        out = rendered[key]
        assert _without_webhook_endpoint(out["spec"]) == _without_webhook_endpoint(src["spec"]), \
            f"{path.name}: the chart changed more than the webhook endpoint"
        assert out["metadata"]["labels"]["app.kubernetes.io/instance"] == release
        for hook_name, hook in out["spec"]["hooks"].items():
            url = urlparse(hook["webhook"]["url"])
            src_webhook = src["spec"]["hooks"][hook_name]["webhook"]
            src_path = urlparse(src_webhook["url"]).path if "url" in src_webhook else src_webhook["path"]
            assert (url.scheme, url.netloc, url.path) == ("http", netloc, src_path), hook["webhook"]["url"]
            assert url.path in ROUTES and ROUTES[url.path].hook == hook_name, f"{url.path} is not a {hook_name} route"


CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ2E=\n-----END CERTIFICATE-----\n"
SERVER_KINDS = {"Deployment", "Service", "ServiceAccount", "PodDisruptionBudget", "HorizontalPodAutoscaler",
                "NetworkPolicy", "ServiceMonitor"}


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "https://hooks.example.com/llmss", "http://[::1]:9000"])
def test_external_hook_server_gets_every_webhook_and_nothing_is_deployed(url: str) -> None:
    # A hook server outside the cluster (a developer's ./scripts/serve, the e2e suite, or one
    # the operator runs): webhooks call it, and the chart deploys no server of its own.
    docs = render(None, "--set", f"externalHookServer.url={url}", "--set", "autoscaling.enabled=true",
                  "--set", "serviceMonitor.enabled=true", "--set", "hookAuth.token=" + "t" * 24)
    assert not [d["kind"] for d in docs if d["kind"] in SERVER_KINDS]
    sources = {(d["kind"], d["metadata"]["name"]): d for _, d in source_controllers()}
    controllers = [d for d in docs if d["kind"] in MC_KINDS]
    assert {(d["kind"], d["metadata"]["name"]) for d in controllers} == set(sources)
    for doc in controllers:
        src = sources[(doc["kind"], doc["metadata"]["name"])]
        assert _without_webhook_endpoint(doc["spec"]) == _without_webhook_endpoint(src["spec"])
        for name, hook in doc["spec"]["hooks"].items():
            path = urlparse(src["spec"]["hooks"][name]["webhook"]["url"]).path
            assert hook["webhook"]["url"] == url + path
            assert hook["webhook"]["authorization"]["secretRef"]["name"] == one(docs, "Secret")["metadata"]["name"]
            assert "caBundle" not in hook["webhook"]
        assert not list(mc_validator(doc["kind"]).iter_errors(doc))


def test_external_hook_server_ca_bundle_goes_to_every_webhook() -> None:
    docs = render(None, "--set", "externalHookServer.url=https://hooks.example.com", "--set-string",
                  f"externalHookServer.caBundle={CA_PEM}")
    webhooks = [h["webhook"] for d in docs if d["kind"] in MC_KINDS for h in d["spec"]["hooks"].values()]
    assert webhooks and all(w["caBundle"] == {"inline": CA_PEM} for w in webhooks)
    assert all(not list(mc_validator(d["kind"]).iter_errors(d)) for d in docs if d["kind"] in MC_KINDS)


@pytest.mark.parametrize("url", ["127.0.0.1:8080", "http://h/x/", "http://h?x=1", "ftp://h", "http://h/a b"])
def test_bad_external_hook_server_url_is_rejected(url: str) -> None:
    proc = helm("template", RELEASE, str(CHART), "--set-string", f"externalHookServer.url={url}")
    assert proc.returncode != 0 and "at '/externalHookServer/url'" in proc.stderr, proc.stderr


# --- the hook server ------------------------------------------------------------------------------

def test_deployment_is_hardened() -> None:
    docs = render()
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]
    assert one(docs, "ServiceAccount")["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c = container(docs)
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["runAsNonRoot"] is True
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    env = env_of(docs)
    for path in ("/tmp", env["PROMETHEUS_MULTIPROC_DIR"]):
        assert "emptyDir" in volumes[mounts[path]], f"{path} is not an emptyDir"
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["resources"]["requests"] and c["resources"]["limits"]


def test_probe_paths_are_served_by_the_app() -> None:
    from hooks.server.app import create_app

    client = create_app(env={}).test_client()
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200


def _gunicorn_binds(env: dict[str, str]) -> list[str]:
    from gunicorn.config import Config as GunicornConfig

    args = GunicornConfig().parser().parse_args(shlex.split(env["GUNICORN_CMD_ARGS"]) + ["hooks.server.app:app"])
    return args.bind


@pytest.mark.parametrize("values", VALUE_SETS, ids=value_id)
def test_gunicorn_settings_match_the_ports(values: Path | None) -> None:
    docs = render(values)
    env, c = env_of(docs), container(docs)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert _gunicorn_binds(env) == [f"0.0.0.0:{ports['http']}"]  # gunicorn's own parser accepts them
    if "metrics" in ports:  # served by the gunicorn master on its own port, not on the hook port
        assert (env["METRICS_PORT"], env["METRICS_PATH"]) == (str(ports["metrics"]), "")
    else:
        assert "METRICS_PORT" not in env and env["METRICS_PATH"] == "/metrics"
    assert int(env["WORKERS"]) >= 1 and int(env["GUNICORN_THREADS"]) >= 1 and int(env["GUNICORN_TIMEOUT"]) > 10
    svc_ports = {p["name"]: p["targetPort"] for p in one(docs, "Service")["spec"]["ports"]}
    assert set(svc_ports) == set(ports) and all(svc_ports[n] == n for n in svc_ports)


def _hook_env_names() -> set[str]:
    """Every LLMSS_* variable the hook server reads (hooks/config.py and the HTTP layer)."""
    names = {ENV_PREFIX + field.upper() for field in Config.model_fields}  # Config.from_env's mapping
    for path in (ROOT / "hooks").rglob("*.py"):
        names |= set(re.findall(r'["\'](LLMSS_[A-Z0-9_]+)["\']', path.read_text(encoding="utf-8")))
    return names


def test_every_tunable_the_hooks_read_is_set_from_values() -> None:
    names = _hook_env_names()
    assert len(names) >= 10, f"could not find the hooks' settings: {names}"
    env = env_of(render())
    # The token reaches the server as a file (LLMSS_HOOK_TOKEN_FILE), never as a plain variable;
    # LLMSS_BENCH_ECHO adds a benchmark-only route and must stay off in a cluster.
    # LLMSS_POD_UID and LLMSS_RUNTIME_WRITABLE are what the hooks write into sandbox pods, not settings.
    missing = names - set(env) - {"LLMSS_HOOK_TOKEN", "LLMSS_BENCH_ECHO", "LLMSS_POD_UID", "LLMSS_RUNTIME_WRITABLE"}
    assert not missing, f"the chart sets no value for {sorted(missing)}: add them to values.yaml"
    assert "LLMSS_HOOK_TOKEN" not in env and "LOG_LEVEL" in env


@pytest.mark.parametrize("values", VALUE_SETS, ids=value_id)
def test_every_other_variable_the_chart_sets_is_read_by_the_server(values: Path | None) -> None:
    """Catches a variable renamed in hooks/ (gunicorn_conf.py, metrics, logging) but not here."""
    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "hooks").rglob("*.py"))
    standard = {"GUNICORN_CMD_ARGS", "TMPDIR"}  # read by gunicorn and by Python's tempfile
    extra = {e["name"] for e in (yaml.safe_load(values.read_text(encoding="utf-8")) if values else {}).get("extraEnv", [])}
    for name in set(env_of(render(values))) - standard - extra:
        if not name.startswith("LLMSS_"):
            assert re.search(rf'["\']{name}["\']', source), f"the chart sets {name}, which nothing in hooks/ reads"


@pytest.mark.parametrize("values", VALUE_SETS, ids=value_id)
def test_hook_config_accepts_the_rendered_environment(values: Path | None) -> None:
    env = env_of(render(values))
    config = Config.from_env(env)  # raises on any value the hooks would refuse at start-up
    assert int(env["LLMSS_MAX_REQUEST_BYTES"]) > 0
    if values is None:
        assert config == Config()  # the chart's defaults are the hooks' defaults
    if values is not None and values.name == "custom-runtime-values.yaml":
        assert config.high_security_runtime_class == "kata-qemu"
        assert config.image_registry_allowlist == ("ghcr.io/llmsafespace", "registry.internal.example.com:5000")
        assert config.dns_pod_labels == (("app.kubernetes.io/instance", "cluster-dns"), ("app.kubernetes.io/name", "coredns"))
        assert (config.dns_namespace, config.api_namespace) == ("dns-system", "sandbox-api")
        assert env["LOG_LEVEL"] == "DEBUG" and "--log-level=debug" in env["GUNICORN_CMD_ARGS"]


GATEWAY_KEYS = ("A" * 43 + "=", "B" * 43 + "=")


def test_gateway_public_keys_reach_the_hooks_and_every_sandbox_pod() -> None:
    from hooks import sandbox_sync
    from tests.sandbox_cases import creating
    from tests.factory import NOW, sandbox
    env = env_of(render(None, "--set", f"runtimeAuth.gatewayPublicKeys={{{GATEWAY_KEYS[0]},{GATEWAY_KEYS[1]}}}"))
    config = Config.from_env(env)
    assert config.gateway_public_keys == GATEWAY_KEYS
    pod = next(c for c in sandbox_sync.sync(creating(sandbox("keyed")), NOW, config)["children"] if c["kind"] == "Pod")
    got = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert got["LLMSS_GATEWAY_PUBLIC_KEYS"]["value"] == ",".join(GATEWAY_KEYS)
    assert got["LLMSS_POD_UID"]["valueFrom"] == {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.uid"}}
    assert Config.from_env(env_of(render(None))).gateway_public_keys == ()
    with pytest.raises(Exception, match="gatewayPublicKeys"):
        render(None, "--set", "runtimeAuth.gatewayPublicKeys={bm90IGEga2V5}")


def test_node_local_dns_reaches_the_hooks() -> None:
    env = env_of(render(None, "--set", "config.nodeLocalDnsAddresses={169.254.20.10,10.96.0.10}", "--set", "config.nodeLocalDnsPort=5353"))
    config = Config.from_env(env)
    assert (config.node_local_dns_addresses, config.node_local_dns_port) == (("10.96.0.10", "169.254.20.10"), 5353)


@pytest.mark.parametrize("mode", ["auto", "on", "off"])
def test_user_namespaces_mode_reaches_the_hooks(mode: str) -> None:
    env = env_of(render(None, "--set", f"config.userNamespaces={mode}"))
    assert Config.from_env(env).user_namespaces == mode


def test_termination_grace_bound_reaches_the_hooks() -> None:
    env = env_of(render(None, "--set", "config.maxTerminationGraceSeconds=45"))
    assert Config.from_env(env).max_termination_grace_seconds == 45


# --- bearer token ---------------------------------------------------------------------------------

def _auth_objects(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], str, str]:
    """(Secret, key, token) after checking that controllers, Secret and Deployment agree."""
    refs = {json.dumps(h["webhook"]["authorization"], sort_keys=True)
            for d in docs if d["kind"] in MC_KINDS for h in d["spec"]["hooks"].values()}
    assert len(refs) == 1, f"webhooks disagree on authorization: {refs}"
    auth = json.loads(refs.pop())
    assert auth["type"] == "Bearer" and auth["secretRef"]["namespace"] == NAMESPACE
    secret = one(docs, "Secret")
    assert secret["metadata"]["name"] == auth["secretRef"]["name"]
    key = auth["secretRef"]["key"]
    token = base64.b64decode(secret["data"][key]).decode()
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    assert volume["secret"]["items"] == [{"key": key, "path": "token"}]
    mount = next(m for m in container(docs)["volumeMounts"] if m["name"] == volume["name"])
    assert env_of(docs)["LLMSS_HOOK_TOKEN_FILE"] == mount["mountPath"] + "/token" and mount["readOnly"]
    return secret, key, token


def test_generated_token_is_shared_by_secret_deployment_and_controllers() -> None:
    _, key, token = _auth_objects(render())
    assert re.fullmatch(r"[A-Za-z0-9]{48}", token)
    # The key carries the token's hash: a new token changes the controllers' spec, the only
    # change that makes Metacontroller re-read webhook Secrets.
    assert key == "token-" + hashlib.sha256(token.encode()).hexdigest()[:12]


def test_given_token_is_used() -> None:
    values = next(p for p in CI_VALUES if p.name == "production-values.yaml")
    _, _, token = _auth_objects(render(values))
    assert token == yaml.safe_load(values.read_text(encoding="utf-8"))["hookAuth"]["token"]


def test_existing_secret_is_referenced_not_created() -> None:
    docs = render(None, "--set", "hookAuth.existingSecret=hook-token,hookAuth.existingSecretKey=v2")
    assert not [d for d in docs if d["kind"] == "Secret"]
    for d in docs:
        for hook in d["spec"]["hooks"].values() if d["kind"] in MC_KINDS else ():
            assert hook["webhook"]["authorization"]["secretRef"] == {"name": "hook-token", "namespace": NAMESPACE, "key": "v2"}


def test_auth_disabled_leaves_no_trace() -> None:
    docs = render(next(p for p in CI_VALUES if p.name == "minimal-values.yaml"))
    assert not [d for d in docs if d["kind"] == "Secret"]
    assert "LLMSS_HOOK_TOKEN_FILE" not in env_of(docs)
    assert all("authorization" not in h["webhook"] for d in docs if d["kind"] in MC_KINDS for h in d["spec"]["hooks"].values())


# --- policies, RBAC, scaling, monitoring ----------------------------------------------------------

def test_network_policy_admits_only_metacontroller_and_denies_egress() -> None:
    docs = render()
    np = one(docs, "NetworkPolicy")["spec"]
    assert np["podSelector"]["matchLabels"] == one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    assert np["policyTypes"] == ["Ingress", "Egress"] and np["egress"] == []
    (rule,) = np["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert rule["from"] == [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "metacontroller"}},
        "podSelector": {"matchLabels": MC_CHART_POD_LABELS},
    }]


def test_network_policy_admits_prometheus_to_the_metrics_port_with_the_service_monitor() -> None:
    docs = render(next(p for p in CI_VALUES if p.name == "production-values.yaml"))
    rules = one(docs, "NetworkPolicy")["spec"]["ingress"]
    assert [r["ports"][0]["port"] for r in rules] == ["http", "metrics"]
    assert rules[1]["from"][0]["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    assert one(docs, "ServiceMonitor")["spec"]["endpoints"][0]["port"] == "metrics"
    # The metrics port is the one the gunicorn master serves metrics on.
    ports = {p["name"]: p["containerPort"] for p in container(docs)["ports"]}
    assert env_of(docs)["METRICS_PORT"] == str(ports["metrics"]) == "9090"


def test_service_monitor_sends_the_hook_token_when_it_scrapes_the_hook_port() -> None:
    """/metrics on the hook port needs the hook token (hooks/server/app.py); the master's metrics port
    needs none and is reachable only as the NetworkPolicy admits (docs/observability.md)."""
    docs = render(None, "--set", "serviceMonitor.enabled=true")
    secret, key, _ = _auth_objects(docs)
    (endpoint,) = one(docs, "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["port"] == "http"
    assert endpoint["authorization"] == {"type": "Bearer", "credentials": {"name": secret["metadata"]["name"], "key": key}}
    separate = render(next(p for p in CI_VALUES if p.name == "production-values.yaml"))
    (endpoint,) = one(separate, "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and "authorization" not in endpoint
    unauthenticated = render(None, "--set", "serviceMonitor.enabled=true", "--set", "hookAuth.enabled=false")
    assert "authorization" not in one(unauthenticated, "ServiceMonitor")["spec"]["endpoints"][0]


def test_metacontroller_in_the_release_namespace() -> None:
    docs = render(None, "--set", "networkPolicy.metacontroller.namespace=")
    (rule,) = one(docs, "NetworkPolicy")["spec"]["ingress"]
    assert rule["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": NAMESPACE}


def test_user_roles_never_let_tenants_create_warm_pods_or_write_status() -> None:
    roles = {d["metadata"]["name"]: d for d in render() if d["kind"] == "ClusterRole"}
    edit, view = roles["llmsafespace-edit"], roles["llmsafespace-view"]
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"

    def verbs(role: dict[str, Any], resource: str) -> set[str]:
        return {v for r in role["rules"] if resource in r["resources"] for v in r["verbs"]}

    for resource in ("sandboxes", "sandboxprofiles"):
        assert {"create", "update", "patch", "delete"} <= verbs(edit, resource)
        assert verbs(view, resource) == {"get", "list", "watch"}
    for role in (edit, view):
        for resource in ("warmpods", "warmpools", "warmpooloffers"):
            assert verbs(role, resource) == {"get", "list", "watch"}, f"{role['metadata']['name']}: {resource}"
    # the gateway's virtual subresources (docs/gateway.md): edit/admin only, and no */status anywhere
    assert verbs(edit, "sandboxes/exec") == {"create"} and verbs(edit, "sandboxes/files") == {"get", "create", "delete"}
    subresources = {res for role in (edit, view) for r in role["rules"] for res in r["resources"] if "/" in res}
    assert subresources == {"sandboxes/exec", "sandboxes/files"}
    assert not any("/" in res for r in view["rules"] for res in r["resources"]), "view runs no code and reads no files"
    assert not [d for d in render(next(p for p in CI_VALUES if p.name == "minimal-values.yaml")) if d["kind"] == "ClusterRole"]


def test_the_activity_writer_role_only_patches_sandboxes() -> None:
    """What the API component needs to record activity (llmsafespace.dev/last-activity, docs/suspend.md):
    patch on sandboxes, nothing else; aggregable into the operator's own role for that component."""
    roles = {d["metadata"]["name"]: d for d in render() if d["kind"] == "ClusterRole"}
    role = roles["llmsafespace-activity-writer"]
    assert role["metadata"]["labels"]["llmsafespace.dev/aggregate-to-api"] == "true"
    assert not any(k.startswith("rbac.authorization.k8s.io/aggregate-to-") for k in role["metadata"]["labels"]), "not a user role"
    assert role["rules"] == [{"apiGroups": ["llmsafespace.dev"], "resources": ["sandboxes"], "verbs": ["get", "list", "watch", "patch"]}]
    off = {d["metadata"]["name"] for d in render(None, "--set", "rbac.activityWriterRole=false") if d["kind"] == "ClusterRole"}
    assert "llmsafespace-activity-writer" not in off


def test_autoscaling_replaces_the_replica_count() -> None:
    default = one(render(), "Deployment")
    assert default["spec"]["replicas"] == 2 and one(render(), "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    docs = render(next(p for p in CI_VALUES if p.name == "production-values.yaml"))
    assert "replicas" not in one(docs, "Deployment")["spec"]
    hpa = one(docs, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": hooks_name()}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 12)


# --- checkov on the rendered manifests -------------------------------------------------------------

# Findings accepted for the chart's defaults only: the default image is referenced by tag (no digest
# can be known in advance) with pull policy IfNotPresent. production-values.yaml pins a digest and
# must pass every check.
# The gateway mounts its ServiceAccount token (CKV_K8S_38): it calls the API server as itself.
CHECKOV_ACCEPTED = {None: {"CKV_K8S_43", "CKV_K8S_15"}, "production-values.yaml": set(), "gateway-values.yaml": {"CKV_K8S_38"}}


def test_checkov_finds_nothing_unexpected(tmp_path: Path) -> None:
    """checkov's own helm runner cannot be used: it treats any helm stderr as a failure, and helm
    logs (INFO) every symlink it follows. So scan the rendered manifests instead."""
    for name in CHECKOV_ACCEPTED:
        values = None if name is None else next(p for p in CI_VALUES if p.name == name)
        (tmp_path / f"{value_id(values)}.yaml").write_text(render_text(values, crds=False), encoding="utf-8")
    proc = subprocess.run([tool("checkov"), "-d", str(tmp_path), "--framework", "kubernetes", "--quiet",
                           "--compact", "--skip-download", "-o", "json"], capture_output=True, text=True, timeout=300)
    report = json.loads(proc.stdout)
    report = report[0] if isinstance(report, list) else report
    assert report["summary"]["resource_count"] >= 20 and report["summary"]["passed"] > 100, report["summary"]
    failed: dict[str, set[str]] = {}
    for check in report["results"]["failed_checks"]:
        failed.setdefault(check["file_path"].lstrip("/"), set()).add(check["check_id"])
    for name, accepted in CHECKOV_ACCEPTED.items():
        file = f"{name or 'defaults'}.yaml"
        assert failed.get(file, set()) <= accepted, f"{file}: {sorted(failed[file] - accepted)}"


# --- bad values -----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "args,message",
    [
        (["--set", "replicaCount=abc"], "at '/replicaCount': got string, want integer"),
        (["--set", "replicaCoutn=3"], "additional properties 'replicaCoutn' not allowed"),
        (["--set", "hookAuth.enabeld=false"], "at '/hookAuth': additional properties 'enabeld' not allowed"),
        (["--set", "config.warmPodWaitSeconds=-1"], "at '/config/warmPodWaitSeconds': minimum: got -1, want 0"),
        (["--set", "config.maxTerminationGraceSeconds=0"], "at '/config/maxTerminationGraceSeconds': minimum: got 0, want 1"),
        (["--set", "config.nodeLocalDnsAddresses={169.254.20.0/24}"], "at '/config/nodeLocalDnsAddresses/0'"),
        (["--set", "config.highSecurityRuntimeClass=Bad_Name"],
         "at '/config/highSecurityRuntimeClass': 'Bad_Name' does not match pattern"),
        (["--set", "config.networkPolicyFlavour=calico"], "at '/config/networkPolicyFlavour': value must be 'kubernetes'"),
        (["--set", "config.userNamespaces=true"], "at '/config/userNamespaces': value must be one of 'auto', 'on', 'off'"),
        (["--set", "config.imageRegistryAllowlist={ghcr.io,https://evil.example}"],
         "at '/config/imageRegistryAllowlist/1': 'https://evil.example' does not match pattern"),
        (["--set", "securityContext.runAsUser=0"], "at '/securityContext/runAsUser': minimum: got 0, want 1"),
        (["--set", "config.dnsPodLabels.k8s-app=bad value"], "at '/config/dnsPodLabels/k8s-app': 'bad value' does not match pattern"),
        (["--set", "autoscaling.enabled=true,autoscaling.minReplicas=5,autoscaling.maxReplicas=2"],
         "autoscaling.minReplicas (5) must not exceed autoscaling.maxReplicas (2)"),
        (["--set", "extraEnv[0].name=LLMSS_HOOK_TOKEN,extraEnv[0].value=x"],
         "extraEnv: LLMSS_HOOK_TOKEN is set by the chart from its values"),
    ],
    ids=["replicas-not-int", "unknown-key", "unknown-key-in-section", "negative-warm-wait", "zero-grace", "node-local-dns-cidr", "bad-runtime-class",
         "unknown-flavour", "bad-user-namespaces", "bad-registry", "root-user", "bad-label-value", "hpa-min-over-max", "reserved-env"],
)
def test_bad_values_are_rejected_with_a_clear_message(args: list[str], message: str) -> None:
    proc = helm("template", RELEASE, str(CHART), *args)
    assert proc.returncode != 0, f"helm accepted {args}"
    assert message in proc.stderr, proc.stderr


# (chart value, the variable the chart sets from it, a bad value): the schema and the server agree
SETTINGS = [
    ("config.maxRequestBytes", "LLMSS_MAX_REQUEST_BYTES", "0"),
    ("config.maxRequestBytes", "LLMSS_MAX_REQUEST_BYTES", "4096"),
    ("config.apiNamespace", "LLMSS_API_NAMESPACE", ""),
    ("config.apiNamespace", "LLMSS_API_NAMESPACE", "Sandbox_API"),
    ("config.dnsNamespace", "LLMSS_DNS_NAMESPACE", "kube system"),
    ("config.highSecurityRuntimeClass", "LLMSS_HIGH_SECURITY_RUNTIME_CLASS", ""),
    ("config.retainStorageClass", "LLMSS_RETAIN_STORAGE_CLASS", "Fast SSD"),
    ("config.warmPodWaitSeconds", "LLMSS_WARM_POD_WAIT_SECONDS", "-1"),
    ("config.childCreateGraceSeconds", "LLMSS_CHILD_CREATE_GRACE_SECONDS", "0"),
    ("config.nodeLocalDnsPort", "LLMSS_NODE_LOCAL_DNS_PORT", "70000"),
    ("gunicorn.workers", "WORKERS", "0"),
    ("gunicorn.timeoutSeconds", "GUNICORN_TIMEOUT", "0"),
    ("metrics.port", "METRICS_PORT", "70000"),
]


@pytest.mark.parametrize("value, variable, bad", SETTINGS, ids=[f"{v}={b!r}" for v, _, b in SETTINGS])
def test_chart_refuses_what_the_server_refuses(value: str, variable: str, bad: str) -> None:
    """hooks/config.py would stop the server on `variable=bad`; helm must not render it either."""
    with pytest.raises(ConfigError, match=f"^{variable}: "):
        check_env({variable: bad})
    setter = "--set-string" if not bad.lstrip("-").isdigit() else "--set"
    proc = helm("template", RELEASE, str(CHART), setter, f"{value}={bad}")
    assert proc.returncode != 0, f"helm accepted {value}={bad!r}"
    assert f"at '/{value.replace('.', '/')}'" in proc.stderr, proc.stderr


# --- the optional bundle with Metacontroller as a dependency --------------------------------------

def test_bundle_declares_metacontroller_as_an_optional_dependency() -> None:
    chart = yaml.safe_load((BUNDLE / "Chart.yaml").read_text(encoding="utf-8"))
    deps = {d["name"]: d for d in chart["dependencies"]}
    assert deps["metacontroller-helm"] == {
        "name": "metacontroller-helm", "alias": "metacontroller", "version": "4.17.2",
        "repository": "oci://ghcr.io/metacontroller", "condition": "metacontroller.enabled",
    }
    ours = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    assert deps["llmsafespace"] == {"name": "llmsafespace", "version": ours["version"], "repository": "file://.."}
    assert "dependencies" not in ours, "chart/ must render offline: no dependencies there"
    assert yaml.safe_load((BUNDLE / "values.yaml").read_text(encoding="utf-8"))["metacontroller"]["enabled"] is False


def test_helm_needs_even_a_disabled_dependency_downloaded() -> None:
    """Why chart/ declares none: Helm refuses to render a chart whose declared dependency is not
    in charts/, whatever its condition says (helm/helm#8600). If a future Helm stops doing this,
    the dependency can move into chart/Chart.yaml."""
    proc = helm("template", "x", str(BUNDLE))
    assert proc.returncode != 0
    assert "missing in charts/ directory: llmsafespace, metacontroller" in proc.stderr, proc.stderr


def test_bundle_renders_our_chart_when_metacontroller_is_disabled(tmp_path: Path) -> None:
    """With the dependencies in charts/ (here our packaged chart and a stand-in for Metacontroller's,
    which CI cannot download), the bundle lints and renders and passes values through."""
    bundle = tmp_path / "bundle"
    (bundle / "charts").mkdir(parents=True)
    for name in ("Chart.yaml", "values.yaml"):
        (bundle / name).write_bytes((BUNDLE / name).read_bytes())
    (bundle / "templates").mkdir()
    (bundle / "templates" / "NOTES.txt").write_bytes((BUNDLE / "templates" / "NOTES.txt").read_bytes())
    assert helm("package", str(CHART), "--destination", str(bundle / "charts")).returncode == 0
    stand_in = tmp_path / "metacontroller-helm"
    (stand_in / "templates").mkdir(parents=True)
    (stand_in / "Chart.yaml").write_text("apiVersion: v2\nname: metacontroller-helm\nversion: 4.17.2\n")
    (stand_in / "templates" / "marker.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: stand-in-for-metacontroller\n")
    assert helm("package", str(stand_in), "--destination", str(bundle / "charts")).returncode == 0

    lint = helm("lint", "--strict", str(bundle))
    assert lint.returncode == 0, lint.stdout + lint.stderr
    off = helm("template", "llmsafespace", str(bundle), "-n", NAMESPACE)
    assert off.returncode == 0, off.stderr
    docs = [d for d in yaml.safe_load_all(off.stdout) if d]
    assert {d["kind"] for d in docs} >= {"Deployment", "CompositeController"}
    assert not any(d["metadata"]["name"] == "stand-in-for-metacontroller" for d in docs)
    on = helm("template", "llmsafespace", str(bundle), "-n", NAMESPACE, "--set", "metacontroller.enabled=true",
              "--set", "llmsafespace.networkPolicy.metacontroller.namespace=")
    assert on.returncode == 0, on.stderr
    docs = [d for d in yaml.safe_load_all(on.stdout) if d]
    assert any(d["metadata"]["name"] == "stand-in-for-metacontroller" for d in docs)
    (rule,) = one(docs, "NetworkPolicy")["spec"]["ingress"]
    assert rule["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": NAMESPACE}


# --- golden file ----------------------------------------------------------------------------------

def _normalise_generated_token(text: str) -> str:
    match = re.search(r'^  (token-[0-9a-f]{12}): "([A-Za-z0-9+/=]+)"$', text, re.M)
    assert match, "no generated token in the default render"
    key, encoded = match.groups()
    return text.replace(key, "token-<sha256 of the token>").replace(encoded, "<48 random characters, base64>")


def test_golden_default_render() -> None:
    """tests/golden/chart/default.yaml: `helm template llmsafespace chart -n llmsafespace`
    (CRDs left out: test_rendered_crds_are_exactly_crds_dir covers them). Changes to the chart or
    to metacontroller/*.yaml show here; after an intended change run with LLMSS_UPDATE_GOLDEN=1
    and review `git diff tests/golden/chart`."""
    text = _normalise_generated_token(render_text(crds=False))
    if UPDATE:
        GOLDEN_FILE.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN_FILE.write_text(text, encoding="utf-8")
        return
    assert GOLDEN_FILE.exists(), f"{GOLDEN_FILE} is missing; run with LLMSS_UPDATE_GOLDEN=1 to create it"
    stored = GOLDEN_FILE.read_text(encoding="utf-8")
    if stored != text:
        diff = "".join(difflib.unified_diff(stored.splitlines(True), text.splitlines(True),
                                            str(GOLDEN_FILE.relative_to(ROOT)), "rendered", n=2))
        pytest.fail(f"the default render differs from the golden file; if intended, regenerate with "
                    f"LLMSS_UPDATE_GOLDEN=1 and review the diff:\n{diff[:6000]}")
