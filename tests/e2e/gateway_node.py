"""The gateway on the real node (docs/e2e.md, "The gateway on the real node"): what its tests
(tests/e2e/test_e2e_gateway_realnode.py) and the benchmark's real-node section (bench/e2e.py)
share.

- `GatewayOnNode.start()` deploys it the way docs/gateway.md says: a signing key made by
  `python -m gateway keygen` and applied as its Secret, the hooks told to trust its public key
  (the suite's hook server runs on the host: a new one with LLMSS_GATEWAY_PUBLIC_KEYS, as the chart
  value runtimeAuth.gatewayPublicKeys would set it in a cluster), then `helm upgrade` with
  gateway.enabled, the image of `scripts/build-images gateway` (pull policy Never: nothing is
  pulled) and the gateway pod placed on the real node (its label as nodeSelector, its taint
  tolerated). `stop()` undoes all of it: the release as the suite installed it, a hook server
  without the key, the Secret deleted.
- The gateway pod calls the API server as `kubernetes.default` (10.96.0.1:443, its in-cluster
  configuration), but the suite's API server listens on 127.0.0.1 only and publishes no endpoints
  (`--endpoint-reconciler-type=none`). `ApiRelay` listens on the pod bridge's host address
  (10.252.0.1, the API server's port number) and forwards each connection to 127.0.0.1; an
  EndpointSlice of our own behind the `kubernetes` Service names it, so kube-proxy sends the pod
  there. TLS is end to end (the API server's certificate names 10.96.0.1).
- `namespace_user()`: what a user with only namespace-scoped rights holds: a ServiceAccount of one
  namespace bound to the built-in `edit` ClusterRole by a RoleBinding there, a token from the
  TokenRequest API, and a kubeconfig with nothing but that token."""
from __future__ import annotations

import base64
import hashlib
import json
import socket
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.e2e.container import IMAGES_DIR
from tests.e2e.controlplane import RELEASE_NAMESPACE, ROOT, ControlPlane, install_chart
from tests.e2e.kube import Kube
from tests.e2e.realnode import GATEWAY_IMAGE, LABEL_KEY, LABEL_VALUE, NODE_NAME, OPTIONAL_IMAGES, POD_GATEWAY, TAINT, RealNode, \
    stateless_enforcement

GATEWAY_ARCHIVE = OPTIONAL_IMAGES[GATEWAY_IMAGE]
GATEWAY_SELECTOR = "app.kubernetes.io/component=gateway"
SOURCE_LABEL = "dev.llmsafespace.gateway.source"  # scripts/build-images
RELAY_SLICE = "kubernetes-e2e-relay"
SLICE_MANAGER = "llmsafespace-e2e"


def source_digest(root: Path = ROOT) -> str:
    """What scripts/build-images labels the gateway image with (`--source-digest`): the sha256 of
    "<sha256>  <path>" lines of gateway/'s Python files and requirements.txt, sorted by path."""
    files = sorted(str(f.relative_to(root)) for f in (root / "gateway").rglob("*")
                   if f.is_file() and (f.suffix == ".py" or f.name == "requirements.txt") and "__pycache__" not in f.parts)
    lines = "".join(f"{hashlib.sha256((root / f).read_bytes()).hexdigest()}  {f}\n" for f in files)
    return "sha256:" + hashlib.sha256(lines.encode()).hexdigest()


def image_labels(archive: Path) -> dict[str, str]:
    """The labels of the one image of an OCI image layout tar (what scripts/build-images writes)."""
    with tarfile.open(archive) as tar:
        def blob(digest: str) -> Any:
            member = tar.extractfile(f"./blobs/{digest.replace(':', '/')}")
            assert member is not None
            return json.load(member)
        index_file = tar.extractfile("./index.json")
        assert index_file is not None
        manifest = blob(json.load(index_file)["manifests"][0]["digest"])
        return dict((blob(manifest["config"]["digest"]).get("config") or {}).get("Labels") or {})


def skip_reason(node: RealNode) -> Optional[str]:
    """Why the gateway cannot run on this real node, or None."""
    archive = IMAGES_DIR / GATEWAY_ARCHIVE
    build = f"scripts/build-images {IMAGES_DIR} gateway"
    if not archive.is_file():
        return f"no gateway image: {IMAGES_DIR} lacks {GATEWAY_ARCHIVE} ({build})"
    built_from = image_labels(archive).get(SOURCE_LABEL)
    if built_from != source_digest():
        return (f"{archive} was built from other gateway sources ({built_from or 'unlabelled'}) than this checkout's "
                f"({source_digest()}): rebuild it ({build})")
    why = node.has("kube-proxy")
    if why:
        return f"the gateway pod reaches the API server through the kubernetes Service: {why}"
    return None


