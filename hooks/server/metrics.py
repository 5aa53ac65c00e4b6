"""Prometheus metrics of the hook server, computed in the HTTP layer from each hook's request and
response: the hooks themselves stay pure.

Under gunicorn every worker is a process: values live in memory-mapped files under
PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode) and a scrape of any worker, or of
the master's METRICS_PORT server, adds them up. docs/observability.md lists every metric, what it
counts and what it cannot; the short version:

* request counts, latency and errors are exact per call;
* the domain counters count *changes between the parent's observed status and the status the
  hook answers* (a sandbox's phase, whether it started warm, a new validation failure, a new
  lastScaleTime), so they can be summed across workers without double counting the steady state.
  Metacontroller may call a hook again before its cache shows the last status it wrote; such a
  change is then counted twice. Use them for rates and ratios, not as an inventory;
* no label takes one value per object (Kubernetes' instrumentation guidance: no unbounded
  per-object labels). Series are never removed in multiprocess mode, so a label per pool or
  namespace grew /metrics without bound (1.4 MB after 3,000 pools); per-object state is in each
  object's status (kube-state-metrics can export it). Free-text labels (a condition's reason, an
  exception's class) keep at most MAX_LABEL_VALUES values per process, later ones count as OTHER.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any, NamedTuple, Optional

from prometheus_client import CollectorRegistry, Counter, Histogram

from .. import constants as C
from ..conditions import find_condition

PREFIX = "llmsafespace"
DEFAULT_PATH = "/metrics"
# Hook latency: Metacontroller's default webhook timeout is 10 s; most calls take well under 5 ms.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
OUTCOMES = ("ok", "bad_request", "error")
# The condition whose status False means "this object failed validation", per parent kind.
VALIDATION_CONDITION = {
    C.KIND_SANDBOX: "Validated",
    C.KIND_PROFILE: "Validated",
    C.KIND_RUNTIME: "Available",
    C.KIND_WARMPOOL: "Validated",
    C.KIND_WARMPOD: "Validated",
}
_PHASES = frozenset(C.SANDBOX_PHASES)
# Tenant namespaces (DecoratorController): the annotation the hook writes on the Namespace.
_HARDENING_STATUS = getattr(C, "ANNOTATION_HARDENING_STATUS", f"{C.GROUP}/hardening-status")
_HARDENING_WITH_ERRORS = getattr(C, "HARDENING_APPLIED_WITH_ERRORS", "AppliedWithErrors")
# Distinct values a free-text label keeps per process; any further value is counted as OTHER.
MAX_LABEL_VALUES = 20
OTHER = "Other"

log = logging.getLogger("llmsafespace.hooks")


def multiprocess_enabled() -> bool:
    """prometheus_client decides at import time, from PROMETHEUS_MULTIPROC_DIR."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir"))


class RouteMetrics(NamedTuple):
    """Label children bound once per route, so a request pays no label lookup."""

    ok: Any
    bad_request: Any
    error: Any
    duration: Any


