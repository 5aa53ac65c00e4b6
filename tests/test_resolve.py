"""Table tests of hooks/resolve.py: which RuntimeEnvironment a sandbox gets, and how sandbox,
profile and runtime settings merge (precedence, forbidden weakening, runtime minimums)."""
from __future__ import annotations

from typing import Any, Optional

import pytest

from hooks import constants as C
from hooks.resolve import Effective, ResolutionError, Seccomp, find_profile, merge, resolve_runtime
from hooks.validators import RuntimeEnvironmentSpec, SandboxProfileSpec, SandboxSpec
from tests.factory import NS, profile, runtime

# ---------------------------------------------------------------------------------------------
# Runtime resolution

PY39 = runtime("python-3.9", "python", "3.9")
PY311 = runtime("python-3.11", "python", "3.11")
PY312_DOWN = runtime("python-3.12", "python", "3.12", available=False)
PY313_NEW = runtime("python-3.13", "python", "3.13", available=None)
NODE20 = runtime("node-20", "nodejs", "20")
BROKEN = runtime("python-broken", "python", "3.99", image="")  # invalid spec: never chosen


def _status_message(obj: dict[str, Any], message: str) -> dict[str, Any]:
    obj = dict(obj)
    obj["status"] = {**obj["status"], "conditions": [{"type": "Available", "status": "False", "reason": "ImageValidationFailed", "message": message}]}
    return obj


RESOLVE_OK: list[tuple[str, str, list[dict[str, Any]], str]] = [
    ("by name", "python-3.9", [PY39, PY311], "python-3.9"),
    ("by name beats language match", "python-3.9", [PY39, runtime("zzz", "python-3.9", "1")], "python-3.9"),
    ("language:version", "python:3.11", [PY39, PY311, NODE20], "python-3.11"),
    ("bare language, highest version", "python", [PY39, PY311], "python-3.11"),
    ("numeric version order (3.11 > 3.9)", "python", [PY311, PY39], "python-3.11"),
    ("available beats a higher unavailable version", "python", [PY311, PY312_DOWN], "python-3.11"),
    ("available beats a higher not-yet-validated version", "python", [PY311, PY313_NEW], "python-3.11"),
    ("same version: smallest name", "python:3.11",
     [runtime("python-b", "python", "3.11"), runtime("python-a", "python", "3.11")], "python-a"),
    ("same version, one available", "python:3.11",
     [runtime("python-a", "python", "3.11", available=False), runtime("python-b", "python", "3.11")], "python-b"),
    ("invalid runtime skipped", "python", [PY39, BROKEN], "python-3.9"),
    ("other language ignored", "nodejs", [PY311, NODE20], "node-20"),
    # Tags (issue 12, item 13): a reference that is no name and no language picks among the
    # runtimes tagged with it, by the same order.
    ("by tag", "data-science", [PY39, runtime("py-ds", "python", "3.12", tags=["data-science"])], "py-ds"),
    ("by tag, highest version", "ml", [runtime("ml-a", "python", "3.9", tags=["ml"]), runtime("ml-b", "python", "3.12", tags=["ml", "x"])], "ml-b"),
    ("language beats tag", "python", [PY39, runtime("r-4", "r", "4", tags=["python"])], "python-3.9"),
    ("name beats tag", "python-3.9", [PY39, runtime("tagged", "python", "3.13", tags=["python-3.9"])], "python-3.9"),
]


@pytest.mark.parametrize("reference,runtimes,expected", [c[1:] for c in RESOLVE_OK], ids=[c[0] for c in RESOLVE_OK])
def test_resolve_runtime(reference: str, runtimes: list[dict[str, Any]], expected: str) -> None:
    name, spec = resolve_runtime(reference, runtimes)
    assert name == expected
    assert isinstance(spec, RuntimeEnvironmentSpec)
    # Input order never matters.
    assert resolve_runtime(reference, list(reversed(runtimes)))[0] == expected


