"""Where the SDK talks to: the Kubernetes API server (create, watch, patch, delete Sandboxes, with
the kubernetes client's own credential handling: kubeconfig tokens, exec plugins, OIDC,
in-cluster ServiceAccounts) and the gateway (run code, sessions, files), which takes the same
bearer token and checks it with the API server (docs/gateway.md)."""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable, Iterator, Optional, TypeVar, Union

import requests
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from ._core import (GROUP, PLURAL, VERSION, Call, Event, Events, Kube, Lines, Pause, Plan, Runner, Step, Watch, answer_error,
                    gateway_request, kube_error, read_answer, stream_broken, unreachable)
from .errors import SandboxError, Unauthenticated

T = TypeVar("T")
ENV_GATEWAY_URL = "LLMSS_GATEWAY_URL"
ENV_GATEWAY_CA = "LLMSS_GATEWAY_CA_FILE"
IN_CLUSTER_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def _in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and not os.environ.get("KUBECONFIG") \
        and not os.path.exists(os.path.expanduser("~/.kube/config"))


class Connection:
    """Credentials, default namespace and the gateway, shared by every Sandbox made with it.

    gateway_url: the gateway's base URL (env LLMSS_GATEWAY_URL), e.g. https://sandboxes.example.com.
    kubeconfig / context: which kubeconfig and context (default: KUBECONFIG, ~/.kube/config; in a
    pod without either: the pod's ServiceAccount). namespace: default namespace of sandboxes (else
    the context's, else the pod's, else "default"). gateway_ca: a CA bundle for an https gateway
    (env LLMSS_GATEWAY_CA_FILE); default: the system's roots."""

    def __init__(self, gateway_url: Optional[str] = None, *, kubeconfig: Optional[str] = None, context: Optional[str] = None,
                 namespace: Optional[str] = None, configuration: Optional[k8s_client.Configuration] = None,
                 gateway_ca: Optional[str] = None) -> None:
        url = gateway_url or os.environ.get(ENV_GATEWAY_URL, "")
        if not url:
            raise SandboxError(f"no gateway URL: pass gateway_url= or set {ENV_GATEWAY_URL} (docs/gateway.md)", code="no_gateway")
        self.gateway_url = url.rstrip("/")
        self.configuration, default_namespace = self._load(configuration, kubeconfig, context)
        self.namespace = namespace or default_namespace
        self.api_client = k8s_client.ApiClient(self.configuration)
        self.objects = k8s_client.CustomObjectsApi(self.api_client)
        self.http = requests.Session()
        ca = gateway_ca or os.environ.get(ENV_GATEWAY_CA)
        self.verify: Union[bool, str] = ca if ca else True

    @staticmethod
    def _load(configuration: Optional[k8s_client.Configuration], kubeconfig: Optional[str],
              context: Optional[str]) -> tuple[k8s_client.Configuration, str]:
        if configuration is not None:
            return configuration, "default"
        configuration = k8s_client.Configuration()
        if kubeconfig is None and context is None and _in_cluster():
            k8s_config.load_incluster_config(client_configuration=configuration)
            try:
                with open(IN_CLUSTER_NAMESPACE, encoding="utf-8") as fh:
                    return configuration, fh.read().strip() or "default"
            except OSError:
                return configuration, "default"
        # KUBECONFIG as it is now (the kubernetes package reads it once, at import)
        kubeconfig = kubeconfig or os.environ.get("KUBECONFIG") or None
        k8s_config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
        _, active = k8s_config.list_kube_config_contexts(config_file=kubeconfig)
        chosen = active
        if context:
            contexts, _ = k8s_config.list_kube_config_contexts(config_file=kubeconfig)
            chosen = next((c for c in contexts if c.get("name") == context), active)
        return configuration, ((chosen or {}).get("context") or {}).get("namespace") or "default"

    # -- credentials ----------------------------------------------------------------------------

    def bearer(self) -> str:
        """`Bearer <token>` of the kubeconfig user (refreshed by exec plugins and in-cluster token
        rotation through the kubernetes client's hook). The gateway accepts nothing else."""
        # auth_settings() runs the client's refresh hook (exec plugins, the in-cluster token file)
        value = str((self.configuration.auth_settings().get("BearerToken") or {}).get("value") or "")
        if not value.lower().startswith("bearer ") or not value[7:].strip():
            raise Unauthenticated("the kubeconfig's user has no bearer token (a client certificate cannot be forwarded "
                                  "to the gateway): use a token, an exec plugin or OIDC (docs/gateway.md)", code="no_token")
        return value

    # -- the API server: Sandbox objects ---------------------------------------------------------

    def create_sandbox(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._kube(lambda: self.objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body), namespace, "")

    def get_sandbox(self, namespace: str, name: str) -> dict[str, Any]:
        return self._kube(lambda: self.objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name), namespace, name)

    def patch_sandbox(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self._kube(lambda: self.objects.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, patch),
                          namespace, name)

    def delete_sandbox(self, namespace: str, name: str) -> None:
        self._kube(lambda: self.objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name), namespace, name)

    def next_change(self, watch: Watch, interrupt: Optional["Interrupt"] = None) -> Optional[Event]:
        """The sandbox's first ADDED, MODIFIED or DELETED event from `watch.version` on, within
        `watch.seconds` (a server-side timeout); None when the watch ended, expired (410) or broke
        first, or was interrupted: the caller reads the sandbox again."""
        response: Any = None
        try:
            response = self._kube(lambda: self.objects.list_namespaced_custom_object(
                GROUP, VERSION, watch.namespace, PLURAL, field_selector=f"metadata.name={watch.name}",
                resource_version=watch.version, timeout_seconds=max(1, watch.seconds), watch=True,
                _preload_content=False, _request_timeout=watch.seconds + 10), watch.namespace, watch.name)
            if response.status >= 400:
                raise kube_error(response.status, response.data, response.reason, watch.namespace, watch.name)
            if interrupt is not None and not interrupt.attach(response):
                return None
            lines = Lines()
            for chunk in response.stream(amt=None, decode_content=False):
                for event in lines.feed(chunk):
                    if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                        return event  # type: ignore[no-any-return]
                    if event.get("type") == "ERROR":
                        return None
            return None
        except SandboxError:
            raise
        except Exception:  # noqa: BLE001 - a broken or expired watch: read again, watch again
            return None
        finally:
            if response is not None:
                response.close()
                response.release_conn()

    def _kube(self, call: Callable[[], Any], namespace: str, name: str) -> Any:
        try:
            return call()
        except ApiException as exc:
            raise kube_error(exc.status, exc.body, exc.reason, namespace, name) from None

    # -- plans: each step done here, in the calling thread ----------------------------------------

    def run(self, plan: Plan[T]) -> T:
        """Carry a plan (llmsafespace._core) out, step by step."""
        runner = Runner(plan)
        while runner.running:
            with runner as step:
                runner.reply = self.perform(step)
        return runner.result  # type: ignore[no-any-return]

    def perform(self, step: Step) -> Any:
        if isinstance(step, Kube):
            return getattr(self, step.method)(*step.args)
        if isinstance(step, Watch):
            return self.next_change(step)
        if isinstance(step, Pause):
            return time.sleep(step.seconds)
        with self._send(step, stream=False) as response:
            return read_answer(step.read, response.content)

    # -- the gateway -----------------------------------------------------------------------------

    def stream(self, call: Call, last: str) -> Iterator[Event]:
        """A streamed gateway call (sent now; an error answer raises now): its events as they
        arrive, the stream ending with a `last` event."""
        return self._events(self._send(call, stream=True), Events(last))

    @staticmethod
    def _events(response: requests.Response, events: Events) -> Iterator[Event]:
        with response:
            try:
                for chunk in response.iter_content(chunk_size=None):
                    yield from events.feed(chunk)
            except requests.RequestException as exc:
                raise stream_broken(exc) from None
        yield from events.finish()

    def _send(self, call: Call, *, stream: bool) -> requests.Response:
        """One gateway call; an error answer raises the matching SandboxError (with the sandbox's reason)."""
        request = gateway_request(self.gateway_url, self.bearer(), call)
        try:
            response = self.http.request(request.method, request.url, data=request.data, headers=request.headers, stream=stream,
                                         timeout=(request.connect_timeout, request.read_timeout), verify=self.verify,
                                         allow_redirects=False)
        except requests.RequestException as exc:
            raise unreachable(self.gateway_url, exc) from None
        if response.status_code >= 400:
            with response:
                raise answer_error(response.status_code, response.content)
        return response

    def close(self) -> None:
        self.http.close()
        self.api_client.close()


class Interrupt:
    """Ends a watch that blocks another thread (how the async client cancels one, aio.py):
    fire() shuts the watch's socket down, now or as soon as the watch is open."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fired = False
        self._response: Any = None

    def attach(self, response: Any) -> bool:
        """False when fired already (the watch should end at once)."""
        with self._lock:
            self._response = response
            return not self._fired

    def fire(self) -> None:
        with self._lock:
            self._fired, response = True, self._response
        if response is not None:
            try:
                response.shutdown()  # urllib3 >= 2.3: wakes the read blocked in the other thread
            except (AttributeError, RuntimeError, ValueError, OSError):
                pass
