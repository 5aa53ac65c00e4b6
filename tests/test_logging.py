"""One JSON log line per hook call (hooks/server/logging_setup.py, hooks/server/app.py): captured and parsed."""
from __future__ import annotations

import io
import json
from typing import Any

import pytest

from hooks.server import app as app_module
from hooks.config import Config
from hooks.server.routes import ROUTES, Route
from tests.factory import NOW
from tests.sandbox_cases import first_sync, minimal, observed_running

SECRET = "do-not-log-this-value-7f3a"


def app_and_log(env: dict[str, str] | None = None) -> tuple[Any, io.StringIO]:
    stream = io.StringIO()
    app = app_module.create_app(Config(), clock=lambda: NOW, env=env or {}, log_stream=stream)
    return app.test_client(), stream


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def post(client: Any, path: str, body: Any) -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body)
    return client.post(path, data=data, content_type="application/json")


def test_one_line_per_call_with_who_and_what() -> None:
    client, stream = app_and_log()
    request = observed_running()
    assert post(client, "/sandbox/sync", request).status_code == 200
    assert post(client, "/sandbox/customize", {"parent": request["parent"]}).status_code == 200
    sync, customize = lines(stream)
    assert sync["logger"] == "llmsafespace.hooks" and sync["level"] == "info" and sync["ts"].endswith("Z")
    assert {k: sync[k] for k in ("controller", "hook", "namespace", "name", "generation", "outcome", "status", "phase")} == {
        "controller": "sandbox", "hook": "sync", "namespace": "demo", "name": "live", "generation": 1,
        "outcome": "ok", "status": 200, "phase": "Running",
    }
    assert sync["children"] == len(request["children"]["Pod.v1"]) + 5  # pod, service, account, 3 policies
    assert isinstance(sync["duration_ms"], float) and 0 < sync["duration_ms"] < 5000
    assert customize["hook"] == "customize" and "children" not in customize and "phase" not in customize


def test_finalize_line_says_whether_it_finalized() -> None:
    client, stream = app_and_log()
    post(client, "/sandbox/finalize", {**first_sync(), "finalizing": True})
    (line,) = lines(stream)
    assert line["hook"] == "finalize" and line["finalized"] is True and line["phase"] == "Terminated"


def test_the_request_body_is_never_logged() -> None:
    client, stream = app_and_log()
    request = minimal()
    request["parent"]["metadata"]["annotations"] = {"note": SECRET}
    request["parent"]["spec"]["runtime"] = SECRET  # unresolvable: the status message names it
    post(client, "/sandbox/sync", request)
    post(client, "/sandbox/sync", b'{"parent": {"metadata": {}, "spec": "' + SECRET.encode() + b'"}, ')  # invalid JSON
    post(client, "/sandbox/sync", {"parent": SECRET})
    assert len(lines(stream)) == 3
    assert SECRET not in stream.getvalue()


@pytest.mark.parametrize("body, error_type", [
    (b"{not json", "InvalidJSON"),
    (b"[1]", "NotAnObject"),
    (b'{"children": {}}', "BadRequest"),
])
def test_bad_requests_are_warnings_with_the_reason(body: bytes, error_type: str) -> None:
    client, stream = app_and_log()
    assert post(client, "/sandbox/sync", body).status_code == 400
    (line,) = lines(stream)
    assert line["level"] == "warning" and line["outcome"] == "bad_request" and line["status"] == 400
    assert line["error_type"] == error_type and line["error"]


def test_unauthorized_and_oversized_calls_are_logged(tmp_path: Any) -> None:
    stream = io.StringIO()
    limit = 1024 * 1024  # the smallest LLMSS_MAX_REQUEST_BYTES allowed
    client = app_module.create_app(clock=lambda: NOW, env={"LLMSS_HOOK_TOKEN": "s3cret", "LLMSS_MAX_REQUEST_BYTES": str(limit)},
                                   log_stream=stream).test_client()
    assert post(client, "/sandbox/sync", minimal()).status_code == 401
    response = client.post("/sandbox/sync", data=b"x" * (limit + 1), content_type="application/json",
                           headers={"Authorization": "Bearer s3cret"})
    assert response.status_code == 413
    unauthorized, too_large = lines(stream)
    assert unauthorized["error_type"] == "Unauthorized" and unauthorized["outcome"] == "bad_request"
    assert too_large["error_type"] == "RequestEntityTooLarge" and too_large["status"] == 413


def test_hook_failures_are_errors_with_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(request: Any, now: Any, config: Any) -> Any:
        raise KeyError("bug")

    monkeypatch.setitem(ROUTES, "/sandbox/sync", Route("sandbox", "sync", boom))
    client, stream = app_and_log()
    assert post(client, "/sandbox/sync", minimal()).status_code == 500
    (line,) = lines(stream)
    assert line["level"] == "error" and line["outcome"] == "error" and line["status"] == 500
    assert line["error_type"] == "KeyError" and line["name"] == "alpha"
    assert "Traceback" in line["traceback"] and "boom" in line["traceback"]


def test_log_level_from_the_environment() -> None:
    client, stream = app_and_log({"LOG_LEVEL": "warning"})
    post(client, "/sandbox/sync", minimal())
    post(client, "/sandbox/sync", b"[]")
    assert [line["outcome"] for line in lines(stream)] == ["bad_request"]
    client, stream = app_and_log({"LOG_LEVEL": "DEBUG"})
    post(client, "/sandbox/sync", minimal())
    assert len(lines(stream)) == 1


def test_a_bad_log_level_fails_at_start_up() -> None:
    with pytest.raises(ValueError, match="LOG_LEVEL"):
        app_module.create_app(Config(), env={"LOG_LEVEL": "chatty"})


def test_probes_are_not_logged() -> None:
    client, stream = app_and_log()
    client.get("/healthz")
    client.get("/readyz")
    assert stream.getvalue() == ""


def test_long_fields_are_truncated_with_a_marker() -> None:
    """A 1 MB name (refused: over 253 characters) used to be logged in full."""
    from hooks.server import logging_setup

    client, stream = app_and_log()
    request = minimal()
    request["parent"]["metadata"]["name"] = "n" * 1_000_000
    request["parent"]["metadata"]["namespace"] = "ns" * 40
    assert post(client, "/sandbox/sync", request).status_code == 400
    raw = stream.getvalue()
    assert len(raw) < 2 * logging_setup.MAX_FIELD_CHARS + 1000
    (line,) = lines(stream)
    assert line["name"].startswith("n" * 100) and line["name"].endswith("...[truncated 1000000 characters]")
    assert line["namespace"] == "ns" * 40  # short fields are untouched
    assert line["outcome"] == "bad_request"


def test_long_messages_of_other_loggers_are_truncated_too() -> None:
    import logging

    from hooks.server import logging_setup

    _, stream = app_and_log()
    logging.getLogger("llmsafespace.hooks").warning("x" * 100_000)
    (line,) = lines(stream)
    assert len(line["msg"]) < logging_setup.MAX_FIELD_CHARS + 50 and "[truncated 100000 characters]" in line["msg"]
