"""Per-sandbox environment (spec.env / spec.envFrom; docs/environment.md): what reaches the pod on
the cold path, the warm-path rule (a pool serves a sandbox only when both declare the same
environment), reserved names, and that Secrets (values and references) never reach status or logs."""
from __future__ import annotations

import copy
import io
import json
import random
from typing import Any

import pytest
import yaml

from hooks.server import app as app_module
from hooks import constants as C
from hooks import drift, sandbox_sync, warm, warmpod_sync, warmpool_sync
from hooks.config import Config
from hooks.validators import SandboxSpec, SpecError, WarmPoolSpec, parse_spec
from tests.factory import NOW, running_pod_status, sandbox, settle, sync_request
from tests.harness import Harness, load_controllers
from tests.sandbox_cases import ENV, ENV_FROM, RTE, account, creating, warm_offer
from tests.warm_factory import ago, pool, pool_request, waiting_sandbox, warm_pod, warmpod_parent, warmpod_request

# Markers that must never appear in status, conditions or log lines: a Secret's name and key, and
# a value the kubelet would read from it (the hooks never see values; the test proves it stays so).
SECRET_NAME, SECRET_KEY, SECRET_PREFIX = "topsecret-creds-4711", "private-key-0815", "SECRETPFX_"
SECRET_ENV = [{"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": SECRET_KEY}}}]
SECRET_ENV_FROM = [{"secretRef": {"name": SECRET_NAME}, "prefix": SECRET_PREFIX}]
MARKERS = (SECRET_NAME, SECRET_KEY, SECRET_PREFIX)

# What the hooks add, last, to every sandbox container for its runtime (pod.runtime_env).
PLATFORM_ENV = [C.ENV_GATEWAY_PUBLIC_KEYS, C.ENV_POD_UID, C.ENV_RUNTIME_WRITABLE]


def user_env(container: dict[str, Any]) -> list[dict[str, Any]]:
    """The container's env without the runtime's platform variables (asserted present, last)."""
    env = container.get("env") or []
    assert [e["name"] for e in env[-len(PLATFORM_ENV):]] == PLATFORM_ENV, env
    return env[:-len(PLATFORM_ENV)]


def cond(response: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in response["status"]["conditions"] if c["type"] == type_)


def pod_of(response: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in response["children"] if c["kind"] == "Pod")


# ---------------------------------------------------------------------------------------------
# One list of reserved names, in the models and in every CRD


def _cel_rules(kind_file: str) -> list[str]:
    crd = yaml.safe_load(open(f"crds/{kind_file}.yaml"))
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    return [r["rule"] for r in spec["env"]["items"]["x-kubernetes-validations"]] + \
        [r["rule"] for r in spec["envFrom"]["items"]["x-kubernetes-validations"]]


@pytest.mark.parametrize("kind_file", ["sandboxes", "warmpools", "warmpods"])
def test_the_crds_reserve_exactly_the_names_of_constants(kind_file: str) -> None:
    name_rule, _both, prefix_rule = _cel_rules(kind_file)
    listed = name_rule.split("[", 1)[1].split("]", 1)[0]
    assert [n.strip().strip("'") for n in listed.split(",")] == list(C.RESERVED_ENV_NAMES)
    for prefix in C.RESERVED_ENV_PREFIXES:
        assert f"!self.name.startsWith('{prefix}')" in name_rule and f"!self.prefix.startsWith('{prefix}')" in prefix_rule
    # Both spellings of every proxy variable: curl reads only the lower-case http_proxy.
    assert {"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"} <= set(C.RESERVED_ENV_NAMES)


@pytest.mark.parametrize("name", [*C.RESERVED_ENV_NAMES, "LLMSS_HOOK_TOKEN", "LLMSAFESPACE_X"])
def test_reserved_names_are_refused_with_a_clear_message(name: str) -> None:
    with pytest.raises(SpecError, match=f"spec.env\\[0\\].name: {name} is reserved"):
        parse_spec(SandboxSpec, {"spec": {"runtime": "python:3.11", "env": [{"name": name, "value": "x"}]}})
    with pytest.raises(SpecError, match="is reserved"):
        parse_spec(WarmPoolSpec, {"spec": {"runtime": "python:3.11", "env": [{"name": name, "value": "x"}]}})


