"""Settings (hooks/config.py): every variable validated at start-up, refused with one line naming
the variable and the rule (issue 13, item 9: 7 of 15 bad values used to start a broken server)."""
from __future__ import annotations

import os
import runpy
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from hooks.server import app as app_module
from hooks import config as config_module
from hooks.config import Config, ConfigError
from tests.factory import NOW
from tests.loopback import free_port
from tests.procs import die_with_parent

ROOT = Path(__file__).resolve().parent.parent

# (variable, value, a fragment of the rule the message must state)
BAD = [
    ("LLMSS_MAX_REQUEST_BYTES", "0", "greater than or equal to 1048576"),
    ("LLMSS_MAX_REQUEST_BYTES", "-1", "greater than or equal to 1048576"),
    ("LLMSS_MAX_REQUEST_BYTES", "32MB", "integer"),
    ("LLMSS_API_NAMESPACE", "", "DNS-1123 label"),
    ("LLMSS_API_NAMESPACE", "Sandbox_API", "DNS-1123 label"),
    ("LLMSS_DNS_NAMESPACE", "kube system", "DNS-1123 label"),
    ("LLMSS_DNS_POD_LABELS", "", "at least one"),
    ("LLMSS_DNS_POD_LABELS", " , ", "at least one"),
    ("LLMSS_DNS_POD_LABELS", "k8s-app", "key=value"),
    ("LLMSS_DNS_POD_LABELS", "k8s-app=kube dns", "label value"),
    ("LLMSS_DNS_POD_LABELS", "bad key=kube-dns", "qualified name"),
    ("LLMSS_HIGH_SECURITY_RUNTIME_CLASS", "", "DNS-1123 subdomain"),
    ("LLMSS_HIGH_SECURITY_RUNTIME_CLASS", "gVisor_1", "DNS-1123 subdomain"),
    ("LLMSS_RETAIN_STORAGE_CLASS", "Fast SSD", "DNS-1123 subdomain"),
    ("LLMSS_WARM_POD_WAIT_SECONDS", "soon", "integer"),
    ("LLMSS_WARM_POD_WAIT_SECONDS", "-5", "greater than or equal to 0"),
    ("LLMSS_DEFAULT_LIFETIME_SECONDS", "1h", "integer"),
    ("LLMSS_CHILD_CREATE_GRACE_SECONDS", "0", "greater than or equal to 1"),
    ("LLMSS_CHILD_CREATE_GRACE_SECONDS", "7200", "less than or equal to 3600"),
    ("LLMSS_MAX_TERMINATION_GRACE_SECONDS", "0", "greater than or equal to 1"),
    ("LLMSS_NODE_LOCAL_DNS_PORT", "70000", "less than or equal to 65535"),
    ("LLMSS_GATEWAY_PUBLIC_KEYS", "bm90IGEga2V5", "raw 32-byte Ed25519 public key"),
    ("LLMSS_GATEWAY_PUBLIC_KEYS", "not base64!", "raw 32-byte Ed25519 public key"),
    ("LLMSS_NODE_LOCAL_DNS_ADDRESSES", "169.254.20.0/24", "IP address"),
    ("LLMSS_NETWORK_POLICY_FLAVOUR", "calico", "'kubernetes'"),
    ("LLMSS_IMAGE_REGISTRY_ALLOWLIST", "ghcr.io,https://evil.example", "registry host"),
    ("WORKERS", "0", "greater than or equal to 1"),
    ("WORKERS", "two", "integer"),
    ("GUNICORN_TIMEOUT", "0", "greater than or equal to 1"),
    ("GUNICORN_TIMEOUT", "30s", "integer"),
    ("METRICS_PORT", "metrics", "integer"),
    ("METRICS_PORT", "70000", "less than or equal to 65535"),
    ("METRICS_PATH", "metrics", "start with '/'"),
    ("LOG_LEVEL", "LOUD", "DEBUG"),
]


