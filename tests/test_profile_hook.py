"""The SandboxProfile hook: every step's reason, the runtime check against related
RuntimeEnvironments (including waiting for them), goldens and determinism."""
from __future__ import annotations

import copy
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
import yaml

from hooks import constants as C
from hooks.server import jsonio
from hooks import profile_sync, resolve
from hooks.response import BadRequest
from hooks.validators import SandboxSpec
from tests.factory import NOW, NS, profile, runtime
from tests.golden import check_golden

ROOT = Path(__file__).parent.parent
PY = runtime("python-3.11", "python", "3.11")
PY_DOWN = runtime("python-3.12", "python", "3.12", available=False)
PY_NEW = runtime("python-3.13", "python", "3.13", available=None)
NODE = runtime("node-20", "nodejs", "20")
EXAMPLE = yaml.safe_load((ROOT / "examples" / "sandboxprofile-data-science.yaml").read_text())


def request(spec: Optional[dict[str, Any]] = None, runtimes: tuple[dict[str, Any], ...] = (PY,),
            status: Optional[dict[str, Any]] = None, replace: Any = None) -> dict[str, Any]:
    parent = profile(validated=None, **(spec or {}))
    if replace is not None:
        parent["spec"] = replace
    if status is not None:
        parent["status"] = status
    related: dict[str, Any] = {C.GVK_RUNTIME: {r["metadata"]["name"]: r for r in runtimes}}
    return {
        "controller": {"apiVersion": "metacontroller.k8s.io/v1alpha1", "kind": "CompositeController",
                       "metadata": {"name": "llmsafespace-sandboxprofile"}},
        "parent": parent, "children": {}, "related": related, "finalizing": False,
    }


def condition(response: dict[str, Any]) -> dict[str, Any]:
    (cond,) = response["status"]["conditions"]
    assert cond["type"] == "Validated"
    return cond


def rules(kind: str, *items: dict[str, Any]) -> dict[str, Any]:
    return {"networkPolicies": [{"type": kind, "rules": list(items)}]}