# ---------------------------------------------------------------------------------------------
# The API server, for pods


class ApiRelay:
    """TCP from (host, port) to the API server on 127.0.0.1, one pair of threads per connection."""

    def __init__(self, cp: ControlPlane, host: str = POD_GATEWAY) -> None:
        self.target = ("127.0.0.1", int(cp.server.rsplit(":", 1)[1]))
        self.host = host
        self.port = 0
        self._listener: Optional[socket.socket] = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self.connections = 0

    def start(self) -> "ApiRelay":
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.host, self.target[1]))  # the API server's port number: what the Service's targetPort says
        except OSError:
            listener.bind((self.host, 0))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, name="e2e-api-relay", daemon=True).start()
        return self

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
                self.connections += 1
            ends = threading.Semaphore(0)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b, ends), daemon=True).start()
            threading.Thread(target=self._close, args=(client, upstream, ends), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, ends: threading.Semaphore) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)  # the other side sees the end (TLS close_notify has been relayed)
            except OSError:
                pass
            ends.release()

    def _close(self, client: socket.socket, upstream: socket.socket, ends: threading.Semaphore) -> None:
        ends.acquire()
        ends.acquire()
        with self._lock:
            for s in (client, upstream):
                self._sockets.discard(s)
                s.close()

    def stop(self) -> None:
        self._stopped.set()
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            for s in list(self._sockets):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self._sockets.clear()


def relay_slice(port: int) -> dict[str, Any]:
    """The `kubernetes` Service's endpoint as pods on the real node reach it: the relay."""
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": RELAY_SLICE, "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "kubernetes", "endpointslice.kubernetes.io/managed-by": SLICE_MANAGER}},
            "addressType": "IPv4", "endpoints": [{"addresses": [POD_GATEWAY], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}


# ---------------------------------------------------------------------------------------------
# Users


@dataclass(frozen=True)
class User:
    namespace: str
    name: str
    token: str
    kubeconfig: Path

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.name}"