def test_sizes_are_bounded() -> None:
    def refused(spec: dict[str, Any]) -> str:
        with pytest.raises(SpecError) as err:
            parse_spec(SandboxSpec, {"spec": {"runtime": "python:3.11", **spec}})
        return str(err.value)

    assert "at most 64 items" in refused({"env": [{"name": f"V{i}", "value": "x"} for i in range(C.ENV_MAX_ITEMS + 1)]})
    assert "at most 8 items" in refused({"envFrom": [{"secretRef": {"name": f"s{i}"}} for i in range(C.ENV_FROM_MAX_ITEMS + 1)]})
    assert "at most 4096 characters" in refused({"env": [{"name": "BIG", "value": "x" * (C.ENV_VALUE_MAX + 1)}]})
    assert "required pattern" in refused({"env": [{"name": "1ST", "value": "x"}]})
    assert "unique" in refused({"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]})
    # Only Secrets: a configMapKeyRef is pruned by the API server, leaving valueFrom without its one source.
    assert "secretKeyRef" in refused({"env": [{"name": "A", "valueFrom": {}}]})


# ---------------------------------------------------------------------------------------------
# Cold path: the pod carries the environment, as references


def test_a_cold_pod_carries_env_and_env_from_as_written() -> None:
    out = sandbox_sync.sync(creating(sandbox("agent", spec={"env": ENV, "envFrom": ENV_FROM})), NOW)
    container = pod_of(out)["spec"]["containers"][0]
    assert user_env(container) == ENV and container["envFrom"] == ENV_FROM


def test_a_sandbox_without_env_has_no_env_keys() -> None:
    container = pod_of(sandbox_sync.sync(creating(sandbox("plain")), NOW))["spec"]["containers"][0]
    assert user_env(container) == [] and "envFrom" not in container


def test_an_env_edit_is_reported_without_values_and_the_pod_is_kept() -> None:
    parent = sandbox("agent", spec={"env": SECRET_ENV})
    held, _ = settle(sandbox_sync.sync, sync_request(parent, related=[RTE]), pod_status=running_pod_status())
    edited = copy.deepcopy(parent)
    edited["spec"]["env"] = [{"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": "other"}}}]
    edited["metadata"]["generation"] = 2
    out = sandbox_sync.sync(sync_request(edited, children=held, related=[RTE]), NOW)
    applied = cond(out, "SpecApplied")
    assert (applied["status"], applied["reason"]) == ("False", "PodOutdated")
    assert drift.ENV_DIFFERS in applied["message"]
    kept = pod_of(out)  # OnDelete: the desired pod changes, the running one is not replaced
    assert any(c["kind"] == "Pod" for c in out["children"]) and kept["metadata"]["name"] == "sandbox-agent"
    assert not [m for m in MARKERS + ("other",) if m in json.dumps(out["status"])]


def test_an_invalid_env_edit_keeps_the_running_pod() -> None:
    parent = sandbox("agent", spec={"env": ENV})
    held, _ = settle(sandbox_sync.sync, sync_request(parent, related=[RTE]), pod_status=running_pod_status())
    edited = copy.deepcopy(parent)
    edited["spec"]["env"] = [{"name": "HTTPS_PROXY", "value": "http://elsewhere:3128"}]
    out = sandbox_sync.sync(sync_request(edited, children=held, related=[RTE]), NOW)
    validated = cond(out, "Validated")
    assert (validated["status"], validated["reason"]) == ("False", "InvalidSpec") and "HTTPS_PROXY is reserved" in validated["message"]
    # The running pod is kept as it is, its environment the one it was made with.
    assert pod_of(out)["metadata"]["name"] == "sandbox-agent" and user_env(pod_of(out)["spec"]["containers"][0]) == ENV


# ---------------------------------------------------------------------------------------------
# Warm path: same environment or a cold start


def _warm_decision(sandbox_env: Any, offer_env: Any) -> dict[str, Any]:
    spec = {"env": sandbox_env} if sandbox_env else {}
    offer_spec = {}
    if offer_env:
        offer_spec["envDigest"] = warm.make_offer("python-pool", "python-3.11", WarmPoolSpec.model_validate(
            {"runtime": "python:3.11", "env": offer_env})).spec.env_digest
    parent = sandbox("keyed", annotations={C.ANNOTATION_USE_WARM_POD: "true"}, spec=spec)
    return sandbox_sync.sync(sync_request(parent, related=[RTE, warm_offer(**offer_spec)]), NOW)


