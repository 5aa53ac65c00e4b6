"""The performance shortcuts give exactly the answers of the code they shortcut (bench/,
docs/benchmark.md): WarmPool's template check and its per-spec cache of sandbox verdicts, the
cached spec validation and sandbox resolution, the faster time format."""
from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from hooks import constants as C
from hooks import quantity as Q
from hooks import resolve as R
from hooks import warm
from hooks import warmpool_sync as W
from hooks.config import Config
from hooks.meta import fmt_time
from hooks.request import SyncRequest
from hooks.validators import SandboxSpec, SpecError, WarmPoolSpec, describe, parse_spec
from tests.factory import profile, runtime, sandbox, sync_request
from tests.sandbox_cases import SYNC_CASES
from tests.warm_factory import RTE, pool

POOL = pool(resources={"cpu": "500m", "memory": "512Mi"}, preloadScripts=[{"name": "warm", "script": "python -c 1"}])
SPEC = parse_spec(WarmPoolSpec, POOL)
TEMPLATE = W._template("python", "python-3.11", RTE["spec"]["image"], SPEC, True)


def variants() -> list[Any]:
    base = copy.deepcopy(TEMPLATE)
    out: list[Any] = [base, {**base, "assignment": None}, {**base, "assignment": {"sandboxName": "a", "sandboxUid": "u"}},
                      {**base, "assignment": {"sandboxName": "a"}}, {**base, "extra": 1}, {}, {"poolRef": None}]
    for key in base:
        out.append({k: v for k, v in base.items() if k != key})
        out.append({**base, key: None})
        out.append({**base, key: 7})
    out.append({**base, "resources": {**base["resources"], "cpu": "0.5"}})
    out.append({**base, "resources": {**base["resources"], "cpu": "bogus"}})
    out.append({**base, "preloadScripts": []})
    out.append({**base, "securityLevel": "high"})
    out.append({**base, "resources": {"cpu": "500m", "memory": "512Mi"}})  # defaulted ephemeralStorage
    return out


@pytest.mark.parametrize("observed", variants())
def test_template_check_agrees_with_matches(observed: Any) -> None:
    assert W._TemplateCheck(TEMPLATE).matches(observed) is W._matches(observed, TEMPLATE)


json_values = st.recursive(st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=6),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                           max_leaves=8)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(TEMPLATE) + ["assignment", "x"]), json_values, max_size=8))
def test_template_check_agrees_on_arbitrary_specs(observed: dict[str, Any]) -> None:
    assert W._TemplateCheck(TEMPLATE).matches(observed) is W._matches(observed, TEMPLATE)


@pytest.mark.parametrize("spec", [
    {"runtime": "python:3.11"}, {"runtime": "python:3.11", "resources": {"memory": "8Gi"}},
    {"runtime": "ruby:3"}, {"runtime": "python:3.11", "storage": {"persistent": True}}, {"runtime": 3}, None,
])
def test_cached_verdicts_equal_fresh_ones(spec: Any) -> None:
    offer = warm.make_offer("python", "python-3.11", SPEC)
    sb = sandbox("s")
    sb["spec"] = spec
    verdicts: dict[bytes, Any] = {}
    fresh = W._incompatible(sb, offer, [RTE], Config())
    assert W._incompatible_cached(verdicts, sb, offer, [RTE], Config()) == fresh
    assert W._incompatible_cached(verdicts, copy.deepcopy(sb), offer, [RTE], Config()) == fresh
    assert len(verdicts) == 1


# ---------------------------------------------------------------------------------------------
# Sandbox: observed claims without converting every child

from hooks import sandbox_sync as S  # noqa: E402

_kinds = st.sampled_from(["Pod", "Service", "PersistentVolumeClaim", None, 3])
_child = st.builds(
    lambda kind, name, ns, meta_ok: {**({"kind": kind} if kind is not None else {}), "apiVersion": "v1",
                                     "metadata": {"name": name, "namespace": ns} if meta_ok else "x", "status": {"a": 1}},
    _kinds, st.sampled_from(["a", "b", "c"]), st.sampled_from(["demo", "other"]), st.booleans())
_children = st.dictionaries(st.sampled_from(list(S.CHILD_KINDS) + ["Other.v1"]),
                            st.dictionaries(st.text(max_size=3), _child | st.integers(), max_size=4) | st.none(), max_size=6)


def _claims_as_before(children: Any) -> Any:
    # The old expression used c["kind"] (a KeyError, i.e. a 500, for a child without a kind, found
    # by tests/test_fuzz.py); a child without a kind is simply no claim.
    return [c for c in S.keep_observed(children) if c.get("kind") == "PersistentVolumeClaim"]


def _claims_now(children: Any) -> Any:
    return S._observed_claims(children)


@settings(max_examples=300, deadline=None)
@given(_children)
def test_observed_claims_equal_filtered_keep_observed(children: dict[str, Any]) -> None:
    assert _claims_now(children) == _claims_as_before(children)