RESOLVE_ERR: list[tuple[str, str, list[dict[str, Any]], str, bool, str]] = [
    ("no runtimes", "python:3.11", [], "RuntimeNotFound", False, "no RuntimeEnvironment matches"),
    ("unknown version", "python:2.7", [PY39, PY311], "RuntimeNotFound", False, "python:2.7"),
    ("unknown language", "ruby", [PY39], "RuntimeNotFound", False, "ruby"),
    ("only candidate unavailable", "python:3.12", [PY312_DOWN], "RuntimeUnavailable", False, "python-3.12"),
    ("unavailable message carried", "python:3.12", [_status_message(PY312_DOWN, "registry not allowed")],
     "RuntimeUnavailable", False, "registry not allowed"),
    ("not validated yet: waiting", "python:3.13", [PY313_NEW], "RuntimeNotValidated", True, "not been validated"),
    ("by name, not validated", "python-3.13", [PY313_NEW, PY311], "RuntimeNotValidated", True, "python-3.13"),
    ("highest is pending, other unavailable", "python", [PY312_DOWN, PY313_NEW], "RuntimeNotValidated", True, "python-3.13"),
]


@pytest.mark.parametrize("reference,runtimes,reason,waiting,fragment", [c[1:] for c in RESOLVE_ERR], ids=[c[0] for c in RESOLVE_ERR])
def test_resolve_runtime_errors(reference: str, runtimes: list[dict[str, Any]], reason: str, waiting: bool, fragment: str) -> None:
    with pytest.raises(ResolutionError) as err:
        resolve_runtime(reference, runtimes)
    assert err.value.reason == reason
    assert err.value.waiting is waiting
    assert fragment in err.value.message


# ---------------------------------------------------------------------------------------------
# Profile lookup


def sb(**spec: Any) -> SandboxSpec:
    return SandboxSpec.model_validate({"runtime": "python:3.11", **spec})


def test_find_profile() -> None:
    assert find_profile(sb(), NS, [profile()]) is None
    found = find_profile(sb(profileRef={"name": "data-science"}), NS, [profile(), profile(namespace="other")])
    assert found is not None and found[0] == f"{NS}/data-science"
    other = find_profile(sb(profileRef={"name": "data-science", "namespace": "other"}), NS, [profile(), profile(namespace="other", securityLevel="high")])
    assert other is not None and other[0] == "other/data-science" and other[1].security_level == "high"


@pytest.mark.parametrize("profiles,reason", [
    ([], "ProfileNotFound"),
    ([profile(namespace="other")], "ProfileNotFound"),
    ([profile(validated=False)], "ProfileInvalid"),
    ([profile(securityLevel="paranoid")], "ProfileInvalid"),
])
def test_find_profile_errors(profiles: list[dict[str, Any]], reason: str) -> None:
    with pytest.raises(ResolutionError) as err:
        find_profile(sb(profileRef={"name": "data-science"}), NS, profiles)
    assert err.value.reason == reason and not err.value.waiting


# ---------------------------------------------------------------------------------------------
# Merging


def rt(**spec: Any) -> RuntimeEnvironmentSpec:
    return RuntimeEnvironmentSpec.model_validate({"image": "ghcr.io/x/python:3.11", "language": "python", "version": "3.11",
                                                  "securityFeatures": ["gvisor", "seccomp"], **spec})


def prof(**spec: Any) -> tuple[str, SandboxProfileSpec]:
    return f"{NS}/p", SandboxProfileSpec.model_validate({"language": "python", **spec})


def run(spec: Optional[dict[str, Any]] = None, profile_spec: Optional[dict[str, Any]] = None,
        runtime_spec: Optional[dict[str, Any]] = None, retain_class: str = "") -> Effective:
    return merge(sb(**(spec or {})), "python-3.11", rt(**(runtime_spec or {})),
                 prof(**profile_spec) if profile_spec is not None else None, retain_class)


def test_builtin_defaults() -> None:
    eff = run()
    assert (eff.security_level, eff.cpu, eff.memory, eff.ephemeral_storage) == ("standard", C.DEFAULT_CPU, C.DEFAULT_MEMORY, C.DEFAULT_EPHEMERAL_STORAGE)
    assert eff.writable_paths == tuple(sorted(C.DEFAULT_WRITABLE_PATHS))
    assert eff.seccomp == Seccomp(C.SECCOMP_RUNTIME_DEFAULT)
    assert eff.egress == () and eff.ingress_rules == () and eff.profile_name is None
    assert eff.image == "ghcr.io/x/python:3.11" and eff.runtime_name == "python-3.11"


PROFILE_FULL = {
    "securityLevel": "high",
    "seccompProfile": "profiles/python.json",
    "resourceDefaults": {"cpu": "1", "memory": "2Gi", "ephemeralStorage": "2Gi"},
    "filesystemConfig": {"writablePaths": ["/tmp", "/home/sandbox/.cache"], "readOnlyPaths": ["/etc"]},
    "networkPolicies": [
        {"type": "egress", "rules": [{"domain": "pypi.org", "ports": [{"port": 443}]}]},
        {"type": "ingress", "rules": [{"cidr": "203.0.113.0/24", "ports": [{"port": 8080}]}]},
    ],
}


