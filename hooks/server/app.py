"""The HTTP layer: parse, call the pure hook with the clock and the configuration, serialise.

Served by gunicorn as `hooks.server.app:app`. Errors are JSON: 400 for requests that are not
Metacontroller requests, 401 without the configured bearer token, 404/405 for unknown routes,
408 for a request not received in time (hooks/server/gunicorn_worker.py), 413 for bodies over the
limit (with a Content-Length or chunked), 415 for a Content-Type other than application/json,
500 when a hook cannot compute an answer (Metacontroller then retries and changes nothing).
gunicorn's own errors (malformed request line or headers) are JSON too: hooks/server/gunicorn_worker.py.

Every hook call is measured (hooks/server/metrics.py: Prometheus, on METRICS_PATH and optionally on the
gunicorn master's METRICS_PORT) and logged as one JSON line on `llmsafespace.hooks`
(hooks/server/logging_setup.py); docs/observability.md describes both."""
from __future__ import annotations

import logging
import os
import sys
import threading
from contextlib import nullcontext
from datetime import datetime, timezone
from time import perf_counter
from collections.abc import Mapping
from typing import Any, Callable, NamedTuple, Optional

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from .. import constants as C
from . import auth, jsonio, logging_setup, wire
from . import metrics as hook_metrics
from ..config import Config, ServerSettings
from .routes import ROUTES, Route
from ..response import BadRequest

log = logging.getLogger(logging_setup.HOOK_LOGGER)
BENCH_ECHO_PATH = "/bench/echo"
JSON_TYPE = "application/json"


def _json(body: Any, status: int = 200) -> Response:
    return Response(jsonio.dumps(body), status=status, mimetype="application/json")


def _error(status: int, message: str) -> Response:
    return _json({"error": message, "status": status}, status)


def _is_json(mimetype: str, params: Mapping[str, str]) -> bool:
    """What Metacontroller sends (`application/json`); a charset, if any, is UTF-8 (RFC 8259)."""
    return mimetype == JSON_TYPE and params.get("charset", "utf-8").lower() in ("utf-8", "utf8")


def _body(limit: int) -> bytes:
    """The request body, at most `limit` bytes, else 413. With a Content-Length werkzeug refuses an
    oversized body before reading it; a chunked body (no length) is read one byte past the limit,
    where werkzeug would cut it at the limit and pass the truncated text on."""
    if request.content_length is not None or not request.environ.get("wsgi.input_terminated"):
        return request.get_data(cache=False)
    body = request.environ["wsgi.input"].read(limit + 1)
    if len(body) > limit:
        raise RequestEntityTooLarge()
    return body


def _echo(request: Mapping[str, Any], now: datetime, config: Config) -> Mapping[str, Any]:
    """An identity hook for bench/ (LLMSS_BENCH_ECHO=1 only): the HTTP layer's whole cost, no hook."""
    return request