@pytest.mark.parametrize("sandbox_env,pool_env,served", [
    (None, None, True),
    (ENV, ENV, True),
    (ENV, None, False),  # a running pod cannot gain variables
    (None, ENV, False),  # and a pool's variables (its Secrets) never reach a sandbox that did not ask
    (ENV, ENV[:1], False),
    (ENV, list(reversed(ENV)), False),  # order matters: $(VAR) refers to earlier entries
])
def test_a_pool_serves_only_sandboxes_declaring_its_environment(sandbox_env: Any, pool_env: Any, served: bool) -> None:
    out = _warm_decision(sandbox_env, pool_env)
    warm_cond = cond(out, "WarmPod")
    if served:
        assert (warm_cond["status"], warm_cond["reason"]) == ("Unknown", "WaitingForWarmPod"), warm_cond
    else:
        assert (warm_cond["status"], warm_cond["reason"]) == ("False", warm.REASON_ENV_MISMATCH), warm_cond
        assert out["status"]["warmPodUsed"] is False and "environment:" in warm_cond["message"]
        assert not [m for m in ("llm-keys", "openai", "analysis") if m in warm_cond["message"]]


def test_the_mismatch_reason_is_sticky_once_the_cold_start_began() -> None:
    first = _warm_decision(ENV, None)
    parent = sandbox("keyed", annotations={C.ANNOTATION_USE_WARM_POD: "true"}, spec={"env": ENV}, status=first["status"])
    later = sandbox_sync.sync(sync_request(parent, children=account(parent), related=[RTE, warm_offer()]), NOW)
    assert cond(later, "WarmPod")["reason"] == warm.REASON_ENV_MISMATCH


def test_the_offer_carries_a_digest_never_the_environment() -> None:
    out = warmpool_sync.sync(pool_request(pool(minSize=1, env=SECRET_ENV, envFrom=SECRET_ENV_FROM)), NOW)
    offer = next(c for c in out["children"] if c["kind"] == C.KIND_WARMPOOL_OFFER)
    assert offer["spec"]["envDigest"].startswith("sha256:")
    assert not [m for m in MARKERS if m in json.dumps(offer)]
    # Without env the offer is what it was before env existed.
    plain = warmpool_sync.sync(pool_request(pool(minSize=1)), NOW)
    assert "envDigest" not in next(c for c in plain["children"] if c["kind"] == C.KIND_WARMPOOL_OFFER)["spec"]


def test_warm_pods_of_a_pool_carry_its_environment() -> None:
    out = warmpool_sync.sync(pool_request(pool(minSize=1, env=ENV, envFrom=ENV_FROM)), NOW)
    (wp,) = [c for c in out["children"] if c["kind"] == C.KIND_WARMPOD]
    assert wp["spec"]["env"] == ENV and wp["spec"]["envFrom"] == ENV_FROM
    pod = pod_of(warmpod_sync.sync(warmpod_request(warmpod_parent(spec_overrides=wp["spec"])), NOW))
    assert user_env(pod["spec"]["containers"][0]) == ENV and pod["spec"]["containers"][0]["envFrom"] == ENV_FROM


def test_an_env_edit_of_a_pool_recycles_its_idle_pods() -> None:
    p = pool(minSize=1, env=ENV, status={"lastScaleTime": ago(3600)})
    idle = warm_pod(p, 0)  # made before the pool had env
    out = warmpool_sync.sync(pool_request(p, [idle]), NOW)
    names = [c["metadata"]["name"] for c in out["children"] if c["kind"] == C.KIND_WARMPOD]
    assert idle["metadata"]["name"] not in names and len(names) == 1


def test_the_pool_never_assigns_a_pod_to_a_sandbox_of_another_environment() -> None:
    # The sandbox's status may predate an edit of either side: the pool checks again.
    p = pool(minSize=1, env=ENV, status={"lastScaleTime": ago(3600)})
    bare = waiting_sandbox("bare", created=ago(30))
    out = warmpool_sync.sync(pool_request(p, [warm_pod(p, 0, spec_overrides={"env": ENV})], related=[RTE, bare]), NOW)
    assert not [c for c in out["children"] if c["kind"] == C.KIND_WARMPOD and "assignment" in c["spec"]]
    ready = cond(out, "Ready")
    assert "bare (environment:" in ready["message"]


