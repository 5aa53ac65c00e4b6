"""The HTTP layer: parse, call the pure hook with the clock and the configuration, serialise.

Served by gunicorn as `hooks.app:app`. Errors are JSON: 400 for requests that are not
Metacontroller requests, 401 without the configured bearer token, 404/405 for unknown routes,
413 for bodies over the limit, 500 when a hook cannot compute an answer (Metacontroller then
retries and changes nothing)."""
from __future__ import annotations

import hmac
import logging
import os
from datetime import datetime, timezone
from typing import Any, Callable, Optional

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from . import jsonio, wire
from .config import Config
from .routes import ROUTES, Route
from .sandbox_sync import BadRequest

log = logging.getLogger("llmsafespace.hooks")
DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024


def _json(body: Any, status: int = 200) -> Response:
    return Response(jsonio.dumps(body), status=status, mimetype="application/json")


def _error(status: int, message: str) -> Response:
    return _json({"error": message, "status": status}, status)


def _token(env: dict[str, str]) -> Optional[str]:
    """The bearer token Metacontroller sends (webhook.authorization, Metacontroller >= 4.16)."""
    path = env.get("LLMSS_HOOK_TOKEN_FILE", "")
    if path:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip() or None
    return env.get("LLMSS_HOOK_TOKEN") or None


def create_app(
    config: Optional[Config] = None,
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    env: Optional[dict[str, str]] = None,
) -> Flask:
    env = dict(os.environ if env is None else env)
    config = config or Config.from_env(env)
    token = _token(env)
    app = Flask("llmsafespace-hooks", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = int(env.get("LLMSS_MAX_REQUEST_BYTES", DEFAULT_MAX_REQUEST_BYTES))
    app.extensions["llmsafespace"] = {"config": config, "clock": clock}

    def handler(path: str, route: Route) -> Callable[[], Response]:
        def handle() -> Response:
            if token is not None:
                sent = request.headers.get("Authorization", "")
                if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
                    return _error(401, "missing or wrong bearer token")
            body = request.get_data(cache=False)
            try:
                payload = jsonio.loads(body)
            except ValueError as exc:
                return _error(400, f"request body is not valid JSON: {exc}")
            if not isinstance(payload, dict):
                return _error(400, "request body must be a JSON object")
            malformed = wire.problem(payload)
            if malformed:  # not what Metacontroller sends: a 400 naming the place, never a 500 deep inside
                return _error(400, malformed)
            try:
                result = route.function(payload, clock(), config)
            except BadRequest as exc:
                return _error(400, str(exc))
            except Exception:  # answer 5xx so Metacontroller retries and applies nothing
                log.exception("hook %s failed", path)
                return _error(500, f"{route.controller} {route.hook} hook failed; Metacontroller will retry")
            return _json(result)

        handle.__name__ = f"{route.controller}_{route.hook}"
        return handle

    for path, route in ROUTES.items():
        app.add_url_rule(path, view_func=handler(path, route), methods=["POST"])

    @app.get("/healthz")
    def healthz() -> Response:
        return _json({"status": "ok"})

    @app.get("/readyz")
    def readyz() -> Response:
        return _json({"status": "ready", "hooks": sorted(ROUTES)})

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        messages = {413: f"request body exceeds {app.config['MAX_CONTENT_LENGTH']} bytes"}
        return _error(exc.code or 500, messages.get(exc.code or 0, exc.description or exc.name))

    return app


app = create_app()
