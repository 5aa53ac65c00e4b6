"""HTTP contract of the hook server, through Flask's test client."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from hooks.server import app as app_module
from hooks.config import Config
from hooks.server.routes import ROUTES, Route
from tests.factory import NOW
from tests.sandbox_cases import first_sync, minimal

EXAMPLE = Path(__file__).parent.parent / "examples" / "requests" / "sandbox-sync.json"


@pytest.fixture()
def client() -> FlaskClient:
    return app_module.create_app(Config(), clock=lambda: NOW, env={}).test_client()


def post(client: FlaskClient, path: str, body: Any, **kw: Any) -> Any:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post(path, data=data, content_type="application/json", **kw)


def test_sample_request_from_readme(client: FlaskClient) -> None:
    request = json.loads(EXAMPLE.read_text())
    assert request == minimal(), "examples/requests/sandbox-sync.json is stale: regenerate it from tests/sandbox_cases.minimal"
    response = post(client, "/sandbox/sync", request)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["status"]["phase"] == "Creating"
    assert {c["kind"] for c in body["children"]} == {"Pod", "Service", "ServiceAccount", "NetworkPolicy"}


def test_customize_and_finalize_routes(client: FlaskClient) -> None:
    request = minimal()
    customize = post(client, "/sandbox/customize", {"controller": request["controller"], "parent": request["parent"]})
    assert customize.status_code == 200 and customize.get_json()["relatedResources"]
    finalize = post(client, "/sandbox/finalize", {**request, "finalizing": True})
    assert finalize.status_code == 200 and finalize.get_json()["finalized"] is False  # its account is still there
    done = post(client, "/sandbox/finalize", {**first_sync(), "finalizing": True})
    assert done.status_code == 200 and done.get_json()["finalized"] is True


def test_responses_are_byte_identical_for_identical_requests(client: FlaskClient) -> None:
    request = minimal()
    assert post(client, "/sandbox/sync", request).data == post(client, "/sandbox/sync", request).data


def test_health_and_readiness(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz").get_json()
    assert ready["status"] == "ready" and "/sandbox/sync" in ready["hooks"]


@pytest.mark.parametrize("body, fragment", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'{"children": {}}', "request.parent must be an object"),
])
def test_malformed_requests_get_400_with_a_message(client: FlaskClient, body: bytes, fragment: str) -> None:
    response = post(client, "/sandbox/sync", body)
    assert response.status_code == 400
    assert fragment in response.get_json()["error"]


def test_unknown_route_and_wrong_method(client: FlaskClient) -> None:
    assert client.post("/nope").status_code == 404
    assert client.post("/nope").get_json()["status"] == 404
    assert client.get("/sandbox/sync").status_code == 405


def test_oversized_body_is_refused_with_413() -> None:
    limit = 1024 * 1024  # the smallest the settings allow
    client = app_module.create_app(clock=lambda: NOW, env={"LLMSS_MAX_REQUEST_BYTES": str(limit)}).test_client()
    response = post(client, "/sandbox/sync", {"parent": {"metadata": {}}, "padding": "x" * limit})
    assert response.status_code == 413
    assert f"exceeds {limit} bytes" in response.get_json()["error"]


def test_bearer_token_is_required_when_configured(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    client = app_module.create_app(Config(), clock=lambda: NOW, env={"LLMSS_HOOK_TOKEN_FILE": str(token_file)}).test_client()
    assert post(client, "/sandbox/sync", minimal()).status_code == 401
    assert post(client, "/sandbox/sync", minimal(), headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert post(client, "/sandbox/sync", minimal(), headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/healthz").status_code == 200  # probes need no token


def test_bearer_scheme_is_case_insensitive(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    client = app_module.create_app(Config(), clock=lambda: NOW, env={"LLMSS_HOOK_TOKEN_FILE": str(token_file)}).test_client()
    for scheme in ("bearer", "BEARER", "bEaReR"):  # RFC 7235: auth-scheme is case-insensitive
        assert post(client, "/sandbox/sync", minimal(), headers={"Authorization": f"{scheme} s3cret"}).status_code == 200


@pytest.mark.parametrize("content", ["", "  \n\t"])
def test_token_file_without_a_token_is_a_startup_error(tmp_path: Path, content: str) -> None:
    """Never "authentication off": the server must not start (tests/test_auth.py has the rest)."""
    token_file = tmp_path / "token"
    token_file.write_text(content)
    with pytest.raises(ValueError, match="LLMSS_HOOK_TOKEN_FILE"):
        app_module.create_app(Config(), clock=lambda: NOW, env={"LLMSS_HOOK_TOKEN_FILE": str(token_file)})


def test_internal_error_is_a_json_500_never_a_partial_state(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(request: Any, now: Any, config: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setitem(ROUTES, "/sandbox/sync", Route("sandbox", "sync", boom))
    client = app_module.create_app(Config(), clock=lambda: NOW, env={}).test_client()
    response = post(client, "/sandbox/sync", minimal())
    assert response.status_code == 500
    body = response.get_json()
    assert "children" not in body and "status" in body and "retry" in body["error"]


def test_bad_configuration_fails_at_start_up() -> None:
    with pytest.raises(ValueError, match="LLMSS_WARM_POD_WAIT_SECONDS"):
        app_module.create_app(env={"LLMSS_WARM_POD_WAIT_SECONDS": "soon"})
    with pytest.raises(ValueError, match="NETWORK_POLICY_FLAVOUR"):
        app_module.create_app(env={"LLMSS_NETWORK_POLICY_FLAVOUR": "cilium"})
    config = Config.from_env({"LLMSS_IMAGE_REGISTRY_ALLOWLIST": "ghcr.io, docker.io", "LLMSS_DNS_POD_LABELS": "k8s-app=coredns"})
    assert config.image_registry_allowlist == ("docker.io", "ghcr.io")
    assert config.dns_pod_labels == (("k8s-app", "coredns"),)