# (id, spec overrides, related runtimes, reason, fragment)
CASES: list[tuple[str, dict[str, Any], tuple[dict[str, Any], ...], str, str]] = [
    ("valid example", EXAMPLE["spec"], (PY,), "ValidationSucceeded", "valid and ready"),
    ("valid minimal", {}, (PY,), "ValidationSucceeded", "valid and ready"),
    ("valid custom with seccomp", {"securityLevel": "custom", "seccompProfile": "profiles/python-strict.json"}, (PY,), "ValidationSucceeded", "valid"),
    ("valid ingress cidr", rules("ingress", {"cidr": "203.0.113.0/24", "ports": [{"port": 8080}]}), (PY,), "ValidationSucceeded", "valid"),
    ("valid ipv6 egress", rules("egress", {"cidr": "2001:db8::/32", "ports": [{"port": 443, "protocol": "TCP"}]}), (PY,), "ValidationSucceeded", "valid"),
    ("valid one available among many", {}, (PY_DOWN, PY_NEW, PY, NODE), "ValidationSucceeded", "valid"),
    # Basic
    ("no language", {"language": None}, (PY,), "ValidationFailed", "spec.language"),
    ("language too long", {"language": "x" * 64}, (PY,), "ValidationFailed", "spec.language"),
    ("relative read-only path", {"filesystemConfig": {"readOnlyPaths": ["etc"]}}, (PY,), "ValidationFailed", "'etc' must be an absolute"),
    ("writable path listed twice", {"filesystemConfig": {"writablePaths": ["/tmp", "/tmp"]}}, (PY,), "ValidationFailed", "listed twice"),
    # Runtimes
    ("no runtime of the language", {"language": "ruby"}, (PY, NODE), "RuntimeValidationFailed", "no RuntimeEnvironment of language 'ruby'"),
    ("no runtimes at all", {}, (), "RuntimeValidationFailed", "no RuntimeEnvironment"),
    ("every runtime unavailable", {}, (PY_DOWN,), "RuntimeValidationFailed", "unavailable (python-3.12)"),
    ("invalid runtime does not count", {}, (runtime("python-bad", image=""),), "RuntimeValidationFailed", "no RuntimeEnvironment"),
    # Security
    ("unknown level", {"securityLevel": "paranoid"}, (PY,), "SecurityValidationFailed", "'paranoid'"),
    ("seccomp path escapes", {"seccompProfile": "../../etc/shadow"}, (PY,), "SecurityValidationFailed", "spec.seccompProfile"),
    ("seccomp absolute path", {"seccompProfile": "/var/lib/kubelet/seccomp/p.json"}, (PY,), "SecurityValidationFailed", "spec.seccompProfile"),
    ("seccomp empty", {"seccompProfile": ""}, (PY,), "SecurityValidationFailed", "spec.seccompProfile"),
    ("custom without seccomp", {"securityLevel": "custom"}, (PY,), "SecurityValidationFailed", "custom needs spec.seccompProfile"),
    ("writable inside read-only", {"filesystemConfig": {"readOnlyPaths": ["/opt"], "writablePaths": ["/opt/cache"]}}, (PY,),
     "SecurityValidationFailed", "'/opt/cache' overlaps read-only path '/opt'"),
    # Network
    ("invalid cidr", rules("egress", {"cidr": "300.1.2.0/24"}), (PY,), "NetworkValidationFailed", "not a valid CIDR"),
    ("cidr host bits", rules("egress", {"cidr": "203.0.113.7/24"}), (PY,), "NetworkValidationFailed", "has host bits set"),
    ("invalid domain", rules("egress", {"domain": "PyPI.org"}), (PY,), "NetworkValidationFailed", "not a valid domain"),
    ("port zero", rules("egress", {"domain": "pypi.org", "ports": [{"port": 0}]}), (PY,), "NetworkValidationFailed", "ports[0].port"),
    ("port too high", rules("egress", {"domain": "pypi.org", "ports": [{"port": 70000}]}), (PY,), "NetworkValidationFailed", "ports[0].port"),
    ("unknown protocol", rules("egress", {"domain": "pypi.org", "ports": [{"port": 443, "protocol": "SCTP"}]}), (PY,), "NetworkValidationFailed", "'SCTP'"),
    ("domain and cidr", rules("egress", {"domain": "pypi.org", "cidr": "203.0.113.0/24"}), (PY,), "NetworkValidationFailed", "exactly one of domain or cidr"),
    ("neither domain nor cidr", rules("egress", {"ports": [{"port": 443}]}), (PY,), "NetworkValidationFailed", "exactly one of domain or cidr"),
    ("unknown direction", {"networkPolicies": [{"type": "both", "rules": []}]}, (PY,), "NetworkValidationFailed", "'both'"),
    ("ingress by domain", rules("ingress", {"domain": "example.com"}), (PY,), "NetworkValidationFailed", "ingress rules need a cidr"),
    ("egress into private range", rules("egress", {"cidr": "10.20.0.0/16"}), (PY,), "NetworkValidationFailed", "10.20.0.0/16 lies in a private"),
    ("egress to metadata service", rules("egress", {"cidr": "169.254.169.254/32"}), (PY,), "NetworkValidationFailed", "169.254.169.254/32"),
    ("egress to loopback", rules("egress", {"cidr": "127.0.0.0/8"}), (PY,), "NetworkValidationFailed", "127.0.0.0/8"),
    ("ingress from private range", rules("ingress", {"cidr": "192.168.0.0/16"}), (PY,), "NetworkValidationFailed", "192.168.0.0/16"),
    ("ipv6 unique local", rules("egress", {"cidr": "fd00::/8"}), (PY,), "NetworkValidationFailed", "fd00::/8"),
    ("ipv4-mapped metadata", rules("egress", {"cidr": "::ffff:169.254.169.254/128"}), (PY,), "NetworkValidationFailed", "spells IPv4 addresses in IPv6"),
    ("nat64 prefix", rules("egress", {"cidr": "64:ff9b::/96"}), (PY,), "NetworkValidationFailed", "64:ff9b::/96 spells IPv4"),
    ("6to4 ingress", rules("ingress", {"cidr": "2002::/16"}), (PY,), "NetworkValidationFailed", "2002::/16"),
    # Resources
    ("cpu does not parse", {"resourceDefaults": {"cpu": "lots"}}, (PY,), "ResourceValidationFailed", "spec.resourceDefaults.cpu"),
    ("memory unit", {"resourceDefaults": {"memory": "2G"}}, (PY,), "ResourceValidationFailed", "spec.resourceDefaults.memory"),
    ("cpu zero", {"resourceDefaults": {"cpu": "0"}}, (PY,), "ResourceValidationFailed", "greater than zero"),
    ("ephemeral storage zero", {"resourceDefaults": {"ephemeralStorage": "0Gi"}}, (PY,), "ResourceValidationFailed", "greater than zero"),
    # Packages
    ("invalid package", {"preInstalledPackages": ["numpy", "$(curl evil)"]}, (PY,), "PackageValidationFailed", "$(curl evil)"),
    ("package listed twice", {"preInstalledPackages": ["numpy", "numpy"]}, (PY,), "PackageValidationFailed", "listed twice ['numpy']"),
    ("package not a string", {"preInstalledPackages": ["numpy", 7]}, (PY,), "PackageValidationFailed", "preInstalledPackages[1]"),
    # Order of the original loop: the first failing step decides.
    ("basic before runtime", {"language": None}, (), "ValidationFailed", "spec.language"),
    ("runtime before security", {"language": "ruby", "securityLevel": "custom"}, (PY,), "RuntimeValidationFailed", "ruby"),
    ("security before network", {"securityLevel": "custom", **rules("ingress", {"domain": "x.org"})}, (PY,), "SecurityValidationFailed", "custom"),
    ("network before resources", {"resourceDefaults": {"cpu": "0"}, **rules("egress", {"cidr": "10.0.0.0/8"})}, (PY,), "NetworkValidationFailed", "10.0.0.0/8"),
    ("resources before packages", {"resourceDefaults": {"cpu": "0"}, "preInstalledPackages": ["$x"]}, (PY,), "ResourceValidationFailed", "cpu"),
    ("pending runtime does not hide a failure", {"securityLevel": "custom"}, (PY_NEW,), "SecurityValidationFailed", "custom"),
]

