"""The gateway's HTTP layer: authenticate, authorise, find the runtime, forward signed, stream back.

`/v1/namespaces/<ns>/sandboxes/<name>/<rest>` → the runtime's `/v1/<rest>` (gateway/operations.py
lists what is forwarded). Each call: the caller's bearer token is reviewed (TokenReview), the
permission checked (SubjectAccessReview on sandboxes/exec or sandboxes/files), the Sandbox read;
a suspended sandbox is resumed if the caller may patch it, and awaited with `?wait=true` (or
`?wait=<seconds>`, or the header X-LLMSS-Wait); then the call goes to the pod's runtime with a
fresh signature and the answer streams back unchanged, chunk by chunk: a slow reader slows the
runtime (TCP backpressure), nothing is buffered whole. Errors: `{"error": {"code", "message",
"sandbox": {phase, condition, reason, message}}}` (docs/gateway.md)."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
from typing import Any, Callable, Iterator, Mapping, Optional
from urllib.parse import urlencode

import urllib3
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from . import operations, signing
from .access import Access
from .config import Settings
from .kube import ApiError, Kube, load_configuration
from .observe import Metrics, configure_logging
from .sandboxes import Refusal, Sandboxes, Target, ended, is_serving, is_suspended, not_serving

NAMESPACE_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
PREFIX = "/v1/namespaces/<namespace>/sandboxes/<name>/"
CHUNK = 64 * 1024
SPOOL_IN_MEMORY = 1024 * 1024


def _json(body: Any, status: int, headers: Optional[Mapping[str, str]] = None) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json", headers=dict(headers or {}))


def _seconds(raw: Optional[str]) -> Optional[float]:
    if raw is None or raw == "":
        return None
    if raw.lower() in ("true", "yes"):
        return float("inf")
    if raw.lower() in ("false", "no", "0"):
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        raise Refusal(400, "bad_request", f"wait/timeout must be a number of seconds or true, got {raw[:40]!r}") from None
    if value != value or value < 0:
        raise Refusal(400, "bad_request", "wait/timeout must not be negative")
    return value


def create_app(env: Optional[Mapping[str, str]] = None, *, kube: Optional[Kube] = None,
               clock: Callable[[], float] = time.time, log_stream: Any = None) -> Flask:
    env = dict(os.environ if env is None else env)
    settings = Settings.from_env(env)
    signer = signing.Signer(signing.load_private_key(settings.signing_key_file))
    log = configure_logging(env, log_stream)
    kube = kube or Kube(load_configuration(settings.kubeconfig))
    metrics = Metrics()
    access = Access(kube, settings.auth_cache_seconds, settings.auth_cache_size, settings.token_audiences,
                    on_cache=lambda review, hit: metrics.reviews.labels(review, "hit" if hit else "miss").inc())
    sandboxes = Sandboxes(kube, settings.activity_interval_seconds, clock,
                          on_activity=lambda result: metrics.activity.labels(result).inc())
    pool = urllib3.PoolManager(num_pools=256, maxsize=8, block=False)
    app = Flask("llmsafespace-gateway", static_folder=None)
    app.extensions["llmsafespace-gateway"] = {"settings": settings, "access": access, "sandboxes": sandboxes,
                                              "metrics": metrics, "signer": signer}

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        return _json({"error": {"code": code, "message": exc.description or exc.name}}, exc.code or 500)

    @app.get("/healthz")
    def healthz() -> Response:
        return _json({"status": "ok"}, 200)

    @app.get("/readyz")
    def readyz() -> Response:
        return _json({"status": "ready"}, 200)

    @app.get("/metrics")
    def metrics_view() -> Response:
        return Response(metrics.render(), mimetype="text/plain; version=0.0.4")

    @app.route(PREFIX + "<path:rest>", methods=["GET", "POST", "PUT", "DELETE"])
    def forward(namespace: str, name: str, rest: str) -> Response:
        start = time.perf_counter()
        fields: dict[str, Any] = {"event": "gateway_call", "namespace": namespace[:63], "sandbox": name[:253],
                                  "method": request.method}
        op = operations.find(request.method, rest)
        fields["operation"] = op.name if op else "unknown"
        try:
            if op is None:
                raise Refusal(404, "unknown_operation", f"no such sandbox operation: {request.method} {rest[:100]}")
            if not NAMESPACE_RE.fullmatch(namespace) or not NAME_RE.fullmatch(name):
                raise Refusal(400, "bad_request", "namespace or sandbox name is not a valid Kubernetes name")
            response = handle(op, namespace, name, rest, fields, start)
        except Refusal as refusal:
            response = refused(refusal, fields, start)
        except ApiError as exc:
            log.error("API server error", extra={"fields": {**fields, "event": "api_error", "api_status": exc.status,
                                                            "api_reason": exc.reason}})
            response = refused(Refusal(503, "api_unavailable", f"the Kubernetes API server did not answer the gateway ({exc.status} {exc.reason})",
                                       retry_after=1), fields, start)
        return response

    def refused(refusal: Refusal, fields: dict[str, Any], start: float) -> Response:
        done(fields, refusal.status, refusal.code, start, 0)
        headers = {"Retry-After": str(refusal.retry_after)} if refusal.retry_after else None
        return _json(refusal.body(), refusal.status, headers)

    def done(fields: dict[str, Any], status: int, code: str, start: float, sent: int) -> None:
        elapsed = time.perf_counter() - start
        metrics.requests.labels(fields["operation"], str(status), code).inc()
        fields.update(status=status, duration_ms=round(elapsed * 1000, 3), bytes=sent)
        if code:
            fields["code"] = code
        level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
        log.log(level, "gateway call", extra={"fields": fields})

    def handle(op: operations.Operation, namespace: str, name: str, rest: str, fields: dict[str, Any],
               start: float) -> Response:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Refusal(401, "unauthenticated", "send your Kubernetes credentials: Authorization: Bearer <token>")
        identity = access.authenticate(token)
        if identity.user is None:
            raise Refusal(401, "unauthenticated", f"the token was not accepted: {identity.error}"[:300])
        user = identity.user
        fields["user"] = user.username[:256]
        allowed, reason = access.authorize(token, user, namespace, name, "sandboxes", op.subresource, op.verb)
        if not allowed:
            raise Refusal(403, "forbidden", f'user "{user.username}" cannot {op.verb} sandboxes/{op.subresource} '
                                            f'"{name}" in namespace "{namespace}"' + (f": {reason}" if reason else ""))
        wait = _seconds(request.args.get("wait") or request.headers.get("X-LLMSS-Wait")) or 0.0
        caller = _seconds(request.headers.get("X-LLMSS-Timeout"))
        wait = min(wait, settings.max_wait_seconds)
        if caller is not None:  # answer before the caller gives up, so it reads why
            wait = min(wait, max(0.0, caller - 1.0))
        sandbox = sandboxes.get(namespace, name)
        if not is_serving(sandbox):
            sandbox = become_serving(token, user, sandbox, wait, fields)
        target = sandboxes.target(sandbox)
        sandboxes.record_activity(sandbox)
        return proxy(op, target, rest, fields, start, namespace, name)

    def become_serving(token: str, user: Any, sandbox: dict[str, Any], wait: float, fields: dict[str, Any]) -> dict[str, Any]:
        meta = sandbox["metadata"]
        resuming = False
        if is_suspended(sandbox) and not ended(sandbox):
            may, _ = access.authorize(token, user, meta["namespace"], meta["name"], "sandboxes", "", "patch")
            if may:
                sandbox = sandboxes.resume(sandbox)
                metrics.resumes.labels("requested").inc()
                fields["resumed"] = resuming = True
        if wait > 0:
            sandbox = sandboxes.wait_serving(sandbox, wait)
        if not is_serving(sandbox):
            raise not_serving(sandbox, resuming)
        return sandbox

    def read_body() -> tuple[Any, int, str]:
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)
        digest, size = hashlib.sha256(), 0
        stream = request.stream
        while True:
            chunk = stream.read(CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if size > settings.max_body_bytes:
                spool.close()
                raise Refusal(413, "too_large", f"request body exceeds {settings.max_body_bytes} bytes")
            digest.update(chunk)
            spool.write(chunk)
        spool.seek(0)
        return spool, size, digest.hexdigest()

    def exec_timeout(spool: Any, size: int) -> float:
        """The execution's own timeout (default 60 s): how long a stream may stay silent."""
        if size > 1024 * 1024:
            return 60.0
        try:
            body = json.loads(spool.read() or b"{}")
        except ValueError:
            body = {}
        finally:
            spool.seek(0)
        value = body.get("timeout") if isinstance(body, dict) else None
        return float(value) if isinstance(value, (int, float)) and 0 < value <= 3600 else 60.0

    def proxy(op: operations.Operation, target: Target, rest: str, fields: dict[str, Any], start: float,
              namespace: str, name: str) -> Response:
        spool, size, digest = read_body()
        query = [(k, v) for k, v in request.args.items(multi=True) if k in operations.FORWARDED_QUERY]
        path = "/v1/" + rest + ("?" + urlencode(query) if query else "")
        read_timeout = settings.stream_grace_seconds + (exec_timeout(spool, size) if op.streams else 0)
        host = f"[{target.pod_ip}]" if ":" in target.pod_ip else target.pod_ip
        headers = {"Authorization": signer.header(target.pod_uid, request.method, path, digest, clock()),
                   "Content-Length": str(size)}
        if size:
            headers["Content-Type"] = request.content_type or "application/octet-stream"
        try:
            upstream = pool.urlopen(request.method, f"http://{host}:{settings.runtime_port}{path}", body=spool if size else None,
                                    headers=headers, preload_content=False, retries=False, redirect=False,
                                    timeout=urllib3.Timeout(connect=settings.connect_timeout_seconds, read=read_timeout))
        except urllib3.exceptions.HTTPError as exc:
            spool.close()
            metrics.upstream.labels("connect").inc()
            raise Refusal(502, "runtime_unreachable", f"the runtime of pod {target.pod_name} did not answer ({type(exc).__name__})",
                          {"namespace": namespace, "name": name, "pod": target.pod_name}) from None
        spool.close()
        if upstream.status == 401:  # the runtime does not trust our key: an operator's problem, say so
            upstream.release_conn()
            metrics.upstream.labels("rejected_signature").inc()
            raise Refusal(502, "runtime_rejected_gateway",
                          "the sandbox's runtime refused the gateway's signature: its LLMSS_GATEWAY_PUBLIC_KEYS "
                          "(chart value runtimeAuth.gatewayPublicKeys) must include the gateway's public key")
        metrics.latency.labels(op.name).observe(time.perf_counter() - start)
        fields["runtime_status"] = upstream.status

        def body() -> Iterator[bytes]:
            sent, outcome = 0, ""
            try:
                for chunk in _chunks(upstream):
                    sent += len(chunk)
                    yield chunk
            except urllib3.exceptions.HTTPError as exc:
                metrics.upstream.labels("read").inc()
                outcome = "runtime_stream_broken"
                fields["error"] = type(exc).__name__
                if op.streams:  # tell an NDJSON reader why its stream ends without an exit line
                    yield (json.dumps({"type": "error", "error": {"code": "runtime_unreachable",
                                                                  "message": "the runtime's stream broke off"}}) + "\n").encode()
            finally:
                upstream.release_conn()
                done(fields, upstream.status, outcome, start, sent)
                if op.streams:  # activity at the end too (a long run counts until it ends)
                    try:
                        sandboxes.record_activity(sandboxes.get(namespace, name))
                    except (Refusal, ApiError):
                        pass

        passthrough = {k: v for k, v in upstream.headers.items() if k.lower() in ("content-type", "content-length")}
        # What a sandbox sends is the sandbox's (its code can answer in the runtime's place): a
        # browser must never render it as a page of the gateway's origin.
        passthrough.update({"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"})
        if op.streams:
            passthrough.pop("Content-Length", None)
            passthrough["X-Accel-Buffering"] = "no"
        return Response(body(), status=upstream.status, headers=passthrough, direct_passthrough=True)

    return app


def _chunks(upstream: Any) -> Iterator[bytes]:
    """Bytes as the runtime sends them: each chunk of a chunked answer, else whatever has arrived."""
    if upstream.chunked:
        yield from upstream.read_chunked(decode_content=False)
        return
    while True:
        chunk = upstream.read1(CHUNK)
        if not chunk:
            return
        yield chunk
