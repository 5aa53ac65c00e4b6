"""Reading and waiting on the real API server from the e2e tests: the Python client for reads
(fast, no process per call), kubectl for what users do (apply, delete, annotate)."""
from __future__ import annotations

import http.client
import json
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

import yaml

from tests.e2e.controlplane import ControlPlane

GROUP, VERSION = "llmsafespace.dev", "v1"
PLURALS = {"Sandbox": "sandboxes", "SandboxProfile": "sandboxprofiles", "RuntimeEnvironment": "runtimeenvironments",
           "WarmPool": "warmpools", "WarmPod": "warmpods", "WarmPoolOffer": "warmpooloffers"}


class Timeout(AssertionError):
    pass


@dataclass
class Kube:
    cp: ControlPlane
    tls: ssl.SSLContext = field(repr=False)
    _local: threading.local = field(default_factory=threading.local, repr=False)

    @classmethod
    def connect(cls, cp: ControlPlane) -> "Kube":
        return cls(cp, cp.tls())

    def send(self, method: str, path: str, body: Any) -> dict[str, Any]:
        """POST/PUT/PATCH a JSON body as the admin over this thread's kept-alive connection (as
        client-go does: a TLS handshake per write would make the benchmark's floor a floor of
        handshakes); raises on any error status."""
        content = "application/merge-patch+json" if method == "PATCH" else "application/json"
        payload = json.dumps(body).encode()
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request(method, path, body=payload, headers={"Content-Type": content, "Accept": "application/json"})
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException):
                self._local.conn = None  # closed by the server meanwhile: one fresh connection
                conn.close()
                if attempt == 2:
                    raise
                continue
            if response.status >= 300:
                raise RuntimeError(f"{method} {path}: {response.status} {data[:500]!r}")
            return json.loads(data)
        raise AssertionError("unreachable")

    def _connection(self) -> http.client.HTTPSConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            host, port = self.cp.server.removeprefix("https://").rsplit(":", 1)
            conn = self._local.conn = http.client.HTTPSConnection(host, int(port), context=self.tls, timeout=30)
        return conn

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        """POST one object (what `kubectl create` does, without a process per object)."""
        kind, ns = obj["kind"], obj["metadata"].get("namespace")
        path = _custom_path(kind, ns, None) if kind in PLURALS else _path(kind, ns, None)
        return self.send("POST", path, obj)

    def get(self, path: str, **query: str) -> Optional[dict[str, Any]]:
        """GET a path of the API server as the admin; None when it is not found."""
        url = self.cp.server + path + ("?" + urllib.parse.urlencode(query) if query else "")
        try:
            with urllib.request.urlopen(url, context=self.tls, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    # -- what users do ----------------------------------------------------------------------------
    def kubectl(self, *args: str, input: Optional[str] = None, check: bool = True, timeout: float = 60) -> str:
        return self.cp.kubectl(*args, input=input, check=check, timeout=timeout).stdout

    def apply(self, *objects: dict[str, Any], namespace: Optional[str] = None) -> None:
        ns = ["-n", namespace] if namespace else []
        self.kubectl("apply", *ns, "-f", "-", input=yaml.safe_dump_all(objects))

    def apply_file(self, path: str, namespace: Optional[str] = None) -> str:
        ns = ["-n", namespace] if namespace else []
        return self.kubectl("apply", *ns, "-f", path)

    # -- reads --------------------------------------------------------------------------------------
    def custom(self, kind: str, namespace: Optional[str], name: str) -> Optional[dict[str, Any]]:
        return self.get(_custom_path(kind, namespace, name))

    def customs(self, kind: str, namespace: Optional[str] = None, labels: str = "") -> list[dict[str, Any]]:
        data = self.get(_custom_path(kind, namespace, None), **({"labelSelector": labels} if labels else {}))
        return list((data or {}).get("items") or [])

    def core(self, kind: str, namespace: Optional[str], name: str) -> Optional[dict[str, Any]]:
        """A built-in object as the API server holds it, or None."""
        return self.get(_path(kind, namespace, name))

    def list(self, kind: str, namespace: Optional[str] = None, labels: str = "") -> list[dict[str, Any]]:
        data = self.get(_path(kind, namespace, None), **({"labelSelector": labels} if labels else {}))
        return list((data or {}).get("items") or [])

    def events(self, namespace: str) -> list[dict[str, Any]]:
        return self.list("Event", namespace)

    # -- waiting --------------------------------------------------------------------------------------
    def wait(self, what: str, check: Callable[[], Any], timeout: float = 60, interval: float = 0.1,
             show: Optional[Callable[[], Any]] = None) -> Any:
        """Poll `check` until truthy; on timeout fail with `what` and what `show` returns."""
        deadline = time.monotonic() + timeout
        while True:
            result = check()
            if result:
                return result
            if time.monotonic() > deadline:
                state = show() if show else None
                raise Timeout(f"timed out after {timeout:.0f}s waiting for {what}"
                              + (f"; now: {json.dumps(state, default=str)[:3000]}" if state is not None else ""))
            time.sleep(interval)

    def sandbox_phase(self, namespace: str, name: str) -> Optional[str]:
        sb = self.custom("Sandbox", namespace, name)
        return ((sb or {}).get("status") or {}).get("phase")

    def wait_sandbox(self, namespace: str, name: str, phase: str = "Running", ready: Optional[bool] = True,
                     timeout: float = 60) -> dict[str, Any]:
        """The Sandbox once its phase (and Ready condition, unless None) are as asked."""
        def check() -> Optional[dict[str, Any]]:
            sb = self.custom("Sandbox", namespace, name)
            status = (sb or {}).get("status") or {}
            if status.get("phase") != phase:
                return None
            if ready is not None and condition(sb, "Ready").get("status") != ("True" if ready else "False"):
                return None
            return sb
        return self.wait(f"sandbox {namespace}/{name} {phase}" + ("" if ready is None else f", ready={ready}"),
                         check, timeout, show=lambda: (self.custom("Sandbox", namespace, name) or {}).get("status"))

    def wait_gone(self, kind: str, namespace: Optional[str], name: str, timeout: float = 60) -> None:
        get = (lambda: self.custom(kind, namespace, name)) if kind in PLURALS else (lambda: self.core(kind, namespace or "", name))
        self.wait(f"{kind} {namespace}/{name} gone", lambda: get() is None, timeout, show=get)


def condition(obj: Optional[dict[str, Any]], type_: str) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return {}


_CORE = {"Pod": "pods", "Service": "services", "ServiceAccount": "serviceaccounts", "PersistentVolumeClaim":
         "persistentvolumeclaims", "Event": "events", "Namespace": "namespaces", "ResourceQuota": "resourcequotas",
         "LimitRange": "limitranges", "PersistentVolume": "persistentvolumes", "Secret": "secrets",
         "Endpoints": "endpoints", "Node": "nodes", "ConfigMap": "configmaps"}
_GROUPED = {"NetworkPolicy": "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies",
            "EndpointSlice": "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
            "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments",
            "CompositeController": "/apis/metacontroller.k8s.io/v1alpha1/compositecontrollers",
            "DecoratorController": "/apis/metacontroller.k8s.io/v1alpha1/decoratorcontrollers",
            "CustomResourceDefinition": "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            "ControllerRevision": "/apis/metacontroller.k8s.io/v1alpha1/namespaces/{ns}/controllerrevisions"}
_CLUSTER = {"Namespace", "PersistentVolume", "Node", "CompositeController", "DecoratorController", "CustomResourceDefinition"}


def _custom_path(kind: str, namespace: Optional[str], name: Optional[str]) -> str:
    base = f"/apis/{GROUP}/{VERSION}" + (f"/namespaces/{namespace}" if namespace else "") + f"/{PLURALS[kind]}"
    return f"{base}/{name}" if name else base


def _path(kind: str, namespace: Optional[str], name: Optional[str]) -> str:
    if kind in _GROUPED:
        base = _GROUPED[kind]
        if "{ns}" in base:
            base = base.format(ns=namespace) if namespace else base.replace("/namespaces/{ns}", "")
    elif kind in _CORE:
        plural = _CORE[kind]
        base = f"/api/v1/{plural}" if kind in _CLUSTER or not namespace else f"/api/v1/namespaces/{namespace}/{plural}"
    else:
        raise KeyError(f"add {kind} to tests/e2e/kube.py")
    return f"{base}/{name}" if name else base


def names(objects: Iterable[dict[str, Any]]) -> set[str]:
    return {o["metadata"]["name"] for o in objects}


DELETED_NAMESPACES: set[str] = set()


def delete_namespaces(kube: Kube, *names: str) -> None:
    """Delete in the background; what Metacontroller logs about them from now on is not blamed
    on later tests (conftest.check_clean)."""
    DELETED_NAMESPACES.update(names)
    kube.kubectl("delete", "namespace", *names, "--wait=false", "--ignore-not-found", check=False)