def test_observed_claims_on_the_realistic_request() -> None:
    from bench.payloads import sandbox_running
    from tests.sandbox_cases import persistent_storage, lifetime_expired
    for request in (sandbox_running(), persistent_storage(), lifetime_expired()):
        assert _claims_now(request["children"]) == _claims_as_before(request["children"])
    assert C.GVK_PVC in S.CHILD_KINDS


# ---------------------------------------------------------------------------------------------
# meta.fmt_time: isoformat instead of strftime (issue 13, item 10)

_TZS = st.sampled_from([timezone.utc, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))])


def _fmt_time_as_before(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


@settings(max_examples=500, deadline=None)
@given(st.datetimes(timezones=_TZS) | st.sampled_from([
    datetime.min.replace(tzinfo=timezone.utc), datetime.max.replace(tzinfo=timezone.utc),
    datetime(999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc), datetime(1000, 1, 1, tzinfo=timezone.utc)]))
def test_fmt_time_writes_what_strftime_wrote(moment: datetime) -> None:
    try:
        before: Any = _fmt_time_as_before(moment)
    except (OverflowError, ValueError) as exc:  # astimezone past the calendar's ends
        before = type(exc)
    try:
        now: Any = fmt_time(moment)
    except (OverflowError, ValueError) as exc:
        now = type(exc)
    assert now == before


# ---------------------------------------------------------------------------------------------
# validators.parse_spec: each (model, spec JSON) validated once per worker


def _parse_fresh(model: Any, obj: dict[str, Any]) -> Any:
    try:
        return model.model_validate(obj["spec"])
    except ValidationError as exc:
        return SpecError(describe(exc))


def _parse_now(model: Any, obj: dict[str, Any]) -> Any:
    try:
        return parse_spec(model, obj)
    except SpecError as exc:
        return exc


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, SpecError) or isinstance(b, SpecError):
        return type(a) is type(b) and str(a) == str(b)
    return type(a) is type(b) and a == b


_sandbox_specs = st.fixed_dictionaries({}, optional={
    "runtime": st.sampled_from(["python:3.11", "", "x" * 300]) | json_values,
    "securityLevel": st.sampled_from(["standard", "high", "custom", "low"]) | json_values,
    "lifetimeSeconds": st.integers(-5, 10**6) | json_values,
    "resources": st.fixed_dictionaries({}, optional={"cpu": st.sampled_from(["1", "0", "bad", "500m"]), "memory": st.sampled_from(["1Gi", "x"])}),
    "networkAccess": st.fixed_dictionaries({}, optional={"egress": st.lists(st.fixed_dictionaries({}, optional={
        "domain": st.sampled_from(["pypi.org", "Bad_Domain", "*.x.io"]), "cidr": st.sampled_from(["8.8.8.0/24", "10.0.0.0/8", "nope"]),
        "ports": st.lists(st.fixed_dictionaries({"port": st.integers(0, 70000)}), max_size=2)}), max_size=3)}),
})


@settings(max_examples=300, deadline=None)
@given(_sandbox_specs, st.integers(1, 3))
def test_cached_parse_spec_equals_fresh_validation(spec: dict[str, Any], repeats: int) -> None:
    obj = {"spec": spec}
    fresh = _parse_fresh(SandboxSpec, obj)
    for _ in range(repeats):  # the first call fills the cache, the next ones read it
        assert _same(_parse_now(SandboxSpec, obj), fresh)


def test_parse_spec_outside_json_is_validated_uncached() -> None:
    """A spec orjson cannot write (an int beyond 64 bits) is still validated, with the same answer."""
    obj = {"spec": {"runtime": "python:3.11", "lifetimeSeconds": 2**70}}
    assert _same(_parse_now(SandboxSpec, obj), _parse_fresh(SandboxSpec, obj))
    big = {"spec": {"runtime": "python:3.11", "tags": ["x" * 100] * 300}}  # over SPEC_CACHE_MAX_BYTES
    assert _same(_parse_now(SandboxSpec, big), _parse_fresh(SandboxSpec, big))


# ---------------------------------------------------------------------------------------------
# resolve.resolve_sandbox: a sandbox's resolution, once per distinct input


def _resolution_as_before(request: dict[str, Any], retain: str) -> Any:
    """sandbox_sync._resolve's steps before the cache: validate, resolve the runtime and the profile, merge."""
    req = SyncRequest.of(request)
    try:
        spec = parse_spec(SandboxSpec, dict(req.parent))
        runtime_name, runtime = R._resolve_runtime(spec.runtime, req.related_of(C.GVK_RUNTIME))
        profile = R.find_profile(spec, req.namespace, req.related_of(C.GVK_PROFILE))
        return spec, R.merge(spec, runtime_name, runtime, profile, retain)
    except (SpecError, R.ResolutionError) as exc:
        return type(exc), str(exc), getattr(exc, "reason", None), getattr(exc, "waiting", None)


