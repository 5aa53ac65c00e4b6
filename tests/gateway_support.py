"""What the gateway and SDK tests run against, all on 127.0.0.1 with free ports:

* FakeApiServer: a small werkzeug app in a thread answering what the gateway and the SDK ask of
  Kubernetes: TokenReview (a table of tokens), SubjectAccessReview (a table of grants), Sandboxes
  (get, list+watch, create, merge-patch with resourceVersion preconditions, delete) and Pods (get).
  It records every call, so tests count activity writes and check who made each call.
* the real runtime (`python -m runtime`) as a process: tests/runtime_util.py starts it as the
  conformance suite does (uid 1000 when the suite is root: the runtime refuses root)."""
from __future__ import annotations

import copy
import json
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

if TYPE_CHECKING:
    from conformance.launch import Launched

ROOT = Path(__file__).resolve().parent.parent
GATEWAY_SA_TOKEN = "gateway-sa-token"
GROUP_PATH = "/apis/llmsafespace.dev/v1/namespaces/"


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


@dataclass
class Grant:
    user: str
    namespace: str
    resource: str  # "sandboxes"
    subresource: str  # "exec", "files", "" (the sandbox itself)
    verbs: tuple[str, ...]


@dataclass
class FakeApiServer:
    users: dict[str, dict[str, Any]] = field(default_factory=dict)  # token -> TokenReview user, or {"error": ...}
    grants: list[Grant] = field(default_factory=list)
    sandboxes: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    pods: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    pod_uids: dict[tuple[str, str], str] = field(default_factory=dict)
    calls: list[tuple[str, str, str, Any]] = field(default_factory=list)  # (method, path, bearer, body)
    version: int = 100
    # Called with each created sandbox: tests make "the controllers" act (e.g. mark it Running).
    on_create: Any = None

    def __post_init__(self) -> None:
        self.lock = threading.Condition()
        self.server = make_server("127.0.0.1", 0, self.wsgi, threaded=True)
        self.port = self.server.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeApiServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        with self.lock:
            self.lock.notify_all()
        self.server.shutdown()

    # -- test-facing helpers ----------------------------------------------------------------

    def _bump(self, obj: dict[str, Any]) -> None:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)

    def put_sandbox(self, namespace: str, name: str, *, phase: str = "Running", ready: bool = True,
                    pod_ip: str = "127.0.0.1", mode: Optional[str] = None, reason: str = "PodReady",
                    message: str = "the pod is ready", annotations: Optional[dict[str, str]] = None) -> dict[str, Any]:
        with self.lock:
            uid = str(uuid.uuid4())
            sandbox = {"apiVersion": "llmsafespace.dev/v1", "kind": "Sandbox",
                       "metadata": {"name": name, "namespace": namespace, "uid": uid, "annotations": dict(annotations or {}),
                                    "creationTimestamp": "2026-12-07T00:00:00Z"},
                       "spec": {"runtime": "python"} | ({"operatingMode": mode} if mode else {}),
                       "status": {}}
            self._bump(sandbox)
            self.sandboxes[(namespace, name)] = sandbox
            self.set_state(namespace, name, phase=phase, ready=ready, pod_ip=pod_ip, reason=reason, message=message)
            return sandbox

    def set_state(self, namespace: str, name: str, *, phase: str, ready: bool, pod_ip: str = "127.0.0.1",
                  reason: str = "PodReady", message: str = "the pod is ready", suspended: Optional[str] = None) -> None:
        """What the controllers would write: the status, and the pod while one should exist."""
        with self.lock:
            sandbox = self.sandboxes[(namespace, name)]
            pod_name = f"{name}-pod"
            status: dict[str, Any] = {"phase": phase, "conditions": [
                {"type": "Ready", "status": "True" if ready else "False", "reason": reason, "message": message}]}
            if suspended:
                status["conditions"].append({"type": "Suspended", "status": "True", "reason": suspended, "message": "suspended"})
            if phase in ("Running", "Creating"):
                status.update(podName=pod_name, podNamespace=namespace)
                # A pod that comes back (resume) keeps its UID here: one runtime process stands for
                # "the sandbox's pod" in a test, and it answers to one UID.
                uid = self.pod_uids.setdefault((namespace, pod_name), str(uuid.uuid4()))
                pod = self.pods.get((namespace, pod_name)) or {
                    "metadata": {"name": pod_name, "namespace": namespace, "uid": uid,
                                 "labels": {"llmsafespace.dev/sandbox-uid": sandbox["metadata"]["uid"]}},
                    "status": {}}
                pod["status"] = {"phase": "Running", "podIP": pod_ip}
                self.pods[(namespace, pod_name)] = pod
            else:
                self.pods.pop((namespace, pod_name), None)
            sandbox["status"] = status
            self._bump(sandbox)
            self.lock.notify_all()

    def pod_uid(self, namespace: str, name: str) -> str:
        return self.pods[(namespace, f"{name}-pod")]["metadata"]["uid"]

    def patches(self, name: str) -> list[Any]:
        return [body for method, path, _, body in self.calls if method == "PATCH" and path.endswith(f"/sandboxes/{name}")]

    def reviews(self, kind: str) -> int:
        return sum(1 for _, path, _, _ in self.calls if path.endswith(kind))

    # -- the API -----------------------------------------------------------------------------

    def wsgi(self, environ: Any, start_response: Any) -> Any:
        return self.app(Request(environ))(environ, start_response)

    def app(self, req: Request) -> Response:
        bearer = req.headers.get("Authorization", "").removeprefix("Bearer ")
        raw = req.get_data()
        try:  # whatever the Content-Type (the kubernetes client sends merge patches as such)
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self.lock:
            self.calls.append((req.method, req.path, bearer, body))
        path = req.path
        if path == "/apis/authentication.k8s.io/v1/tokenreviews":
            return self.token_review(body)
        if path == "/apis/authorization.k8s.io/v1/subjectaccessreviews":
            return self.access_review(body)
        if path.startswith(GROUP_PATH):
            parts = path[len(GROUP_PATH):].split("/")
            if len(parts) == 2 and parts[1] == "sandboxes":
                if req.args.get("watch", "").lower() == "true":
                    return self.watch(parts[0], req.args)
                if req.method == "POST":
                    return self.create(parts[0], body)
            if len(parts) == 3 and parts[1] == "sandboxes":
                return self.sandbox(req.method, parts[0], parts[2], body)
        if path.startswith("/api/v1/namespaces/") and "/pods/" in path:
            ns, pod = path[len("/api/v1/namespaces/"):].split("/pods/")
            with self.lock:
                found = self.pods.get((ns, pod))
            return _reply(found, 200) if found else _status(404, "NotFound", f'pods "{pod}" not found')
        return _status(404, "NotFound", path)

    def token_review(self, body: dict[str, Any]) -> Response:
        token = body["spec"]["token"]
        user = self.users.get(token)
        if user is None or "error" in (user or {}):
            status = {"authenticated": False, "error": (user or {}).get("error", "invalid bearer token")}
        else:
            status = {"authenticated": True, "user": user, "audiences": body["spec"].get("audiences") or ["https://kubernetes.default.svc"]}
        return _reply({**body, "status": status}, 201)

    def access_review(self, body: dict[str, Any]) -> Response:
        spec, attrs = body["spec"], body["spec"]["resourceAttributes"]
        allowed = any(g.user == spec["user"] and g.namespace == attrs["namespace"] and g.resource == attrs["resource"]
                      and g.subresource == attrs.get("subresource", "") and attrs["verb"] in g.verbs
                      and attrs["group"] == "llmsafespace.dev" for g in self.grants)
        return _reply({**body, "status": {"allowed": allowed, **({} if allowed else {"reason": "no RBAC rule"})}}, 201)

    def create(self, namespace: str, body: dict[str, Any]) -> Response:
        with self.lock:
            name = body["metadata"].get("name") or body["metadata"]["generateName"] + uuid.uuid4().hex[:5]
            if (namespace, name) in self.sandboxes:
                return _status(409, "AlreadyExists", f'sandboxes "{name}" already exists')
            sandbox = copy.deepcopy(body)
            sandbox["metadata"].update(name=name, namespace=namespace, uid=str(uuid.uuid4()))
            sandbox.setdefault("status", {})
            self._bump(sandbox)
            self.sandboxes[(namespace, name)] = sandbox
            self.lock.notify_all()
            created = copy.deepcopy(sandbox)
        if self.on_create:
            threading.Thread(target=self.on_create, args=(namespace, name), daemon=True).start()
        return _reply(created, 201)

    def sandbox(self, method: str, namespace: str, name: str, body: Any) -> Response:
        with self.lock:
            sandbox = self.sandboxes.get((namespace, name))
            if sandbox is None:
                return _status(404, "NotFound", f'sandboxes.llmsafespace.dev "{name}" not found')
            if method == "GET":
                return _reply(sandbox, 200)
            if method == "DELETE":
                del self.sandboxes[(namespace, name)]
                self.version += 1
                self.deleted = getattr(self, "deleted", []) + [(namespace, name, str(self.version), sandbox)]
                self.lock.notify_all()
                return _reply(sandbox, 200)
            if method == "PATCH":
                wanted = ((body or {}).get("metadata") or {}).get("resourceVersion")
                if wanted is not None and wanted != sandbox["metadata"]["resourceVersion"]:
                    return _status(409, "Conflict", "the object has been modified")
                updated = merge_patch(sandbox, body)
                updated["metadata"]["uid"] = sandbox["metadata"]["uid"]
                self._bump(updated)
                self.sandboxes[(namespace, name)] = updated
                self.lock.notify_all()
                return _reply(updated, 200)
        return _status(405, "MethodNotAllowed", method)

    def watch(self, namespace: str, args: Any) -> Response:
        name = args.get("fieldSelector", "").removeprefix("metadata.name=")
        since = int(args.get("resourceVersion") or 0)
        deadline = time.monotonic() + float(args.get("timeoutSeconds") or 30)

        def events() -> Any:
            seen = since
            while time.monotonic() < deadline:
                with self.lock:
                    sandbox = self.sandboxes.get((namespace, name))
                    gone = [d for d in getattr(self, "deleted", []) if d[:2] == (namespace, name) and int(d[2]) > seen]
                    if gone:
                        yield (json.dumps({"type": "DELETED", "object": gone[-1][3]}) + "\n").encode()
                        return
                    if sandbox and int(sandbox["metadata"]["resourceVersion"]) > seen:
                        seen = int(sandbox["metadata"]["resourceVersion"])
                        event = {"type": "MODIFIED", "object": copy.deepcopy(sandbox)}
                    else:
                        event = None
                        self.lock.wait(min(0.5, max(0.01, deadline - time.monotonic())))
                if event:
                    yield (json.dumps(event) + "\n").encode()

        return Response(events(), 200, mimetype="application/json")


def _reply(obj: Any, status: int) -> Response:
    return Response(json.dumps(obj), status, mimetype="application/json")


def _status(code: int, reason: str, message: str) -> Response:
    return _reply({"kind": "Status", "status": "Failure", "code": code, "reason": reason, "message": message}, code)


# -- processes ---------------------------------------------------------------------------------

def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen[Any], seconds: float = 60.0) -> None:
    import urllib.request

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {seconds} s")


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def start_runtime(public_key: str, pod_uid: str) -> "Launched":
    """The real runtime (`python -m runtime`) as conformance/launch.py starts it (uid 1000 when we
    are root, fresh writable paths), trusting the gateway's key and answering to `pod_uid`."""
    from tests.runtime_util import start

    return start(env={"LLMSS_GATEWAY_PUBLIC_KEYS": public_key, "LLMSS_POD_UID": pod_uid})
