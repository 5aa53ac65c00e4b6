"""User namespaces (issue 15, item 4; docs/install.md, "User namespaces"): hostUsers: false on
sandbox and warm pods of levels that do not run under gVisor (runsc refuses it), switched by
LLMSS_USER_NAMESPACES=auto|on|off."""
from __future__ import annotations

from typing import Any, Optional

import pytest

from hooks import constants as C
from hooks import sandbox_sync, warmpod_sync
from hooks.config import Config
from tests.factory import NOW, sandbox
from tests.sandbox_cases import creating
from tests.security import assert_pod_hardened
from tests.warm_factory import warmpod_parent, warmpod_request

CUSTOM = {"securityLevel": "custom", "securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}}}
LEVEL_SPECS: dict[str, dict[str, Any]] = {"standard": {}, "high": {"securityLevel": "high"}, "custom": CUSTOM}


def _sandbox_pod(level: str, config: Config) -> dict[str, Any]:
    out = sandbox_sync.sync(creating(sandbox("u", spec=LEVEL_SPECS[level])), NOW, config)
    return next(c for c in out["children"] if c["kind"] == "Pod")


def _warm_pod(level: str, config: Config) -> Optional[dict[str, Any]]:
    if level == "custom":
        return None  # a pool of level custom is refused: warm pods run RuntimeDefault
    out = warmpod_sync.sync(warmpod_request(warmpod_parent(spec_overrides={"securityLevel": level})), NOW, config)
    return next(c for c in out["children"] if c["kind"] == "Pod")


# (mode, level) -> hostUsers expected (None: absent, the node's user namespace)
EXPECTED = {
    ("auto", "standard"): False, ("auto", "custom"): False, ("auto", "high"): None,
    ("on", "standard"): False, ("on", "custom"): False, ("on", "high"): False,
    ("off", "standard"): None, ("off", "custom"): None, ("off", "high"): None,
}


@pytest.mark.parametrize("mode,level", sorted(EXPECTED))
def test_host_users_by_mode_and_level(mode: str, level: str) -> None:
    config = Config.from_env({"LLMSS_USER_NAMESPACES": mode})
    for pod in (_sandbox_pod(level, config), _warm_pod(level, config)):
        if pod is None:
            continue
        assert pod["spec"].get("hostUsers", None) is EXPECTED[(mode, level)], (mode, level, pod["metadata"]["name"])
        assert_pod_hardened(pod)  # still Pod-Security "restricted"


def test_on_by_default_for_levels_without_gvisor() -> None:
    assert Config().user_namespaces == C.USER_NAMESPACES_AUTO == Config.from_env({}).user_namespaces
    assert _sandbox_pod("standard", Config())["spec"]["hostUsers"] is False
    assert "hostUsers" not in _sandbox_pod("high", Config())["spec"]  # gVisor's runsc refuses it


@pytest.mark.parametrize("raw", ["yes", "true", "1", "gvisor"])
def test_an_unknown_mode_is_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="LLMSS_USER_NAMESPACES: must be one of auto, on, off"):
        Config.from_env({"LLMSS_USER_NAMESPACES": raw})


def test_the_mode_is_case_insensitive() -> None:
    assert Config.from_env({"LLMSS_USER_NAMESPACES": " OFF "}).user_namespaces == "off"


# ---------------------------------------------------------------------------------------------
# Switching the mode (an upgrade turns it on): pods that exist keep what they have