# ---------------------------------------------------------------------------------------------
# Secrets never reach status, log lines or metrics


def _leak_scenarios() -> list[tuple[str, str, dict[str, Any]]]:
    secret_spec = {"env": SECRET_ENV, "envFrom": SECRET_ENV_FROM}
    cold = sandbox("agent", spec=secret_spec)
    held, _ = settle(sandbox_sync.sync, sync_request(cold, related=[RTE]), pod_status=running_pod_status())
    edited = copy.deepcopy(cold)
    edited["spec"]["envFrom"] = [{"secretRef": {"name": SECRET_NAME + "-v2"}}]
    bad = copy.deepcopy(cold)
    bad["spec"]["env"] = [{"name": "X", "valueFrom": {"secretKeyRef": {"name": SECRET_NAME.upper(), "key": SECRET_KEY + "/"}}}]
    warm_sb = sandbox("keyed", annotations={C.ANNOTATION_USE_WARM_POD: "true"}, spec=secret_spec)
    p = pool(minSize=1, env=SECRET_ENV, envFrom=SECRET_ENV_FROM, status={"lastScaleTime": ago(3600)})
    waiting = waiting_sandbox("waiting", created=ago(20), spec=secret_spec)
    wp = warm_pod(p, 0, spec_overrides={"env": SECRET_ENV, "envFrom": SECRET_ENV_FROM})
    return [
        ("sandbox", "sync", creating(cold)),
        ("sandbox", "sync", sync_request(cold, children=held, related=[RTE])),
        ("sandbox", "sync", sync_request(edited, children=held, related=[RTE])),  # drift
        ("sandbox", "sync", sync_request(bad, children=held, related=[RTE])),  # invalid references
        ("sandbox", "sync", sync_request(warm_sb, related=[RTE, warm_offer()])),  # env mismatch
        ("warmpool", "sync", pool_request(p, [wp], related=[RTE, waiting])),
        ("warmpod", "sync", warmpod_request(warmpod_parent(spec_overrides=wp["spec"]))),
    ]


def test_no_secret_reference_reaches_status_or_log_lines() -> None:
    stream = io.StringIO()
    client = app_module.create_app(Config(), clock=lambda: NOW, env={"LOG_LEVEL": "debug"}, log_stream=stream).test_client()
    statuses = []
    for controller, hook, request in _leak_scenarios():
        reply = client.post(f"/{controller}/{hook}", data=json.dumps(request), content_type="application/json")
        assert reply.status_code == 200, reply.data
        statuses.append(json.dumps(reply.get_json()["status"]))
    scraped = client.get("/metrics")
    assert scraped.status_code == 200
    metrics = scraped.get_data(as_text=True)
    logged = stream.getvalue()
    assert len(logged.splitlines()) >= len(statuses)
    for marker in MARKERS:
        assert not [s for s in statuses if marker in s], marker
        assert marker not in logged and marker not in metrics, marker
    # The invalid reference was reported, without repeating it.
    assert "valueFrom.secretKeyRef.name: does not match the required pattern" in statuses[3]


def test_the_leak_check_would_see_a_leak() -> None:
    # The scenarios do carry the markers to the hooks: the test above is not vacuous.
    assert all(any(m in json.dumps(r) for m in MARKERS) for _c, _h, r in _leak_scenarios())


# ---------------------------------------------------------------------------------------------
# Convergence (tests/harness.py: Metacontroller with stale caches, conflicts, a kubelet)

CONTROLLERS = load_controllers([C.KIND_SANDBOX, C.KIND_WARMPOOL, C.KIND_WARMPOD])


def _sandbox_obj(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": C.API_VERSION, "kind": C.KIND_SANDBOX,
            "metadata": {"name": name, "namespace": "demo", "annotations": {C.ANNOTATION_USE_WARM_POD: "true"}},
            "spec": {"runtime": "python-3.11", **spec}}


def _pool_obj(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": C.API_VERSION, "kind": C.KIND_WARMPOOL, "metadata": {"name": name, "namespace": "demo"},
            "spec": {"runtime": "python:3.11", "minSize": 2, **spec}}


