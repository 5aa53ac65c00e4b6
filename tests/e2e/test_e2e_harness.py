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
from typing import Callable

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.e2e import fakenode
from tests.e2e.controlplane import ENV_BIN, REQUIRED, ControlPlane, Crash, Process, make_pki, missing_binaries, skip_reason


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


def _wait_for(check: Callable[[], object], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_supervised_component_that_crashes_is_started_again_and_one_stopped_on_purpose_is_not(tmp_path: Path) -> None:
    # Crashes on its first run only (a marker file), like a component hitting a race once.
    marker = tmp_path / "crashed-once"
    program = (f"import pathlib, sys, time\nm = pathlib.Path({str(marker)!r})\n"
               "if not m.exists():\n    m.write_text('x'); print('boom', flush=True); sys.exit(2)\n"
               "print('up', flush=True); time.sleep(60)")
    cp = ControlPlane(tmp_path)
    first = cp.processes["flaky"] = Process("flaky", [sys.executable, "-c", program], tmp_path / "flaky.log").start()
    other = cp.processes["other"] = Process("other", [sys.executable, "-c", "import sys; sys.exit(5)"], tmp_path / "other.log").start()
    try:
        cp.supervise("flaky", interval=0.02)
        _wait_for(lambda: cp.processes["flaky"] is not first and cp.processes["flaky"].alive(), "the restart")
        (crash,) = cp.crashes
        assert (crash.name, crash.code, crash.known) == ("flaky", 2, None)
        assert "\nboom\n" in crash.output and "\nup\n" not in crash.output, "the crash keeps its own run's output"
        assert "started again" in (tmp_path / "flaky.log").read_text()
        _wait_for(lambda: not other.alive(), "the unsupervised process to exit")
        assert cp.dead() == [other], "an unsupervised component that exited is reported dead"
        restarted = cp.processes["flaky"]
        restarted.stop()
        time.sleep(0.2)
        assert cp.processes["flaky"] is restarted and not restarted.alive() and len(cp.crashes) == 1, "stopped on purpose: left down"
    finally:
        cp.stop()
    assert cp._supervisor is not None and not cp._supervisor.is_alive()
    for proc in (first, other, cp.processes["flaky"]):
        assert proc.popen is not None and proc.popen.returncode is not None


# The end of Metacontroller v4.17.2's output when it crashed in the e2e suite (addresses shortened).
_MC_PANIC = """panic: runtime error: invalid memory address or nil pointer dereference [recovered, repanicked]
[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x12de832]
k8s.io/apimachinery/pkg/apis/meta/v1/unstructured.(*Unstructured).GetUID(...)
\tk8s.io/apimachinery@v0.36.2/pkg/apis/meta/v1/unstructured/unstructured.go:275
metacontroller/pkg/controller/composite.(*parentController).makeSelector(0x3e4f, 0x0, 0x0)
\tmetacontroller/pkg/controller/composite/controller.go:758 +0xb2
metacontroller/pkg/controller/composite.(*parentController).syncParentObject(0x3e4f, {0x2265, 0x3e4f}, 0x3e4f)
\tmetacontroller/pkg/controller/composite/controller.go:686 +0x73a
"""


def test_only_the_known_upstream_crash_is_forgiven() -> None:
    assert Crash("metacontroller", 2, _MC_PANIC).known is not None
    assert Crash("hooks", 2, _MC_PANIC).known is None, "known for Metacontroller only"
    other_panic = _MC_PANIC.replace("(*parentController).makeSelector", "RelativeObjectMap.Insert")
    assert Crash("metacontroller", 2, other_panic).known is None
    assert Crash("metacontroller", 1, "F1201 fatal: out of memory\n").known is None
