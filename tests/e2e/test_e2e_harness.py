"""The harness itself, without a control plane (runs everywhere, CI included): finding the
binaries, the certificates it makes, the fake node's stages, stopping processes by PID."""
from __future__ import annotations

import json
import os
import re
import stat
import sys
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.e2e import fakenode
from tests.e2e.controlplane import ENV_BIN, REQUIRED, Process, make_pki, missing_binaries, skip_reason


def _fill(directory: Path, names: list[str]) -> None:
    for name in names:
        path = directory / name
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)


def test_skip_reason_names_what_is_missing_and_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_BIN, str(tmp_path))
    _fill(tmp_path, ["etcd", "kube-apiserver"])
    (tmp_path / "kwok").write_text("not executable")
    reason = skip_reason()
    assert reason is not None and str(tmp_path) in reason and "docs/e2e.md" in reason
    absent = missing_binaries(tmp_path)
    assert absent == [n for n in REQUIRED if n not in ("etcd", "kube-apiserver")]  # kwok is there but not executable
    for name in absent:
        assert name in reason and REQUIRED[name] in reason
    _fill(tmp_path, [n for n in REQUIRED if n != "metacontroller-crds-v1.yaml"])
    (tmp_path / "metacontroller-crds-v1.yaml").write_text("kind: List\n")
    assert skip_reason() is None and missing_binaries(tmp_path) == []


def test_default_directory_is_used_when_the_variable_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_BIN, raising=False)
    reason = skip_reason(Path("/nonexistent/llmss"))
    assert reason is not None and f"({ENV_BIN} unset)" in reason


def test_pki_makes_what_the_api_server_and_an_admin_need(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    serving = x509.load_pem_x509_certificate(pki.serving_cert.read_bytes())
    admin = x509.load_pem_x509_certificate(pki.admin_cert.read_bytes())
    for cert in (serving, admin):
        assert cert.issuer == ca.subject
        cert.verify_directly_issued_by(ca)
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    assert ExtendedKeyUsageOID.SERVER_AUTH in serving.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    proxy = x509.load_pem_x509_certificate(pki.proxy_client_cert.read_bytes())
    proxy.verify_directly_issued_by(x509.load_pem_x509_certificate(pki.proxy_ca_cert.read_bytes()))
    for key in (pki.ca_key, pki.serving_key, pki.admin_key, pki.sa_key, pki.proxy_client_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    assert b"PUBLIC KEY" in pki.sa_pub.read_bytes()


def test_fake_node_stages_cover_running_deletion_and_every_failure() -> None:
    docs = list(yaml.safe_load_all(fakenode.stages()))
    assert all(d["apiVersion"] == "kwok.x-k8s.io/v1alpha1" and d["kind"] == "Stage" for d in docs)
    names = [d["metadata"]["name"] for d in docs]
    assert len(names) == len(set(names))
    assert {"e2e-node-ready", "e2e-pod-running", "e2e-pod-delete"} <= set(names)
    for failure in fakenode.FAILURES:
        (stage,) = [d for d in docs if d["metadata"]["name"] == f"e2e-pod-{failure.lower()}"]
        keys = {e["key"]: e for e in stage["spec"]["selector"]["matchExpressions"]}
        assert keys[f'.metadata.annotations["{fakenode.FAIL_ANNOTATION}"]']["values"] == [failure]
        assert failure in stage["spec"]["next"]["statusTemplate"]
    running = next(d for d in docs if d["metadata"]["name"] == "e2e-pod-running")
    ops = {e["key"]: e["operator"] for e in running["spec"]["selector"]["matchExpressions"]}
    assert ops[f'.metadata.annotations["{fakenode.FAIL_ANNOTATION}"]'] == "DoesNotExist", "a pod told to fail never runs first"


def test_cluster_objects_give_pods_somewhere_to_run() -> None:
    items = json.loads(fakenode.cluster_objects())["items"]
    nodes = [i for i in items if i["kind"] == "Node"]
    assert {n["metadata"]["name"] for n in nodes} == {fakenode.NODE, fakenode.PINNED_NODE}
    for node in nodes:
        assert node["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
        assert "ephemeral-storage" in node["status"]["capacity"], "sandbox pods request ephemeral storage"
    assert any(n["metadata"]["labels"].get("cpu-pinning") == "true" for n in nodes)
    classes = {i["metadata"]["name"]: i for i in items if i["kind"] == "StorageClass"}
    assert classes[fakenode.RETAIN_STORAGE_CLASS]["reclaimPolicy"] == "Retain"
    assert {i["metadata"]["name"] for i in items if i["kind"] == "RuntimeClass"} == {fakenode.RUNTIME_CLASS}


def test_process_is_stopped_by_pid_and_reaped(tmp_path: Path) -> None:
    # A process that ignores SIGTERM is killed after the timeout; either way it is reaped.
    stubborn = Process("stubborn", [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"],
                       tmp_path / "stubborn.log").start()
    polite = Process("polite", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "polite.log").start()
    deadline = time.monotonic() + 10
    while "up" not in (tmp_path / "stubborn.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    for proc in (polite, stubborn):
        assert proc.alive()
        proc.stop(timeout=1.0)
        assert not proc.alive() and proc.popen is not None and proc.popen.returncode is not None
        with pytest.raises(ProcessLookupError):
            os.kill(proc.popen.pid, 0)
    assert "stopped (exit" in polite.tail()


def test_known_noise_forgives_metacontroller_cancelling_itself_but_no_failing_hook() -> None:
    from tests.e2e.conftest import KNOWN_NOISE
    noise = [re.compile(p) for p in KNOWN_NOISE]
    sync = "failed to sync Sandbox 'ns/goes': "
    call = sync + 'sync hook failed for Sandbox ns/goes: sync hook failed (version=v2): http error: Post \\"http://127.0.0.1:1/sandbox/sync\\": '
    for line in (sync + "context canceled", call + "context canceled"):  # both as seen on CI
        assert any(p.search(line) for p in noise), line
    for cause in ("context deadline exceeded (Client.Timeout exceeded while awaiting headers)", "dial tcp 127.0.0.1:1: connect: connection refused",
                  "EOF", "response status 500", "http error: 401 Unauthorized"):
        line = call + cause
        assert not any(p.search(line) for p in noise), line