def create_app(
    config: Optional[Config] = None,
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    env: Optional[dict[str, str]] = None,
    *,
    log_stream: Any = None,
    token_clock: Callable[[], float] = auth.monotonic,
) -> Flask:
    env = dict(os.environ if env is None else env)
    ServerSettings.from_env(env)  # config.ConfigError naming the variable (gunicorn checked it already)
    config = config or Config.from_env(env)
    logging_setup.configure(env, log_stream)  # before the token: a worker may log its rotation
    token = auth.from_env(env, token_clock)  # raises, naming the variable, when it yields no token
    app = Flask("llmsafespace-hooks", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = config.max_request_bytes
    metrics_path = env.get("METRICS_PATH", hook_metrics.DEFAULT_PATH).strip()
    metrics = hook_metrics.create(app, metrics_path)
    if token is not None and metrics_path:
        # Metrics on the hook port are for whoever holds the hook token (docs/observability.md).
        @app.before_request
        def metrics_need_the_token() -> Optional[Response]:
            if request.path == metrics_path and not token.accepts(request.headers.get("Authorization", "")):
                return _error(401, "missing or wrong bearer token")
            return None
    app.extensions["llmsafespace"] = {"config": config, "clock": clock, "metrics": metrics}

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        messages = {413: f"request body exceeds {app.config['MAX_CONTENT_LENGTH']} bytes"}
        return _error(exc.code or 500, messages.get(exc.code or 0, exc.description or exc.name))

    one_large_request = threading.Lock()

    def answer(route: Route) -> _Answer:
        if token is not None and not token.accepts(request.headers.get("Authorization", "")):
            return _refused(401, "missing or wrong bearer token", "Unauthorized")
        if not _is_json(request.mimetype, request.mimetype_params):
            return _refused(415, f"Content-Type must be {JSON_TYPE} (charset utf-8 if any), "
                                 f"got {request.content_type or 'none'!r}"[:300], "UnsupportedMediaType")
        try:
            body = _body(app.config["MAX_CONTENT_LENGTH"])
        except HTTPException as exc:  # 413: over LLMSS_MAX_REQUEST_BYTES; 408: not received in time
            response = http_error(exc)
            return _Answer(response, None, None, type(exc).__name__, exc.description or exc.name, None)
        values = jsonio.values_bound(body)
        if values > C.MAX_REQUEST_VALUES:  # parsing it could outgrow the worker's memory
            return _refused(413, f"request body holds more than {C.MAX_REQUEST_VALUES} JSON values", "TooManyValues")
        # One large request at a time per worker: its threads would otherwise multiply the peak.
        with one_large_request if values > C.LARGE_REQUEST_VALUES else nullcontext():
            return run(route, body)

    def run(route: Route, body: bytes) -> _Answer:
        try:
            payload = jsonio.loads(body)
        except ValueError as exc:
            return _refused(400, f"request body is not valid JSON: {exc}", "InvalidJSON")
        if not isinstance(payload, dict):
            return _refused(400, "request body must be a JSON object", "NotAnObject")
        malformed = wire.problem(payload)
        if malformed:  # not what Metacontroller sends: a 400 naming the place, never a 500 deep inside
            return _refused(400, malformed, "MalformedRequest", payload)
        try:
            result = route.function(payload, clock(), config)
        except BadRequest as exc:
            return _refused(400, str(exc), "BadRequest", payload)
        except Exception as exc:  # answer 5xx so Metacontroller retries and applies nothing
            message = f"{route.controller} {route.hook} hook failed; Metacontroller will retry"
            return _Answer(_error(500, message), payload, None, type(exc).__name__, str(exc), sys.exc_info())
        return _Answer(_json(result), payload, result, None, None, None)

    def handler(route: Route) -> Callable[[], Response]:
        bound = metrics.for_route(route.controller, route.hook)

        def handle() -> Response:
            start = perf_counter()
            done = answer(route)
            elapsed = perf_counter() - start
            code = done.response.status_code
            bound.duration.observe(elapsed)
            if done.error_type is None:
                bound.ok.inc()
                metrics.observe_response(route.controller, done.payload, done.result)
                level = logging.INFO
            else:
                (bound.error if code >= 500 else bound.bad_request).inc()
                metrics.error(route.controller, route.hook, done.error_type)
                level = logging.ERROR if code >= 500 else logging.WARNING
            if log.isEnabledFor(level):
                log.log(level, "hook call", exc_info=done.exc_info, extra={"fields": _log_fields(route, code, elapsed, done)})
            return done.response

        handle.__name__ = f"{route.controller}_{route.hook}"
        return handle

    routes = dict(ROUTES)
    if env.get("LLMSS_BENCH_ECHO") == "1":
        routes[BENCH_ECHO_PATH] = Route("bench", "echo", _echo)
    for path, route in routes.items():
        app.add_url_rule(path, view_func=handler(route), methods=["POST"])

    @app.get("/healthz")
    def healthz() -> Response:
        return _json({"status": "ok"})

    @app.get("/readyz")
    def readyz() -> Response:
        return _json({"status": "ready", "hooks": sorted(ROUTES)})

    return app


class _Answer(NamedTuple):
    response: Response
    payload: Any  # the parsed request, when it parsed
    result: Any  # the hook's answer, when it gave one
    error_type: Optional[str]  # None: answered 200
    error: Optional[str]  # what went wrong, for the log line
    exc_info: Any  # a hook's exception (5xx), for the traceback in the log line


def _refused(status: int, message: str, error_type: str, payload: Any = None) -> _Answer:
    return _Answer(_error(status, message), payload, None, error_type, message, None)


def _log_fields(route: Route, code: int, elapsed: float, done: _Answer) -> dict[str, Any]:
    """The log line of one hook call: who and what, never the request body."""
    payload, result = done.payload, done.result
    fields: dict[str, Any] = {
        "event": "hook_call",
        "controller": route.controller,
        "hook": route.hook,
        "outcome": "ok" if done.error_type is None else "error" if code >= 500 else "bad_request",
        "status": code,
        "duration_ms": round(elapsed * 1000, 3),
    }
    if isinstance(payload, Mapping):
        parent = payload.get("parent")
        if not isinstance(parent, Mapping):
            parent = payload.get("object")  # DecoratorController
        meta = parent.get("metadata") if isinstance(parent, Mapping) else None
        if isinstance(meta, Mapping):
            for key in ("namespace", "name", "generation"):
                if meta.get(key) is not None:
                    fields[key] = meta[key]
    if isinstance(result, Mapping):
        children = result.get("children")
        if not isinstance(children, list):
            children = result.get("attachments")
        if isinstance(children, list):
            fields["children"] = len(children)
        status = result.get("status")
        if isinstance(status, Mapping) and isinstance(status.get("phase"), str):
            fields["phase"] = status["phase"]
        for key, name in (("finalized", "finalized"), ("resyncAfterSeconds", "resync_after_s")):
            if key in result:
                fields[name] = result[key]
    if done.error_type is not None:
        fields["error_type"] = done.error_type
        fields["error"] = done.error if done.error is None or len(done.error) <= 300 else done.error[:300] + "..."
    return fields


app = create_app()