def _serving_pod(h: Harness, sb: dict[str, Any]) -> dict[str, Any]:
    return h.objects[("Pod", "demo", sb["status"]["podName"])]


def _env_of(pod: dict[str, Any]) -> tuple[Any, Any]:
    container = pod["spec"]["containers"][0]
    return user_env(container), container.get("envFrom") or []


@pytest.mark.parametrize("seed", range(4))
def test_every_sandbox_runs_with_exactly_its_environment(seed: int) -> None:
    """Two pools (one with env), sandboxes of three environments created in a burst: each runs on
    a pod with exactly its own environment, warm when a pool declares it, cold otherwise."""
    h = Harness(CONTROLLERS, Config(warm_pod_wait_seconds=20), NOW, seed, stale=0.15, step=2.0)
    h.create(RTE)
    h.create(_pool_obj("plain"))
    h.create(_pool_obj("keyed", env=ENV, envFrom=ENV_FROM))
    h.run_until_quiet()
    rng = random.Random(seed)
    kinds = {"bare": {}, "same": {"env": ENV, "envFrom": ENV_FROM}, "other": {"env": ENV[:1]}}
    made = {}
    for i in range(6):
        kind = rng.choice(sorted(kinds))
        made[f"sb-{i}"] = kind
        h.create(_sandbox_obj(f"sb-{i}", **kinds[kind]))
        h.run_round()
    for _ in range(60):
        h.run_round()
        running = {k[2]: o for k, o in h.objects.items() if k[0] == C.KIND_SANDBOX and (o.get("status") or {}).get("phase") == "Running"}
        if len(running) == len(made):
            break
    assert len(running) == len(made), {k: (o.get("status") or {}).get("phase") for k, o in h.objects.items() if k[0] == C.KIND_SANDBOX}
    assert not h.violations
    for name, kind in made.items():
        sb = running[name]
        want = (kinds[kind].get("env") or [], kinds[kind].get("envFrom") or [])
        assert _env_of(_serving_pod(h, sb)) == want, name
        if kind == "other":
            assert sb["status"]["warmPodUsed"] is False and cond(sb, "WarmPod")["reason"] == warm.REASON_ENV_MISMATCH
        else:
            assert sb["status"]["warmPodUsed"] is True and sb["status"]["warmPool"] == ("keyed" if kind == "same" else "plain")


def test_an_env_edit_of_a_warm_sandbox_keeps_its_pod_until_a_replacement_is_requested() -> None:
    h = Harness(CONTROLLERS, Config(warm_pod_wait_seconds=20), NOW, 7, stale=0.15, step=2.0)
    h.create(RTE)
    h.create(_pool_obj("keyed", env=ENV))
    h.run_until_quiet()
    h.create(_sandbox_obj("agent", env=ENV))
    h.run_until_quiet()
    key = (C.KIND_SANDBOX, "demo", "agent")
    sb = h.objects[key]
    assert sb["status"]["warmPodUsed"] is True
    warm_pod_uid = _serving_pod(h, sb)["metadata"]["uid"]
    edited = copy.deepcopy(sb)
    edited["spec"]["env"] = ENV + [{"name": "EXTRA", "value": "1"}]
    edited["metadata"]["generation"] += 1
    h._replace(key, edited)
    h.run_until_quiet()
    sb = h.objects[key]
    assert sb["status"]["warmPodUsed"] is True and _serving_pod(h, sb)["metadata"]["uid"] == warm_pod_uid
    assert drift.ENV_DIFFERS in cond(sb, "SpecApplied")["message"]
    # The documented way to apply it: a new pod, cold (a pool's pods have the pool's environment).
    requested = copy.deepcopy(h.objects[key])
    requested["metadata"].setdefault("annotations", {})[C.ANNOTATION_REPLACE_POD] = "1"
    h._replace(key, requested)
    h.run_until_quiet()
    sb = h.objects[key]
    assert sb["status"]["phase"] == "Running" and sb["status"]["warmPodUsed"] is False
    assert _env_of(_serving_pod(h, sb))[0] == edited["spec"]["env"] and cond(sb, "SpecApplied")["status"] == "True"
    assert not h.violations