PREFIX = {
    "ValidationFailed": "Profile validation failed: ",
    "RuntimeValidationFailed": "Profile is not compatible with any runtime: ",
    "SecurityValidationFailed": "Profile security validation failed: ",
    "NetworkValidationFailed": "Profile network policy validation failed: ",
    "ResourceValidationFailed": "Profile resource defaults validation failed: ",
    "PackageValidationFailed": "Profile package validation failed: ",
    "ValidationSucceeded": "Profile is valid and ready to use",
}


def _spec(overrides: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in {"language": "python", **overrides}.items() if v is not None}


@pytest.mark.parametrize("spec,runtimes,reason,fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_validation(spec: dict[str, Any], runtimes: tuple[dict[str, Any], ...], reason: str, fragment: str) -> None:
    out = profile_sync.sync(request(replace=_spec(spec), runtimes=runtimes), NOW)
    cond = condition(out)
    assert cond["reason"] == reason
    assert cond["message"].startswith(PREFIX[reason])
    assert fragment in cond["message"], cond["message"]
    ok = reason == "ValidationSucceeded"
    assert out["status"]["validated"] is ok
    assert cond["status"] == ("True" if ok else "False")
    assert out["children"] == []


def test_every_reason_is_covered() -> None:
    assert {c[3] for c in CASES} == set(PREFIX)


def test_language_reported() -> None:
    out = profile_sync.sync(request(replace={"language": "nodejs"}, runtimes=(NODE,)), NOW)
    assert out["status"]["language"] == "nodejs"
    assert "language" not in profile_sync.sync(request(replace={"securityLevel": "high"}), NOW)["status"]


def test_spec_not_an_object() -> None:
    out = profile_sync.sync(request(replace=["x"]), NOW)
    assert condition(out)["reason"] == "ValidationFailed"
    assert out["status"]["validated"] is False


def test_waiting_for_runtime_validation() -> None:
    out = profile_sync.sync(request(runtimes=(PY_NEW, PY_DOWN)), NOW)
    cond = condition(out)
    assert (cond["status"], cond["reason"]) == ("Unknown", "RuntimeValidationPending")
    # Neither valid nor invalid yet: the Sandbox hook neither refuses the profile nor trusts a verdict.
    assert "validated" not in out["status"]
    # Once the runtime is validated the profile follows.
    ready = copy.deepcopy(PY_NEW)
    ready["status"] = {"available": True}
    assert condition(profile_sync.sync(request(runtimes=(ready,)), NOW))["reason"] == "ValidationSucceeded"


def test_sandbox_hook_refuses_an_invalid_profile() -> None:
    """The contract with the Sandbox hook: status.validated false means ProfileInvalid."""
    out = profile_sync.sync(request({"securityLevel": "custom"}), NOW)
    obj = profile(validated=None, securityLevel="custom")
    obj["status"] = out["status"]
    spec = SandboxSpec.model_validate({"runtime": "python:3.11", "profileRef": {"name": "data-science"}})
    with pytest.raises(resolve.ResolutionError) as err:
        resolve.find_profile(spec, NS, [obj])
    assert err.value.reason == "ProfileInvalid" and "custom needs" in err.value.message


def test_customize_asks_for_every_runtime() -> None:
    req = {"controller": {}, "parent": profile()}
    assert profile_sync.customize(req) == {"relatedResources": [{"apiVersion": "llmsafespace.dev/v1", "resource": "runtimeenvironments"}]}
    with pytest.raises(BadRequest):
        profile_sync.customize({"parent": None})


def test_bad_request() -> None:
    with pytest.raises(BadRequest):
        profile_sync.sync({"parent": {"spec": {}}}, NOW)


# ---------------------------------------------------------------------------------------------
# Determinism


def test_same_request_same_bytes() -> None:
    for _, spec, runtimes, _, _ in CASES:
        req = request(replace=_spec(spec), runtimes=runtimes)
        assert jsonio.dumps(profile_sync.sync(req, NOW)) == jsonio.dumps(profile_sync.sync(copy.deepcopy(req), NOW))


def test_status_is_a_fixed_point() -> None:
    first = profile_sync.sync(request(EXAMPLE["spec"]), NOW)
    later = profile_sync.sync(request(EXAMPLE["spec"], status={**first["status"], "observedGeneration": 1}), NOW + timedelta(hours=1))
    assert later == first


def test_transition_time_moves_only_with_the_status() -> None:
    first = profile_sync.sync(request({"securityLevel": "custom"}), NOW)
    # Another failure, same status False: the transition time stays.
    other = profile_sync.sync(request({"preInstalledPackages": ["$x"]}, status=first["status"]), NOW + timedelta(hours=1))
    assert condition(other)["lastTransitionTime"] == condition(first)["lastTransitionTime"]
    assert condition(other)["reason"] == "PackageValidationFailed"
    fixed = profile_sync.sync(request({}, status=other["status"]), NOW + timedelta(hours=2))
    assert condition(fixed)["lastTransitionTime"] == "2026-11-22T14:00:00Z"


# ---------------------------------------------------------------------------------------------
# Goldens

GOLDEN: dict[str, Callable[[], dict[str, Any]]] = {
    "valid-example": lambda: request(EXAMPLE["spec"], runtimes=(PY, PY_DOWN, NODE)),
    "waiting-for-runtime": lambda: request(runtimes=(PY_NEW,)),
    "basic-invalid": lambda: request(replace={"language": "python", "filesystemConfig": {"readOnlyPaths": ["etc"]}}),
    "runtime-incompatible": lambda: request({"language": "ruby"}, runtimes=(PY, NODE)),
    "security-invalid": lambda: request({"securityLevel": "custom"}),
    "network-invalid": lambda: request({**rules("ingress", {"domain": "example.com"}, {"cidr": "10.0.0.0/8"})}),
    "resources-invalid": lambda: request({"resourceDefaults": {"cpu": "0", "memory": "2G"}}),
    "packages-invalid": lambda: request({"preInstalledPackages": ["numpy", "numpy", "rm -rf /"]}),
}


@pytest.mark.parametrize("case", sorted(GOLDEN))
def test_golden(case: str) -> None:
    req = GOLDEN[case]()
    check_golden(f"sandboxprofile/{case}.json", req, profile_sync.sync(req, NOW))
