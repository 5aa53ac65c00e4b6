"""The chart's gateway (chart/templates/gateway*.yaml), rendered by the real helm: off by default;
when on, its pods are what the sandboxes' NetworkPolicies admit, its settings are what
gateway/config.py accepts, its rights are the few it uses, and it refuses to render a gateway that
every runtime would refuse (docs/gateway.md)."""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest

from gateway.config import Settings
from hooks.builders.network_policy import api_peer
from hooks.config import Config
from tests.test_chart import CHART, CI_VALUES, NAMESPACE, RELEASE, env_of, helm, is_gateway, render

GATEWAY_VALUES = next(p for p in CI_VALUES if p.name == "gateway-values.yaml")
NAME = f"{RELEASE}-gateway"
KEY = "A" * 43 + "="


def gateway(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and is_gateway(d)]
    return found


def pod_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return gateway(docs, "Deployment")["spec"]["template"]


def gateway_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    (c,) = pod_of(docs)["spec"]["containers"]
    return {e["name"]: e["value"] for e in c["env"]}


def on(*extra: str) -> list[dict[str, Any]]:
    return render(None, "--set", "gateway.enabled=true", "--set", f"runtimeAuth.gatewayPublicKeys={{{KEY}}}", *extra)


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        if expr["operator"] == "In" and labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def test_off_by_default() -> None:
    assert not [d for d in render() if is_gateway(d)]


def test_the_sandboxes_network_policies_admit_the_gateway_pods() -> None:
    docs = render(GATEWAY_VALUES)
    pod = pod_of(docs)
    hooks_config = Config.from_env(env_of(docs))  # what the hooks build the sandboxes' policies from
    peer = api_peer(hooks_config)
    assert gateway(docs, "Deployment")["metadata"]["namespace"] == NAMESPACE
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": NAMESPACE}
    assert matches(peer["podSelector"], pod["metadata"]["labels"])
    # ...and no other pod of the release carries those labels
    for d in docs:
        if d["kind"] == "Deployment" and not is_gateway(d):
            assert not matches(peer["podSelector"], d["spec"]["template"]["metadata"]["labels"])


def test_the_rendered_settings_are_what_the_gateway_accepts() -> None:
    docs = render(GATEWAY_VALUES)
    env = gateway_env(docs)
    settings = Settings.from_env(env)
    assert settings.token_audiences == ("llmsafespace-gateway",) and settings.activity_interval_seconds == 30
    assert settings.kubeconfig is None  # in-cluster credentials
    spec = pod_of(docs)["spec"]
    (c,) = spec["containers"]
    mount = next(m for m in c["volumeMounts"] if m["name"] == "signing-key")
    volume = next(v for v in spec["volumes"] if v["name"] == "signing-key")["secret"]
    assert volume["secretName"] == "gateway-signing-key-2026"
    (item,) = volume["items"]
    assert settings.signing_key_file == f"{mount['mountPath']}/{item['path']}" and item["key"] == "ed25519.pem"
    # `python -m gateway keygen` writes the key under the chart's default key name
    from gateway.keygen import DEFAULT_SECRET, KEY_NAME
    default = pod_of(on())["spec"]["volumes"]
    secret = next(v for v in default if v["name"] == "signing-key")["secret"]
    assert (secret["secretName"], secret["items"][0]["key"]) == (DEFAULT_SECRET, KEY_NAME)
    # every LLMSS_* variable the chart sets is one gateway/config.py reads
    source = (Path(__file__).resolve().parent.parent / "gateway" / "config.py").read_text(encoding="utf-8")
    for name in env:
        if name.startswith("LLMSS_"):
            assert f'"{name}"' in source, f"the chart sets {name}, which gateway/config.py does not read"


def test_gunicorn_binds_the_container_port_and_the_service_targets_it() -> None:
    from gunicorn.config import Config as GunicornConfig

    docs = on("--set", "gateway.port=9443")
    env = gateway_env(docs)
    args = GunicornConfig().parser().parse_args(shlex.split(env["GUNICORN_CMD_ARGS"]) + ["gateway.wsgi:app"])
    (c,) = pod_of(docs)["spec"]["containers"]
    assert args.bind == ["0.0.0.0:9443"] and c["ports"] == [{"name": "http", "containerPort": 9443, "protocol": "TCP"}]
    assert c["command"] == ["gunicorn", "--config", "gateway/gunicorn_conf.py", "gateway.wsgi:app"]
    service = gateway(docs, "Service")["spec"]
    assert service["ports"][0]["targetPort"] == "http"
    assert matches({"matchLabels": service["selector"]}, pod_of(docs)["metadata"]["labels"])
    hooks_pod = next(d for d in docs if d["kind"] == "Deployment" and not is_gateway(d))["spec"]["template"]
    assert not matches({"matchLabels": service["selector"]}, hooks_pod["metadata"]["labels"])