def namespace_user(kube: Kube, namespace: str, name: str, directory: Path, seconds: int = 3600) -> User:
    """A ServiceAccount `name` in `namespace` with the `edit` ClusterRole there (a RoleBinding: no
    right anywhere else), its token from the TokenRequest API and a kubeconfig holding only it
    (default namespace: its own)."""
    kube.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}},
               {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": f"{name}-edit", "namespace": namespace},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]})
    answer = kube.send("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
                       {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": seconds}})
    token = answer["status"]["token"]
    assert kube.cp.pki is not None
    path = directory / f"kubeconfig-{namespace}-{name}"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": name,
        "clusters": [{"name": "e2e", "cluster": {"server": kube.cp.server, "certificate-authority": str(kube.cp.pki.ca_cert)}}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": "e2e", "user": name, "namespace": namespace}}],
    }))
    path.chmod(0o600)
    return User(namespace, name, token, path)


# ---------------------------------------------------------------------------------------------
# The gateway


class GatewayOnNode:
    def __init__(self, kube: Kube, node: RealNode, workdir: Path) -> None:
        self.kube, self.cp, self.node, self.workdir = kube, kube.cp, node, workdir
        self.relay = ApiRelay(self.cp)
        self.key: Optional[Ed25519PrivateKey] = None
        self.public_key = ""
        self.secret_name = ""
        self.pod: dict[str, Any] = {}
        # Under an enforcer that judges every packet alone (realnode.stateless_enforcement), the
        # gateway's own policy, whose ingress admits only its port, drops the answers to the
        # gateway's calls: it goes, the sandboxes' policies stay.
        self.stateless = stateless_enforcement() if node.has("kube-network-policies") is None else None
        self.started_at: dict[str, float] = {}
        self._hook_env: Optional[dict[str, str]] = None
        self._upgraded = False

    @property
    def url(self) -> str:
        return f"http://{self.pod['status']['podIP']}:8080"

    def chart_values(self) -> list[str]:
        repository, tag = GATEWAY_IMAGE.rsplit(":", 1)
        values = {
            "gateway.enabled": True, "runtimeAuth.gatewayPublicKeys": [self.public_key],
            "gateway.image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
            "gateway.replicaCount": 1, "gateway.gunicorn": {"workers": 1, "threads": 16},
            "gateway.nodeSelector": {LABEL_KEY: LABEL_VALUE}, "gateway.tolerations": [{**TAINT, "operator": "Equal"}],
            # The API server as the pod reaches it, after kube-proxy's DNAT: the relay's port.
            "gateway.networkPolicy.apiServerPorts": sorted({443, 6443, self.relay.port}),
            "gateway.networkPolicy.enabled": self.stateless is None,
            "gateway.resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
        }
        out: list[str] = []
        for key, value in values.items():
            out += ["--set-json", f"{key}={json.dumps(value)}"]
        return out

    def start(self) -> "GatewayOnNode":
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        t0 = time.monotonic()
        self.relay.start()
        self.kube.apply(relay_slice(self.relay.port))
        # The key, as docs/gateway.md makes it: the Secret on stdout, applied; its public key annotated.
        made = subprocess.run([sys.executable, "-m", "gateway", "keygen", "-n", RELEASE_NAMESPACE], capture_output=True, text=True,
                              cwd=ROOT, timeout=60, check=True)
        secret = json.loads(made.stdout)
        self.secret_name = secret["metadata"]["name"]
        self.public_key = secret["metadata"]["annotations"]["llmsafespace.dev/gateway-public-key"]
        assert self.public_key in made.stderr, made.stderr
        key = serialization.load_pem_private_key(base64.b64decode(secret["data"]["ed25519.pem"]), None)
        assert isinstance(key, Ed25519PrivateKey)
        self.key = key
        self.cp.kubectl("apply", "-f", "-", input=made.stdout)
        self.started_at["key"] = time.monotonic() - t0
        # Every pod created from now on trusts the key (the hooks' LLMSS_GATEWAY_PUBLIC_KEYS).
        self._switch_hooks({**self.cp.settings.hook_env, "LLMSS_GATEWAY_PUBLIC_KEYS": self.public_key}, self.chart_values())
        self._upgraded = True
        self.started_at["hooks+helm"] = time.monotonic() - t0
        self.pod = self.kube.wait("the gateway pod Ready on the real node", self._ready_pod, 120, interval=0.3, show=self._pods)
        self.started_at["ready"] = time.monotonic() - t0

    def _switch_hooks(self, env: dict[str, str], values: list[str]) -> None:
        """A hook server with `env` (ControlPlane.start_second_hook_server), the release upgraded
        to name it with `values`, then the old server stopped."""
        if self._hook_env is None:
            self._hook_env = dict(self.cp.settings.hook_env)
        self.cp.settings.hook_env = env
        old = self.cp.start_second_hook_server()
        try:
            install_chart(self.cp, *values, upgrade=True)
        finally:
            old.stop()

    def _pods(self) -> list[dict[str, Any]]:
        return self.kube.list("Pod", RELEASE_NAMESPACE, GATEWAY_SELECTOR)

    def _ready_pod(self) -> Optional[dict[str, Any]]:
        for pod in self._pods():
            status = pod.get("status") or {}
            ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
            if ready and pod["spec"].get("nodeName") == NODE_NAME and not pod["metadata"].get("deletionTimestamp"):
                return pod
        return None

    def summary(self) -> str:
        parts = ", ".join(f"{k} {v:.1f}s" for k, v in self.started_at.items())
        policy = f"; its NetworkPolicy off ({self.stateless})" if self.stateless else ""
        return (f"gateway {GATEWAY_IMAGE} at {self.url if self.pod else '?'} on {NODE_NAME}, API relay {POD_GATEWAY}:{self.relay.port}: "
                f"{parts}{policy}")

    def logs(self) -> str:
        if not self.pod:
            return ""
        out = self.cp.kubectl("logs", "-n", RELEASE_NAMESPACE, self.pod["metadata"]["name"], "--tail=50", check=False)
        return out.stdout + out.stderr

    def stop(self) -> None:
        """The release as the suite installed it, hooks without the key, Secret, slice and relay gone."""
        errors = []
        try:
            if self._hook_env is not None:
                env, self._hook_env = self._hook_env, None
                self._switch_hooks(env, [])
                self._upgraded = False
                self.kube.wait("the gateway pods gone", lambda: not self._pods(), 60, interval=0.3)
        except Exception as exc:  # noqa: BLE001 - the rest is undone regardless
            errors.append(f"restoring the release: {exc}")
        if self.secret_name:
            self.cp.kubectl("delete", "secret", self.secret_name, "-n", RELEASE_NAMESPACE, "--ignore-not-found", check=False)
        self.cp.kubectl("delete", "endpointslice", RELAY_SLICE, "-n", "default", "--ignore-not-found", check=False)
        self.relay.stop()
        if errors:
            raise RuntimeError("; ".join(errors))


__all__ = ["GatewayOnNode", "User", "namespace_user", "skip_reason", "ApiRelay", "GATEWAY_IMAGE"]