@pytest.mark.parametrize("variable, value, rule", BAD, ids=[f"{v}={x!r}" for v, x, _ in BAD])
def test_bad_setting_is_refused_naming_variable_and_rule(variable: str, value: str, rule: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_module.check_env({variable: value})
    message = str(info.value)
    assert message.startswith(f"{variable}: ") and rule in message and "\n" not in message, message
    assert repr(value.strip()) in message  # what was read, for the operator to find


GOOD = [
    ({}, {}),
    ({"LLMSS_MAX_REQUEST_BYTES": "1048576"}, {"max_request_bytes": 1048576}),
    ({"LLMSS_API_NAMESPACE": " sandbox-api "}, {"api_namespace": "sandbox-api"}),
    ({"LLMSS_DNS_POD_LABELS": "app.kubernetes.io/name=coredns, app.kubernetes.io/instance=dns"},
     {"dns_pod_labels": (("app.kubernetes.io/instance", "dns"), ("app.kubernetes.io/name", "coredns"))}),
    ({"LLMSS_HIGH_SECURITY_RUNTIME_CLASS": "kata.qemu-2"}, {"high_security_runtime_class": "kata.qemu-2"}),
    ({"LLMSS_RETAIN_STORAGE_CLASS": ""}, {"retain_storage_class": ""}),
    ({"LLMSS_IMAGE_REGISTRY_ALLOWLIST": "ghcr.io, registry.local:5000/team"},
     {"image_registry_allowlist": ("ghcr.io", "registry.local:5000/team")}),
    ({"LLMSS_NODE_LOCAL_DNS_ADDRESSES": "169.254.20.10,fd00::a", "LLMSS_NODE_LOCAL_DNS_PORT": "5353"},
     {"node_local_dns_addresses": ("169.254.20.10", "fd00::a"), "node_local_dns_port": 5353}),
    ({"LLMSS_DEFAULT_LIFETIME_SECONDS": "0", "LLMSS_WARM_POD_WAIT_SECONDS": "0"},
     {"default_lifetime_seconds": 0, "warm_pod_wait_seconds": 0}),
    ({"WORKERS": "4", "GUNICORN_TIMEOUT": "30", "METRICS_PORT": "", "METRICS_PATH": "", "LOG_LEVEL": "debug"}, {}),
    ({"METRICS_PORT": "9090", "METRICS_PATH": "/metrics"}, {}),
]


@pytest.mark.parametrize("env, expected", GOOD, ids=[",".join(e) or "defaults" for e, _ in GOOD])
def test_good_settings_are_accepted(env: dict[str, str], expected: dict[str, object]) -> None:
    config = config_module.check_env(env)
    assert {k: getattr(config, k) for k in expected} == expected
    assert config.model_dump(exclude=set(expected)) == Config().model_dump(exclude=set(expected))


def test_defaults_are_the_documented_ones() -> None:
    config = Config()
    assert (config.max_request_bytes, config.api_namespace, config.dns_namespace, config.dns_pod_labels) == (
        32 * 1024 * 1024, "llmsafespace", "kube-system", (("k8s-app", "kube-dns"),))
    assert hash(config) == hash(Config())  # frozen: usable as a cache key, never edited in place
    with pytest.raises(Exception):
        config.api_namespace = "x"  # type: ignore[misc]


def test_the_app_refuses_bad_settings_and_uses_the_request_limit() -> None:
    with pytest.raises(ConfigError, match="^LLMSS_MAX_REQUEST_BYTES: "):
        app_module.create_app(env={"LLMSS_MAX_REQUEST_BYTES": "0"})
    with pytest.raises(ConfigError, match="^LLMSS_API_NAMESPACE: "):
        app_module.create_app(env={"LLMSS_API_NAMESPACE": ""})
    app = app_module.create_app(clock=lambda: NOW, env={"LLMSS_MAX_REQUEST_BYTES": "2000000"})
    assert app.config["MAX_CONTENT_LENGTH"] == 2_000_000


# --- a real gunicorn refuses to start ---------------------------------------------------------------

@pytest.fixture()
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.parametrize("variable, value", [("LLMSS_MAX_REQUEST_BYTES", "-1"), ("LLMSS_DNS_POD_LABELS", ""), ("WORKERS", "two")])
def test_gunicorn_refuses_to_start_with_one_line_naming_the_variable(
        tmp_path: Path, procs: list, variable: str, value: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMSS_")}
    env.update({"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"), variable: value})
    log = tmp_path / "gunicorn.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", str(ROOT / "hooks" / "server" / "gunicorn_conf.py"),
             "--bind", "127.0.0.1:0", "hooks.server.app:app"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True, preexec_fn=die_with_parent)
    procs.append(proc)
    proc.wait(timeout=30)
    text = log.read_text()
    assert proc.returncode != 0, text[-2000:]
    assert "Booting worker" not in text and "Traceback" not in text, text[-2000:]
    assert [line for line in text.splitlines() if f"{variable}: " in line], text[-2000:]


def test_gunicorn_conf_falls_back_to_the_settings_models_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """hooks/server/gunicorn_conf.py reads WORKERS, GUNICORN_THREADS and GUNICORN_TIMEOUT before the
    hooks are importable, so it keeps its own fallbacks: they must be ServerSettings' defaults."""
    for name in ("WORKERS", "GUNICORN_THREADS", "GUNICORN_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/nonexistent-llmss-test")  # no temporary directory made
    conf = runpy.run_path(str(ROOT / "hooks" / "server" / "gunicorn_conf.py"))
    defaults = config_module.ServerSettings()
    assert (conf["workers"], conf["threads"], conf["timeout"]) == (defaults.workers, defaults.gunicorn_threads, defaults.gunicorn_timeout)


@pytest.mark.parametrize("variable, value", [("WORKERS", "abc"), ("GUNICORN_TIMEOUT", "x")])
def test_serve_reports_a_bad_setting_like_every_other(tmp_path: Path, procs: list, variable: str, value: str) -> None:
    """./scripts/serve passed WORKERS to gunicorn as --workers, whose parser said `argument
    -w/--workers: invalid int value: 'abc'` (issue 24), naming a flag the user never typed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMSS_")}
    env.update({"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"), "BIND": f"127.0.0.1:{free_port()}", variable: value})
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen([str(ROOT / "scripts" / "serve")], cwd=tmp_path, env=env, stdout=out,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True, preexec_fn=die_with_parent)
    procs.append(proc)
    proc.wait(timeout=60)
    text = log.read_text()
    assert proc.returncode != 0, text[-2000:]
    assert "Booting worker" not in text and "--workers" not in text, text[-2000:]
    assert [line for line in text.splitlines() if f"{variable}: " in line and f"got {value!r}" in line], text[-2000:]