def test_pod_is_hardened_and_mounts_its_token() -> None:
    spec = pod_of(on())["spec"]
    assert spec["serviceAccountName"] == NAME and spec["automountServiceAccountToken"] is True
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (c,) = spec["containers"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/tmp"]["name"] == "tmp" and all(m.get("readOnly") for m in mounts.values() if m["name"] == "signing-key")


def test_rbac_is_the_few_rights_the_gateway_uses() -> None:
    docs = on()
    role = gateway(docs, "ClusterRole")
    rights = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    assert rights == {("authentication.k8s.io", "tokenreviews", "create"), ("authorization.k8s.io", "subjectaccessreviews", "create"),
                      *{("llmsafespace.dev", "sandboxes", v) for v in ("get", "list", "watch", "patch")},
                      ("", "pods", "get")}
    binding = gateway(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]
    assert gateway(docs, "ServiceAccount")["metadata"]["name"] == NAME


def test_pdb_and_hpa_select_the_gateway_only() -> None:
    docs = render(GATEWAY_VALUES)
    labels = pod_of(docs)["metadata"]["labels"]
    assert matches(gateway(docs, "PodDisruptionBudget")["spec"]["selector"], labels)
    hpa = gateway(docs, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"]["name"] == NAME and (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)
    assert "replicas" not in gateway(docs, "Deployment")["spec"]
    assert gateway(on(), "Deployment")["spec"]["replicas"] == 2
    assert not [d for d in on("--set", "gateway.podDisruptionBudget.enabled=false") if d["kind"] == "PodDisruptionBudget" and is_gateway(d)]


def test_network_policy_lets_the_gateway_reach_runtimes_and_the_api_server_only() -> None:
    docs = on("--set", "gateway.networkPolicy.apiServerCIDRs={192.0.2.1/32}")
    policy = gateway(docs, "NetworkPolicy")["spec"]
    assert matches(policy["podSelector"], pod_of(docs)["metadata"]["labels"])
    runtimes, api = policy["egress"]
    for component in ("sandbox", "warmpod"):  # what hooks/builders label sandbox and warm pods
        assert matches(runtimes["to"][0]["podSelector"], {"app": "llmsafespace", "component": component})
    assert not matches(runtimes["to"][0]["podSelector"], {"app": "llmsafespace", "component": "api"})
    assert runtimes["ports"] == [{"port": 8080, "protocol": "TCP"}]
    assert api == {"to": [{"ipBlock": {"cidr": "192.0.2.1/32"}}], "ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]}
    assert policy["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]


def test_new_public_keys_roll_the_gateway_pods() -> None:
    first = pod_of(on())["metadata"]["annotations"]["llmsafespace.dev/gateway-public-keys"]
    second = pod_of(on("--set", f"runtimeAuth.gatewayPublicKeys={{{KEY},{'B' * 43}=}}"))["metadata"]["annotations"]
    assert first != second["llmsafespace.dev/gateway-public-keys"]


@pytest.mark.parametrize("args,message", [
    (["--set", "gateway.enabled=true"], "runtimeAuth.gatewayPublicKeys is empty"),
    (["--set", "gateway.enabled=true", "--set", f"runtimeAuth.gatewayPublicKeys={{{KEY}}}", "--set", "config.apiNamespace=sandbox-api"],
     'config.apiNamespace is "sandbox-api"'),
    (["--set", "gateway.enabled=true", "--set", f"runtimeAuth.gatewayPublicKeys={{{KEY}}}", "--set",
      "gateway.autoscaling.enabled=true,gateway.autoscaling.minReplicas=5,gateway.autoscaling.maxReplicas=2"],
     "gateway.autoscaling.minReplicas (5) must not exceed"),
    (["--set", "gateway.authCacheSeconds=301"], "at '/gateway/authCacheSeconds'"),
    (["--set", "gateway.maxBodyBytes=10"], "at '/gateway/maxBodyBytes'"),
    (["--set", "gateway.signingKey.secretName=Bad_Name"], "at '/gateway/signingKey/secretName'"),
    (["--set", "gateway.enabeld=true"], "at '/gateway': additional properties 'enabeld' not allowed"),
], ids=["no-public-key", "other-api-namespace", "hpa-min-over-max", "cache-too-long", "tiny-body-limit", "bad-secret-name", "typo"])
def test_a_gateway_that_could_not_work_is_not_rendered(args: list[str], message: str) -> None:
    proc = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr


def test_the_chart_bounds_are_the_gateways() -> None:
    """What the schema allows, gateway/config.py accepts (the extremes of each range)."""
    import json

    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))["properties"]["gateway"]["properties"]
    for value, variable in (("authCacheSeconds", "LLMSS_GATEWAY_AUTH_CACHE_SECONDS"),
                            ("activityIntervalSeconds", "LLMSS_GATEWAY_ACTIVITY_INTERVAL_SECONDS"),
                            ("maxWaitSeconds", "LLMSS_GATEWAY_MAX_WAIT_SECONDS"), ("maxBodyBytes", "LLMSS_GATEWAY_MAX_BODY_BYTES"),
                            ("runtimePort", "LLMSS_GATEWAY_RUNTIME_PORT")):
        for bound in (schema[value]["minimum"], schema[value]["maximum"]):
            Settings.from_env({"LLMSS_GATEWAY_SIGNING_KEY_FILE": "/k", variable: str(bound)})