class HookMetrics:
    """Every metric of the hook server. `registry` is None in multiprocess mode (values are read
    back from the shared directory at scrape time, never from a registry)."""

    def __init__(self, registry: Optional[CollectorRegistry]) -> None:
        r = registry
        self.requests = Counter(
            f"{PREFIX}_hook_requests_total", "Hook calls answered, by controller, hook and outcome (ok, bad_request = 4xx, error = 5xx).",
            ["controller", "hook", "outcome"], registry=r)
        self.duration = Histogram(
            f"{PREFIX}_hook_duration_seconds", "Time to answer a hook call: body read, JSON parse, hook, JSON serialisation.",
            ["controller", "hook"], buckets=DURATION_BUCKETS, registry=r)
        self.errors = Counter(
            f"{PREFIX}_reconciliation_errors_total",
            "Hook calls that produced no desired state: error_type is the exception class for 5xx, "
            "or BadRequest, InvalidJSON, NotAnObject, Unauthorized, RequestEntityTooLarge for 4xx.",
            ["controller", "hook", "error_type"], registry=r)
        self.phase_transitions = Counter(
            f"{PREFIX}_sandbox_phase_transitions_total",
            "Sandbox responses whose status.phase differs from the parent's observed status.phase (from_phase None: first phase).",
            ["from_phase", "to_phase"], registry=r)
        self.sandboxes_deleted = Counter(
            f"{PREFIX}_sandboxes_deleted_total", "Sandbox finalize responses that released the sandbox (finalized: true).",
            registry=r)
        self.warm_starts = Counter(
            f"{PREFIX}_warmpool_sandbox_starts_total",
            "Sandboxes that asked for a warm pod, counted once, when status.warmPodUsed is first set: result warm (a warm pod served it) "
            "or cold (fallback; reason from the WarmPod condition). Hit ratio: warm / (warm + cold).",
            ["result", "reason"], registry=r)
        self.scale_operations = Counter(
            f"{PREFIX}_warmpool_scale_operations_total",
            "WarmPool responses with a new status.lastScaleTime; direction compares desired and observed WarmPod children.",
            ["direction"], registry=r)
        self.validation_failures = Counter(
            f"{PREFIX}_validation_failures_total",
            "Objects that newly failed validation: a response whose validation condition (Validated; Available for "
            "RuntimeEnvironments) is False with a status or reason different from the parent's observed one; "
            "for tenant namespaces, hardening newly AppliedWithErrors.",
            ["controller", "condition", "reason"], registry=r)
        self._seen: dict[str, set[str]] = {}

    def capped(self, label: str, value: str) -> str:
        """`value`, or OTHER once MAX_LABEL_VALUES others were seen for this label."""
        seen = self._seen.setdefault(label, set())
        if value in seen:
            return value
        if len(seen) >= MAX_LABEL_VALUES:
            return OTHER
        seen.add(value)
        return value

    def error(self, controller: str, hook: str, error_type: str) -> None:
        self.errors.labels(controller, hook, self.capped("error_type", error_type)).inc()

    def for_route(self, controller: str, hook: str) -> RouteMetrics:
        return RouteMetrics(
            self.requests.labels(controller, hook, "ok"),
            self.requests.labels(controller, hook, "bad_request"),
            self.requests.labels(controller, hook, "error"),
            self.duration.labels(controller, hook),
        )

    # -----------------------------------------------------------------------------------------
    # Domain metrics from one successful call

    def observe_response(self, controller: str, payload: Mapping[str, Any], result: Mapping[str, Any]) -> None:
        """Never raises: a metric must not turn an answer into a 5xx."""
        try:
            self._observe(controller, payload, result)
        except Exception:  # pragma: no cover - defensive
            log.warning("metrics: could not observe a %s response", controller, exc_info=True)

    def _observe(self, controller: str, payload: Mapping[str, Any], result: Mapping[str, Any]) -> None:
        parent = payload.get("parent")
        if not isinstance(parent, Mapping):
            obj = payload.get("object")  # DecoratorController
            if isinstance(obj, Mapping):
                self._decorated(controller, obj, result)
            return
        status = result.get("status")
        if not isinstance(status, Mapping):
            return  # customize answers, finalize without status
        previous = parent.get("status")
        if not isinstance(previous, Mapping):
            previous = {}
        kind = parent.get("kind")
        if kind == C.KIND_SANDBOX:
            self._sandbox(previous, status, result)
        elif kind == C.KIND_WARMPOOL:
            self._warm_pool(previous, status, payload, result)
        condition = VALIDATION_CONDITION.get(kind)  # type: ignore[arg-type]
        if condition:
            self._validation(controller, condition, previous, status)

    def _sandbox(self, previous: Mapping[str, Any], status: Mapping[str, Any], result: Mapping[str, Any]) -> None:
        to_phase = status.get("phase")
        from_phase = previous.get("phase")
        if isinstance(to_phase, str) and to_phase != from_phase:
            self.phase_transitions.labels(_phase(from_phase), _phase(to_phase)).inc()
        if result.get("finalized") is True:
            self.sandboxes_deleted.inc()
        used = status.get("warmPodUsed")
        # Each start once: when the first decision is written. A warm-served sandbox whose warm pod
        # failed goes on cold (True -> False): a replacement, counted in status.restarts, not a start.
        if isinstance(used, bool) and not isinstance(previous.get("warmPodUsed"), bool):
            reason = _condition(status, "WarmPod").get("reason")
            self.warm_starts.labels("warm" if used else "cold", self.capped("reason", reason if isinstance(reason, str) else "")).inc()

    def _warm_pool(self, previous: Mapping[str, Any], status: Mapping[str, Any], payload: Mapping[str, Any],
                   result: Mapping[str, Any]) -> None:
        scaled = status.get("lastScaleTime")
        if isinstance(scaled, str) and scaled and scaled != previous.get("lastScaleTime"):
            observed = payload.get("children")
            observed_pods = observed.get(C.GVK_WARMPOD) if isinstance(observed, Mapping) else None
            have = len(observed_pods) if isinstance(observed_pods, Mapping) else 0
            children = result.get("children")
            want = sum(1 for c in children if isinstance(c, Mapping) and c.get("kind") == C.KIND_WARMPOD) if isinstance(children, list) else have
            self.scale_operations.labels("up" if want > have else "down" if want < have else "unchanged").inc()

    def _validation(self, controller: str, condition: str, previous: Mapping[str, Any], status: Mapping[str, Any]) -> None:
        now = _condition(status, condition)
        if now.get("status") != "False":
            return
        before = _condition(previous, condition)
        if before.get("status") == "False" and before.get("reason") == now.get("reason"):
            return
        reason = now.get("reason")
        self.validation_failures.labels(controller, condition, self.capped("reason", reason if isinstance(reason, str) else "")).inc()

    def _decorated(self, controller: str, obj: Mapping[str, Any], result: Mapping[str, Any]) -> None:
        """Tenant namespaces: hardening applied with errors (bad quota/limit annotations)."""
        wanted = result.get("annotations")
        if not isinstance(wanted, Mapping):
            return
        if wanted.get(_HARDENING_STATUS) != _HARDENING_WITH_ERRORS:
            return
        before = (obj.get("metadata") or {}).get("annotations") or {}
        if isinstance(before, Mapping) and before.get(_HARDENING_STATUS) == _HARDENING_WITH_ERRORS:
            return
        self.validation_failures.labels(controller, "Hardening", _HARDENING_WITH_ERRORS).inc()


