"""The gateway's calls to the Kubernetes API server, as its own ServiceAccount.

The `kubernetes` client is used for what is hard to get right by hand: loading in-cluster config
(with the projected token re-read as the kubelet rotates it) or a kubeconfig (client certificates,
exec plugins, OIDC: the e2e harness runs the gateway outside the cluster). The calls themselves go
through its urllib3 pool as plain JSON: half a dozen paths, no model classes to convert."""
from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any, Optional
from urllib.parse import quote, urlencode

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

GROUP = "llmsafespace.dev"
VERSION = "v1"


class ApiError(Exception):
    """The API server answered with an error status (or could not be reached: status 0)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message


def load_configuration(kubeconfig: Optional[str]) -> k8s_client.Configuration:
    configuration = k8s_client.Configuration()
    if kubeconfig:
        k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    else:
        k8s_config.load_incluster_config(client_configuration=configuration)
    return configuration


class Kube:
    def __init__(self, configuration: k8s_client.Configuration, timeout: float = 10.0) -> None:
        self.configuration = configuration
        self.pool = k8s_client.ApiClient(configuration).rest_client.pool_manager
        self.host = configuration.host.rstrip("/")
        self.timeout = timeout

    def _headers(self, content_type: Optional[str] = None) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "llmsafespace-gateway"}
        auth = self.configuration.auth_settings().get("BearerToken")  # re-reads a rotated token
        if auth and auth.get("value"):
            headers["Authorization"] = auth["value"]
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    def request(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
                query: Optional[Mapping[str, Any]] = None, timeout: Optional[float] = None) -> Any:
        url = self.host + path + ("?" + urlencode(query) if query else "")
        data = None if body is None else json.dumps(body).encode()
        try:
            response = self.pool.request(method, url, body=data, headers=self._headers(content_type if data else None),
                                         timeout=timeout or self.timeout, retries=False)
        except urllib3.exceptions.HTTPError as exc:
            raise ApiError(0, "Unreachable", f"API server unreachable: {type(exc).__name__}") from None
        return _decode(response)

    def stream(self, path: str, query: Mapping[str, Any], timeout: float) -> Iterator[dict[str, Any]]:
        """A watch: one event (type, object) per line until the server ends it."""
        url = f"{self.host}{path}?{urlencode(query)}"
        try:
            response = self.pool.request("GET", url, headers=self._headers(), preload_content=False,
                                         timeout=urllib3.Timeout(connect=self.timeout, read=timeout), retries=False)
        except urllib3.exceptions.HTTPError as exc:
            raise ApiError(0, "Unreachable", f"API server unreachable: {type(exc).__name__}") from None
        try:
            if response.status >= 400:
                _decode(response)
            buffer = b""
            for chunk in response.stream(64 * 1024):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        except urllib3.exceptions.HTTPError:  # the read timeout: the watch ends
            return
        finally:
            response.release_conn()

    # -- the calls the gateway makes -----------------------------------------------------------

    def token_review(self, token: str, audiences: tuple[str, ...]) -> dict[str, Any]:
        spec: dict[str, Any] = {"token": token}
        if audiences:
            spec["audiences"] = list(audiences)
        return self.request("POST", "/apis/authentication.k8s.io/v1/tokenreviews",
                            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec})

    def subject_access_review(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                            {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec})

    def get_sandbox(self, namespace: str, name: str) -> dict[str, Any]:
        return self.request("GET", sandbox_path(namespace, name))

    def patch_sandbox(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.request("PATCH", sandbox_path(namespace, name), patch, content_type="application/merge-patch+json")

    def get_pod(self, namespace: str, name: str) -> dict[str, Any]:
        return self.request("GET", f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/{quote(name, safe='')}")

    def watch_sandbox(self, namespace: str, name: str, resource_version: str, seconds: int) -> Iterator[dict[str, Any]]:
        query = {"watch": "true", "fieldSelector": f"metadata.name={name}", "resourceVersion": resource_version,
                 "timeoutSeconds": max(1, seconds), "allowWatchBookmarks": "false"}
        return self.stream(f"/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace, safe='')}/sandboxes", query, seconds + 5)


def sandbox_path(namespace: str, name: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace, safe='')}/sandboxes/{quote(name, safe='')}"


def _decode(response: Any) -> Any:
    raw = response.data if hasattr(response, "data") else b""
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        body = {}
    if response.status >= 400:
        message = body.get("message") if isinstance(body, dict) else None
        reason = body.get("reason") if isinstance(body, dict) else None
        raise ApiError(response.status, str(reason or response.reason or ""), str(message or "")[:500])
    return body