def test_profile_defaults_applied() -> None:
    eff = run(profile_spec=PROFILE_FULL)
    assert eff.security_level == "high"
    assert (eff.cpu, eff.memory, eff.ephemeral_storage) == ("1", "2Gi", "2Gi")
    assert eff.writable_paths == ("/home/sandbox/.cache", "/tmp")
    assert eff.seccomp == Seccomp(C.SECCOMP_LOCALHOST, "profiles/python.json")
    assert [r.domain for r in eff.egress] == ["pypi.org"]
    assert [r.cidr for r in eff.ingress_rules] == ["203.0.113.0/24"]
    assert eff.profile_name == f"{NS}/p"


MERGE_OK: list[tuple[str, dict[str, Any], Optional[dict[str, Any]], dict[str, Any], dict[str, Any]]] = [
    # (id, sandbox spec, profile spec, runtime spec, expected Effective fields)
    ("sandbox resources win over profile", {"resources": {"cpu": "250m", "memory": "1Gi"}},
     {"resourceDefaults": {"cpu": "2", "memory": "4Gi"}}, {}, {"cpu": "250m", "memory": "1Gi"}),
    ("sandbox writable paths win", {"filesystem": {"writablePaths": ["/scratch"]}},
     {"filesystemConfig": {"writablePaths": ["/tmp"]}}, {}, {"writable_paths": ("/scratch",)}),
    ("sandbox may raise the level", {"securityLevel": "high"}, {"securityLevel": "standard"}, {}, {"security_level": "high"}),
    ("equal level is fine", {"securityLevel": "high"}, {"securityLevel": "high"}, {}, {"security_level": "high"}),
    ("sandbox repeats the profile's seccomp", {"securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}}},
     {"seccompProfile": "p.json"}, {}, {"seccomp": Seccomp("Localhost", "p.json")}),
    ("sandbox seccomp without profile seccomp", {"securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "mine.json"}}},
     {}, {}, {"seccomp": Seccomp("Localhost", "mine.json")}),
    ("egress rules added and de-duplicated",
     {"networkAccess": {"egress": [{"domain": "pypi.org", "ports": [{"port": 443}]}, {"cidr": "203.0.113.0/24"}]}},
     {"networkPolicies": [{"type": "egress", "rules": [{"domain": "pypi.org", "ports": [{"port": 443, "protocol": "TCP"}]}]}]},
     {}, {"egress_len": 2}),
    ("defaulted cpu below runtime minimum is raised", {}, None, {"resourceRequirements": {"minCpu": "1", "minMemory": "1Gi"}},
     {"cpu": "1", "memory": "1Gi"}),
    ("profile default below runtime minimum is raised", {}, {"resourceDefaults": {"cpu": "100m"}},
     {"resourceRequirements": {"minCpu": "200m"}}, {"cpu": "200m"}),
    ("explicit at the minimum is fine", {"resources": {"cpu": "200m"}}, None, {"resourceRequirements": {"minCpu": "0.2"}}, {"cpu": "200m"}),
    ("unparsable runtime minimum ignored", {}, None, {"resourceRequirements": {"minCpu": "lots"}}, {"cpu": C.DEFAULT_CPU}),
    ("custom with Localhost seccomp", {"securityLevel": "custom", "securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "c.json"}}},
     None, {}, {"security_level": "custom"}),
    ("custom through the profile's seccomp", {}, {"securityLevel": "custom", "seccompProfile": "c.json"}, {},
     {"security_level": "custom", "seccomp": Seccomp("Localhost", "c.json")}),
    ("Retain with the sandbox's class", {"storage": {"persistent": True, "retentionPolicy": "Retain", "storageClassName": "keep"}},
     None, {}, {"storage_class_name": "keep", "retention_policy": "Retain"}),
    ("Retain with the operator's class", {"storage": {"persistent": True, "retentionPolicy": "Retain"}},
     None, {}, {"storage_class_name": "retain-class", "retention_policy": "Retain"}),
    ("Retain without persistence needs no class", {"storage": {"retentionPolicy": "Retain"}}, None, {}, {"persistent": False}),
    ("public CIDR allowed", {"networkAccess": {"egress": [{"cidr": "0.0.0.0/0"}]}}, None, {}, {"egress_len": 1}),
    # The runtime's recommended resources are the defaults after the profile's (issue 12, item 13).
    ("runtime recommendation is the default", {}, None, {"resourceRequirements": {"recommendedCpu": "2", "recommendedMemory": "2Gi"}},
     {"cpu": "2", "memory": "2Gi"}),
    ("profile default beats the recommendation", {}, {"resourceDefaults": {"cpu": "750m"}},
     {"resourceRequirements": {"recommendedCpu": "2", "recommendedMemory": "2Gi"}}, {"cpu": "750m", "memory": "2Gi"}),
    ("sandbox beats the recommendation", {"resources": {"cpu": "250m"}}, None, {"resourceRequirements": {"recommendedCpu": "2"}}, {"cpu": "250m"}),
    ("recommendation makes pinning possible", {"resources": {"cpuPinning": True}}, None, {"resourceRequirements": {"recommendedCpu": "1"}},
     {"cpu": "1", "cpu_pinning": True}),
    ("high on a runtime that lists gvisor", {"securityLevel": "high"}, None, {"securityFeatures": ["gvisor"]}, {"security_level": "high"}),
]


@pytest.mark.parametrize("spec,profile_spec,runtime_spec,expected", [c[1:] for c in MERGE_OK], ids=[c[0] for c in MERGE_OK])
def test_merge(spec: dict[str, Any], profile_spec: Optional[dict[str, Any]], runtime_spec: dict[str, Any], expected: dict[str, Any]) -> None:
    eff = run(spec, profile_spec, runtime_spec, retain_class="retain-class")
    for field, value in expected.items():
        if field == "egress_len":
            assert len(eff.egress) == value
        else:
            assert getattr(eff, field) == value, field


MERGE_ERR: list[tuple[str, dict[str, Any], Optional[dict[str, Any]], dict[str, Any], str, str]] = [
    ("level lower than the profile's", {"securityLevel": "standard"}, {"securityLevel": "high"}, {}, "SecurityWeakening", "weaker"),
    ("custom is lower than high", {"securityLevel": "custom", "securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "c.json"}}},
     {"securityLevel": "high"}, {}, "SecurityWeakening", "weaker"),
    ("different seccomp than the profile's", {"securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "other.json"}}},
     {"seccompProfile": "p.json"}, {}, "SecurityWeakening", "p.json"),
    ("RuntimeDefault instead of the profile's seccomp", {"securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}},
     {"seccompProfile": "p.json"}, {}, "SecurityWeakening", "p.json"),
    ("writable path inside a read-only path", {"filesystem": {"writablePaths": ["/etc/app"]}},
     {"filesystemConfig": {"readOnlyPaths": ["/etc"]}}, {}, "SecurityWeakening", "/etc/app"),
    ("writable path equal to a read-only path", {"filesystem": {"writablePaths": ["/etc"]}},
     {"filesystemConfig": {"readOnlyPaths": ["/etc"]}}, {}, "SecurityWeakening", "/etc"),
    ("writable path around a read-only path", {"filesystem": {"writablePaths": ["/home"]}},
     {"filesystemConfig": {"readOnlyPaths": ["/home/sandbox/.ssh"]}}, {}, "SecurityWeakening", "/home"),
    ("profile's own writable default inside its read-only path", {},
     {"filesystemConfig": {"writablePaths": ["/opt/x"], "readOnlyPaths": ["/opt"]}}, {}, "SecurityWeakening", "/opt/x"),
    ("explicit cpu below runtime minimum", {"resources": {"cpu": "100m"}}, None, {"resourceRequirements": {"minCpu": "500m"}},
     "BelowRuntimeMinimum", "cpu 100m"),
    ("explicit memory below runtime minimum", {"resources": {"memory": "64Mi"}}, None, {"resourceRequirements": {"minMemory": "128Mi"}},
     "BelowRuntimeMinimum", "memory 64Mi"),
    ("custom without seccomp", {"securityLevel": "custom"}, None, {}, "InvalidSpec", "Localhost"),
    ("custom with RuntimeDefault", {"securityLevel": "custom", "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}},
     None, {}, "InvalidSpec", "Localhost"),
    ("custom from the profile without seccomp", {}, {"securityLevel": "custom"}, {}, "InvalidSpec", "Localhost"),
    ("Retain without storage class", {"storage": {"persistent": True, "retentionPolicy": "Retain"}}, None, {}, "InvalidSpec", "storageClassName"),
    ("egress into a private range", {"networkAccess": {"egress": [{"cidr": "10.1.0.0/16"}]}}, None, {}, "InvalidSpec", "10.1.0.0/16"),
    ("egress to link-local metadata", {"networkAccess": {"egress": [{"cidr": "169.254.169.254/32"}]}}, None, {}, "InvalidSpec", "169.254"),
    ("profile egress into a private range", {}, {"networkPolicies": [{"type": "egress", "rules": [{"cidr": "192.168.1.0/24"}]}]}, {},
     "InvalidSpec", "192.168.1.0/24"),
    ("profile ingress from a private range", {}, {"networkPolicies": [{"type": "ingress", "rules": [{"cidr": "10.0.0.0/8"}]}]}, {},
     "InvalidSpec", "10.0.0.0/8"),
    # IPv6 spellings of IPv4 addresses (issue 13, item 3): refused like their IPv4 forms.
    ("egress to metadata, IPv4-mapped", {"networkAccess": {"egress": [{"cidr": "::ffff:169.254.169.254/128"}]}}, None, {},
     "InvalidSpec", "::ffff:169.254.169.254/128 is not allowed: it spells IPv4"),
    ("egress to every IPv4-mapped address", {"networkAccess": {"egress": [{"cidr": "::ffff:0:0/96"}]}}, None, {}, "InvalidSpec", "::ffff:0:0/96"),
    ("egress through NAT64", {"networkAccess": {"egress": [{"cidr": "64:ff9b::/96"}]}}, None, {}, "InvalidSpec", "64:ff9b::/96"),
    ("egress to low special-purpose IPv6 holding the IPv4-mapped range", {"networkAccess": {"egress": [{"cidr": "::/64"}]}}, None, {},
     "InvalidSpec", "::/64 is not allowed: it holds IPv4-mapped addresses"),
    ("egress through 6to4", {"networkAccess": {"egress": [{"cidr": "2002::/16"}]}}, None, {}, "InvalidSpec", "2002::/16"),
    ("egress to IPv6 loopback", {"networkAccess": {"egress": [{"cidr": "::1/128"}]}}, None, {}, "InvalidSpec", "::1/128"),
    ("profile ingress from 6to4 private", {}, {"networkPolicies": [{"type": "ingress", "rules": [{"cidr": "2002:a00::/24"}]}]}, {},
     "InvalidSpec", "ingress from 2002:a00::/24 is not allowed"),
    ("profile egress through NAT64", {}, {"networkPolicies": [{"type": "egress", "rules": [{"cidr": "64:ff9b::a9fe:a9fe/128"}]}]}, {},
     "InvalidSpec", "64:ff9b::a9fe:a9fe/128"),
    ("profile ingress by domain", {}, {"networkPolicies": [{"type": "ingress", "rules": [{"domain": "example.com"}]}]}, {},
     "InvalidSpec", "example.com"),
    ("profile for another language", {}, {"language": "nodejs"}, {}, "ProfileLanguageMismatch", "nodejs"),
    # securityFeatures gate the levels (issue 12, item 13): high needs a runtime made for gVisor.
    ("high on a runtime without gvisor", {"securityLevel": "high"}, None, {"securityFeatures": ["seccomp"]},
     "RuntimeLacksSecurityFeature", "'gvisor'"),
    ("high from the profile on a runtime without features", {}, {"securityLevel": "high"}, {"securityFeatures": []},
     "RuntimeLacksSecurityFeature", "python-3.11"),
    ("pinning a fractional recommendation", {"resources": {"cpuPinning": True}}, None, {"resourceRequirements": {"recommendedCpu": "1500m"}},
     "InvalidSpec", "1500m (the runtime's recommendedCpu)"),
]


@pytest.mark.parametrize("spec,profile_spec,runtime_spec,reason,fragment", [c[1:] for c in MERGE_ERR], ids=[c[0] for c in MERGE_ERR])
def test_merge_errors(spec: dict[str, Any], profile_spec: Optional[dict[str, Any]], runtime_spec: dict[str, Any], reason: str, fragment: str) -> None:
    with pytest.raises(ResolutionError) as err:
        run(spec, profile_spec, runtime_spec)
    assert err.value.reason == reason
    assert fragment in err.value.message
    assert not err.value.waiting
