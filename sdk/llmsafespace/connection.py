"""Where the SDK talks to: the Kubernetes API server (create, watch, patch, delete Sandboxes, with
the kubernetes client's own credential handling: kubeconfig tokens, exec plugins, OIDC,
in-cluster ServiceAccounts) and the gateway (run code, sessions, files), which takes the same
bearer token and checks it with the API server (docs/gateway.md)."""
from __future__ import annotations

import json
import os
from typing import Any, Iterator, Mapping, Optional, Union
from urllib.parse import quote

import requests
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

from .errors import Forbidden, NotFound, SandboxError, Unauthenticated, from_answer

GROUP, VERSION, PLURAL = "llmsafespace.dev", "v1", "sandboxes"
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

    def watch_sandbox(self, namespace: str, name: str, resource_version: str, seconds: int) -> Iterator[dict[str, Any]]:
        """Events of one sandbox from `resource_version` on, for at most `seconds` (a server-side timeout)."""
        watcher = k8s_watch.Watch()
        try:
            yield from watcher.stream(self.objects.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
                                      field_selector=f"metadata.name={name}", resource_version=resource_version,
                                      timeout_seconds=max(1, seconds), _request_timeout=seconds + 10)
        finally:
            watcher.stop()

    def _kube(self, call: Any, namespace: str, name: str) -> Any:
        try:
            return call()
        except ApiException as exc:
            message = _api_message(exc)
            where = f"sandbox {namespace}/{name}" if name else f"sandboxes in {namespace}"
            if exc.status == 404:
                raise NotFound(f"{where}: not found ({message})", code="sandbox_not_found", status=404,
                               sandbox={"namespace": namespace, "name": name}) from None
            if exc.status in (401, 403):
                cls = Unauthenticated if exc.status == 401 else Forbidden
                raise cls(f"{where}: {message}", code="unauthenticated" if exc.status == 401 else "forbidden",
                          status=exc.status) from None
            raise SandboxError(f"{where}: the API server answered {exc.status}: {message}", code="api_error", status=exc.status) from None

    # -- the gateway -----------------------------------------------------------------------------

    def url(self, namespace: str, name: str, rest: str) -> str:
        return f"{self.gateway_url}/v1/namespaces/{quote(namespace, safe='')}/sandboxes/{quote(name, safe='')}/{rest}"

    def call(self, method: str, namespace: str, name: str, rest: str, *, params: Optional[Mapping[str, str]] = None,
             body: Any = None, data: Optional[bytes] = None, stream: bool = False, wait: float = 0,
             timeout: Optional[float] = None) -> requests.Response:
        """One gateway call; an error answer raises the matching SandboxError (with the sandbox's reason)."""
        headers = {"Authorization": self.bearer(), "Accept": "application/json, application/x-ndjson"}
        if wait:
            headers["X-LLMSS-Wait"] = str(int(wait))
        if timeout is not None:
            headers["X-LLMSS-Timeout"] = str(int(timeout))
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        elif data is not None:
            headers["Content-Type"] = "application/octet-stream"
        # connect within 10 s; between bytes, as long as the call may be silent: its wait, its own
        # timeout (the runtime's default: 60 s) and a margin
        read = (60.0 if timeout is None else timeout) + wait + 30
        try:
            response = self.http.request(method, self.url(namespace, name, rest), params=params, data=data, headers=headers,
                                         stream=stream, timeout=(10, read), verify=self.verify, allow_redirects=False)
        except requests.RequestException as exc:
            raise SandboxError(f"the gateway {self.gateway_url} did not answer ({type(exc).__name__})", code="gateway_unreachable") from None
        if response.status_code >= 400:
            try:
                answer = response.json()
            except ValueError:
                answer = None
            finally:
                response.close()
            raise from_answer(response.status_code, answer)
        return response

    def close(self) -> None:
        self.http.close()
        self.api_client.close()


def _api_message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason)