def _resolution_now(request: dict[str, Any], retain: str) -> Any:
    req = SyncRequest.of(request)
    try:
        got = R.resolve_sandbox(req.parent, req.namespace, req.related_of(C.GVK_RUNTIME), req.related_of(C.GVK_PROFILE), retain)
        return got.spec, got.eff
    except (SpecError, R.ResolutionError) as exc:
        return type(exc), str(exc), getattr(exc, "reason", None), getattr(exc, "waiting", None)


@pytest.mark.parametrize("case", sorted(SYNC_CASES))
@pytest.mark.parametrize("retain", ["", "retained"])
def test_cached_resolution_equals_fresh_one(case: str, retain: str) -> None:
    request = SYNC_CASES[case]()
    before = _resolution_as_before(request, retain)
    for _ in range(2):  # the first call fills the cache, the second reads it
        assert _resolution_now(request, retain) == before


@settings(max_examples=200, deadline=None)
@given(_sandbox_specs, st.sampled_from(["python:3.11", "python", "cobol:85"]), st.sampled_from([True, False, None, "x"]),
       st.booleans())
def test_cached_resolution_follows_runtimes_and_profiles(spec: dict[str, Any], runtime_ref: str, available: Any, with_profile: bool) -> None:
    """The key holds what resolution reads of the related objects: a runtime's availability, a profile's verdict."""
    rte = copy.deepcopy(RTE)
    if available is None:
        rte.pop("status", None)
    else:
        rte["status"] = {**rte.get("status", {}), "available": available}
    spec = {**spec, "runtime": runtime_ref}
    related = [rte]
    if with_profile:
        spec["profileRef"] = {"name": "strict"}
        related.append(profile("strict", validated=available if isinstance(available, bool) else None))
    request = sync_request(sandbox("s", spec=spec), related=related)
    before = _resolution_as_before(request, "")
    assert _resolution_now(request, "") == before
    assert _resolution_now(request, "") == before


# ---------------------------------------------------------------------------------------------
# quantity.parse_quantity: each short text parsed once per worker


@pytest.mark.parametrize("text", ["500m", "1", "1.5", "512Mi", "1Gi", "1e3", "1E", "1Ei", " 2 ", "0", "-1", "", "bad", "1e1000000", "x" * 65])
def test_cached_quantity_equals_fresh_parse(text: str) -> None:
    def outcome(parse: Any) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            return str(exc)
    fresh = outcome(Q._parse)
    for _ in range(2):
        assert outcome(Q.parse_quantity) == fresh


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["python:3.11", "python", "python-3.11", "cobol:85", "data-science", ""]),
       st.lists(st.tuples(st.sampled_from(["python-3.11", "python-3.12", "rt"]), st.sampled_from(["3.11", "3.12", "3.9"]),
                          st.sampled_from([True, False, None]), st.sampled_from([[], ["data-science"]])), max_size=4))
def test_cached_runtime_resolution_equals_fresh_one(reference: str, specs: list[Any]) -> None:
    runtimes = []
    for rte_name, version, available, tags in specs:
        rte = runtime(rte_name, version=version, tags=tags)
        if available is None:
            rte.pop("status", None)
        else:
            rte["status"] = {**rte.get("status", {}), "available": available}
        runtimes.append(rte)

    def outcome(resolve: Any) -> Any:
        try:
            return resolve(reference, runtimes)
        except R.ResolutionError as exc:
            return exc.reason, exc.message, exc.waiting
    fresh = outcome(R._resolve_runtime)
    for _ in range(2):
        assert outcome(R.resolve_runtime) == fresh


# ---------------------------------------------------------------------------------------------
# validators.validate_cached: objects a hook builds itself (offers, warm pod templates), validated once

_offer_values = st.fixed_dictionaries({"poolRef": st.fixed_dictionaries({"name": st.sampled_from(["p", ""])}) | json_values}, optional={
    "runtime": st.sampled_from(["python", ""]) | json_values,
    "securityLevel": st.sampled_from(["standard", "high", "bogus"]) | json_values,
    "resources": st.fixed_dictionaries({}, optional={"cpu": st.sampled_from(["1", "0", "bad"]), "memory": st.sampled_from(["1Gi", "x"])}),
    "envDigest": st.sampled_from(["sha256:" + "a" * 64, "nope"]) | json_values,
})


@settings(max_examples=200, deadline=None)
@given(_offer_values, st.integers(1, 3))
def test_validate_cached_equals_model_validate(value: dict[str, Any], repeats: int) -> None:
    from hooks.validators import WarmPodSpec, WarmPoolOfferSpec, validate_cached
    for model, val in ((WarmPoolOfferSpec, value), (WarmPodSpec, {**TEMPLATE, **{k: v for k, v in value.items() if k in TEMPLATE}})):
        try:
            fresh: Any = model.model_validate(val)
        except ValidationError as exc:
            fresh = exc
        for _ in range(repeats):  # the first call fills the cache, the next ones read it
            if isinstance(fresh, ValidationError):
                with pytest.raises(ValidationError) as raised:
                    validate_cached(model, val)
                assert str(raised.value) == str(fresh)
            else:
                assert validate_cached(model, val) == fresh