def test_switching_the_mode_never_asks_to_change_a_running_pod() -> None:
    """Warm Pods are InPlace children and a Pod's spec is immutable: a warm pod made under "off"
    keeps running as it is once the mode is "auto" (an update asking for hostUsers would be
    refused, and its relabelling for a sandbox with it), and still serves a sandbox; new pods get
    the new setting. Sandbox pods are OnDelete: never updated."""
    import copy

    from tests.factory import runtime
    from tests.harness import Harness, load_controllers

    h = Harness(load_controllers([C.KIND_SANDBOX, C.KIND_WARMPOOL, C.KIND_WARMPOD]), Config(user_namespaces="off", warm_pod_wait_seconds=20),
                NOW, 5, stale=0.15, step=2.0)
    h.create(runtime())
    h.create({"apiVersion": C.API_VERSION, "kind": C.KIND_WARMPOOL, "metadata": {"name": "python", "namespace": "demo"},
              "spec": {"runtime": "python:3.11", "minSize": 1}})
    h.create({"apiVersion": C.API_VERSION, "kind": C.KIND_SANDBOX, "metadata": {"name": "cold", "namespace": "demo"},
              "spec": {"runtime": "python-3.11"}})
    h.run_until_quiet()
    before = {k: copy.deepcopy(o) for k, o in h.objects.items() if k[0] == "Pod"}
    assert before and all("hostUsers" not in o["spec"] for o in before.values())
    h.config = h.config.model_copy(update={"user_namespaces": "auto"})
    h.create({"apiVersion": C.API_VERSION, "kind": C.KIND_SANDBOX,
              "metadata": {"name": "warm", "namespace": "demo", "annotations": {C.ANNOTATION_USE_WARM_POD: "true"}},
              "spec": {"runtime": "python-3.11"}})
    h.run_until_quiet()
    assert not h.violations, h.violations
    warm = h.objects[(C.KIND_SANDBOX, "demo", "warm")]
    assert warm["status"]["warmPodUsed"] is True and warm["status"]["podName"] in {k[2] for k in before}
    for key, pod in before.items():
        assert h.objects[key]["metadata"]["uid"] == pod["metadata"]["uid"] and "hostUsers" not in h.objects[key]["spec"]
    # The pool's refill is a new pod: it gets the new setting.
    new = [o for k, o in h.objects.items() if k[0] == "Pod" and k not in before]
    assert new and all(o["spec"]["hostUsers"] is False for o in new)


# ---------------------------------------------------------------------------------------------
# "auto" follows what the runtime reports of its nodes (hooks/runtime_sync.py)


def _unsupported_runtime() -> dict[str, Any]:
    from tests.factory import runtime
    rte = runtime()
    rte["status"]["userNamespaces"] = {"supported": False}
    return rte


def test_auto_leaves_out_host_users_where_the_nodes_lack_support() -> None:
    """A kubelet whose runtime lacks user namespaces refuses a pod with hostUsers: false and it
    waits in ContainerCreating: with "auto" such a runtime's pods go without, and the sandbox says
    so at once; "on" still asks (the operator's explicit choice)."""
    parent = sandbox("u")
    out = sandbox_sync.sync(creating(parent, _unsupported_runtime()), NOW, Config())
    pod = next(c for c in out["children"] if c["kind"] == "Pod")
    assert "hostUsers" not in pod["spec"]
    assert_pod_hardened(pod)
    validated = next(c for c in out["status"]["conditions"] if c["type"] == "Validated")
    assert "no user namespace of its own" in validated["message"] and "UserNamespaces" in validated["message"]
    forced = sandbox_sync.sync(creating(parent, _unsupported_runtime()), NOW, Config(user_namespaces="on"))
    assert next(c for c in forced["children"] if c["kind"] == "Pod")["spec"]["hostUsers"] is False


def test_a_runtime_without_the_report_keeps_user_namespaces() -> None:
    """Status written before this field existed (or before the runtime's first sync) changes no pod."""
    out = sandbox_sync.sync(creating(sandbox("u")), NOW, Config())
    assert next(c for c in out["children"] if c["kind"] == "Pod")["spec"]["hostUsers"] is False
    validated = next(c for c in out["status"]["conditions"] if c["type"] == "Validated")
    assert "user namespace" not in validated["message"]


def test_warm_pods_follow_the_runtime_report() -> None:
    """The pool writes userNamespaces: false into the WarmPods it creates; their pods go without.
    A runtime without the report keeps the WarmPod spec as it was (no field)."""
    from hooks import warmpool_sync
    from tests.warm_factory import pool, pool_request

    def new_warmpods(rte: dict[str, Any]) -> list[dict[str, Any]]:
        out = warmpool_sync.sync(pool_request(pool(), related=[rte]), NOW, Config())
        return [c for c in out["children"] if c["kind"] == C.KIND_WARMPOD]

    from tests.factory import runtime
    unsupported, plain = new_warmpods(_unsupported_runtime()), new_warmpods(runtime())
    assert unsupported and all(w["spec"]["userNamespaces"] is False for w in unsupported)
    assert plain and all("userNamespaces" not in w["spec"] for w in plain)
    pod = next(c for c in warmpod_sync.sync(warmpod_request(warmpod_parent(spec_overrides={"userNamespaces": False})), NOW,
                                            Config())["children"] if c["kind"] == "Pod")
    assert "hostUsers" not in pod["spec"]
    assert_pod_hardened(pod)