def _condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    return find_condition(status, type_) or {}


def _phase(value: Any) -> str:
    if value is None or value == "":
        return "None"
    return value if value in _PHASES else OTHER


# ---------------------------------------------------------------------------------------------

_MULTIPROCESS_METRICS: Optional[HookMetrics] = None


def create(app: Any, path: str) -> HookMetrics:
    """The metrics of one Flask app, and `path` (empty: none) serving them on it.

    Multiprocess mode (PROMETHEUS_MULTIPROC_DIR set, as under gunicorn): one set of metric
    objects per process, whose values every scrape reads back from the shared directory.
    Otherwise each app gets its own registry (tests create many apps in one process)."""
    from prometheus_flask_exporter import PrometheusMetrics

    global _MULTIPROCESS_METRICS
    if multiprocess_enabled():
        from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics, GunicornPrometheusMetrics

        os.makedirs(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ["prometheus_multiproc_dir"], exist_ok=True)
        if _MULTIPROCESS_METRICS is None:
            _MULTIPROCESS_METRICS = HookMetrics(None)
        if path:
            GunicornInternalPrometheusMetrics(app, path=path, export_defaults=False)
        else:
            GunicornPrometheusMetrics(app, export_defaults=False)
        return _MULTIPROCESS_METRICS
    registry = CollectorRegistry()
    metrics = HookMetrics(registry)
    PrometheusMetrics(app, path=path or None, registry=registry, export_defaults=False)
    return metrics
