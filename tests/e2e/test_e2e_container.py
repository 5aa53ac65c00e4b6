"""The images under a real container runtime (containerd + runc, tests/e2e/container.py), with
the restrictions our pods carry: what the process really is (uid, capabilities, seccomp, user
namespace, writable paths), the reference runtime passing the conformance check, and signals.
Skipped, with one line saying what is missing, without containerd/runc in LLMSS_K8S_BIN or the
images of scripts/build-images."""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from runtime import auth
from tests.e2e.container import PROBE_IMAGE, RUNTIME_IMAGE, USERNS_BASE, ContainerRuntime, new_workdir, skip_reason, whoami

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def containers() -> Iterator[ContainerRuntime]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    rt = ContainerRuntime(new_workdir())
    try:
        rt.start()
        rt.import_images()
        yield rt
    finally:
        rt.stop()
        if os.environ.get("LLMSS_E2E_KEEP"):
            print(f"\ncontainer logs kept in {rt.workdir}")
        else:
            shutil.rmtree(rt.workdir, ignore_errors=True)


def test_a_sandbox_container_runs_as_our_pods_say(containers: ContainerRuntime) -> None:
    """The process itself: uid 1000, no capability, no new privileges, seccomp filtering, its own
    user namespace (not the identity map), a read-only root and exactly the writable paths."""
    probe = containers.run(PROBE_IMAGE, "hardened")
    me = whoami(containers.wait_http(probe, "/whoami"))
    assert (me["uid"], me["gid"]) == (1000, 1000)
    assert int(str(me["CapEff"]), 16) == 0
    assert me["NoNewPrivs"] == 1 and me["Seccomp"] == 2  # 2: a filter is in force
    uid_map = str(me["uid_map"]).split()
    assert uid_map == ["0", str(USERNS_BASE), "65536"], uid_map  # not "0 0 4294967295"
    assert me["writable"] == {"/": False, "/tmp": True, "/workspace": True, "$HOME": True, "/data": False}
    # And from outside: the container's uid 1000 is an unprivileged id of the machine.
    status = Path(f"/proc/{probe.pid}/status").read_text()
    host_uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
    assert int(host_uid) == USERNS_BASE + 1000


def test_the_reference_runtime_keeps_the_contract_in_a_container(containers: ContainerRuntime, tmp_path: Path) -> None:
    """scripts/build-images' runtime image, started as a pod starts it (the platform's variables
    of docs/runtime-contract.md), passes `python -m conformance` against its endpoint."""
    key = Ed25519PrivateKey.generate()
    key_file = tmp_path / "gateway.pem"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    env = {"LLMSS_GATEWAY_PUBLIC_KEYS": auth.public_key_b64(key), "LLMSS_POD_UID": "pod-e2e-1", "LLMSS_RUNTIME_WRITABLE": "/tmp:/workspace"}
    rt = containers.run(RUNTIME_IMAGE, "runtime", env=env)
    containers.wait_http(rt, "/health")
    out = containers.in_netns(rt, [sys.executable, "-m", "conformance", "http://127.0.0.1:8080", "--key", str(key_file),
                                   "--pod-uid", "pod-e2e-1"], env={"PYTHONPATH": str(ROOT)}, timeout=300)
    print(out.stdout)
    assert out.returncode == 0, out.stdout + out.stderr + containers.log_tail(rt.log.name)
    kept = re.search(r"^(\d+)/(\d+) rules kept$", out.stdout, re.M)
    assert kept and kept.group(1) == kept.group(2) and int(kept.group(2)) >= 11, out.stdout
    # A call signed for another pod is refused by the containerised runtime too.
    wrong = containers.in_netns(rt, [sys.executable, "-m", "conformance", "http://127.0.0.1:8080", "--key", str(key_file),
                                     "--pod-uid", "another-pod"], env={"PYTHONPATH": str(ROOT)}, timeout=300)
    assert wrong.returncode == 1 and "FAIL" in wrong.stdout


def test_sigterm_stops_the_runtime_within_the_grace_period(containers: ContainerRuntime) -> None:
    """What the kubelet does at deletion: SIGTERM to PID 1 of the container; the runtime exits 0
    well inside our pods' grace period."""
    key = Ed25519PrivateKey.generate()
    rt = containers.run(RUNTIME_IMAGE, "runtime-term", env={"LLMSS_GATEWAY_PUBLIC_KEYS": auth.public_key_b64(key), "LLMSS_POD_UID": "p"})
    containers.wait_http(rt, "/ready")
    containers.kill(rt, "SIGTERM")
    assert containers.wait_exit(rt, timeout=30) == 0


def test_a_container_that_ignores_sigterm_keeps_running_until_killed(containers: ContainerRuntime) -> None:
    """The other side of the grace period: SIGTERM alone does not stop such a process (the
    kubelet's SIGKILL at the deadline does), so the runtime's own prompt exit above is a property
    of the runtime, not of the test."""
    stubborn = containers.run(PROBE_IMAGE, "stubborn", env={"PROBE_IGNORE_SIGTERM": "1"})
    containers.wait_http(stubborn, "/health")
    containers.kill(stubborn, "SIGTERM")
    assert containers.wait_exit(stubborn, timeout=3) is None
    assert json.loads(containers.wait_http(stubborn, "/whoami"))["uid"] == 1000
    containers.kill(stubborn, "SIGKILL")
    assert containers.wait_exit(stubborn, timeout=30) == 137


def test_a_container_over_its_memory_limit_is_oom_killed(containers: ContainerRuntime) -> None:
    """The memory limit our pods carry is enforced by the kernel: allocating past it kills the
    process (exit 137), it does not merely fail an allocation."""
    hungry = containers.run(PROBE_IMAGE, "hungry", memory_bytes=64 * 1024 * 1024)
    containers.wait_http(hungry, "/health")
    try:
        containers.http_get(hungry, "/alloc?mb=256", timeout=20)
    except OSError:
        pass  # the connection dies with the process
    assert containers.wait_exit(hungry, timeout=60) == 137


def test_the_examples_preload_scripts_run_in_the_reference_image(containers: ContainerRuntime) -> None:
    """Every preloadScript of examples/ runs as the warm pod's init container runs it (`/bin/sh -c`,
    the pod's restrictions) and exits 0 in the image the example runtime names: the real node
    found `python -c ...` failing (Debian's python3 package has no `python`), so every warm pod
    of the example pool crash-looped in its init container."""
    import yaml

    scripts = [(doc["metadata"]["name"], p["name"], p["script"]) for path in sorted((ROOT / "examples").glob("*.yaml"))
               for doc in yaml.safe_load_all(path.read_text()) if doc and doc.get("kind") == "WarmPool"
               for p in (doc.get("spec") or {}).get("preloadScripts") or []]
    assert scripts, "no preload scripts in examples/"
    for pool, name, script in scripts:
        run = containers.run(RUNTIME_IMAGE, f"preload-{pool}-{name}", args=("/bin/sh", "-c", script))
        assert containers.wait_exit(run, timeout=120) == 0, (pool, name, script, containers.log_tail(run.log.name))
