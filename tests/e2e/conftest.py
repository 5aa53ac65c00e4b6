"""Fixtures of the end-to-end suite: one real control plane for the whole run (started once,
stopped by PID at the end, also on failure), the chart installed into it with `helm install`,
and per test a fresh tenant namespace plus the checks every scenario ends with: Metacontroller
logged no error for the test's objects and no Warning event was recorded in its namespace.

Where the binaries are missing every test here is skipped with one line saying what is missing
and how to get it (docs/e2e.md)."""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

from tests.e2e import fakenode
from tests.e2e.controlplane import ControlPlane, Crash, Settings, bin_dir, install_chart, skip_reason
from tests.e2e.kube import DELETED_NAMESPACES, Kube, delete_namespaces
from tests.e2e.objects import CHILD_CREATE_GRACE_SECONDS, WARM_POD_WAIT_SECONDS, runtime

HOOK_ENV = {
    "LLMSS_WARM_POD_WAIT_SECONDS": str(WARM_POD_WAIT_SECONDS),
    # Refusals reported after 6 s instead of 30: the failure tests wait for them.
    "LLMSS_CHILD_CREATE_GRACE_SECONDS": str(CHILD_CREATE_GRACE_SECONDS),
    "LLMSS_RETAIN_STORAGE_CLASS": fakenode.RETAIN_STORAGE_CLASS,
    "LOG_LEVEL": "INFO",
}
_STACK: dict[str, Any] = {}


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    if skip_reason():
        pytest.skip(f"no real control plane in {bin_dir()} (what is missing and how to get it: the e2e line at the top; docs/e2e.md)")
    workdir = Path(tempfile.mkdtemp(prefix="llmss-e2e-"))
    cp = ControlPlane(workdir, settings=Settings(hook_env=HOOK_ENV))
    _STACK["cp"] = cp
    started = time.monotonic()
    try:
        cp.start()
        install_chart(cp)
        print(f"\n{cp.summary()}; chart installed, {time.monotonic() - started:.1f}s in all")
        yield cp
    finally:
        cp.stop()
        _STACK.pop("cp", None)
        if os.environ.get("LLMSS_E2E_KEEP") or _STACK.get("failed"):
            print(f"\ne2e logs kept in {cp.logs}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def real_node(control_plane: ControlPlane) -> Iterator[Any]:
    """A real node (kubelet, containerd, runc, CNI; tests/e2e/realnode.py) beside the kwok ones,
    started the first time a test asks for it and stopped before the control plane. Skips with
    one line naming what is missing."""
    from tests.e2e import realnode

    reason = realnode.skip_reason(control_plane.bins)
    if reason:
        pytest.skip(reason)
    node = realnode.RealNode(control_plane)
    try:
        node.start(wait=float(os.environ.get("LLMSS_REAL_NODE_WAIT", "0")))  # for another run's node to finish
    except realnode.NodeBusy as exc:
        pytest.skip(f"no real node: {exc}")
    try:
        print(f"\n{node.summary()}")
        yield node
    finally:
        node.stop()


@pytest.fixture()
def on_real_node(real_node: Any, kube: Kube) -> Iterator[Any]:
    """For the test's duration, new pods (our sandbox and warm pods tolerate no taint) land on
    the real node: its taint off, the kwok nodes cordoned (RealNode.scheduling)."""
    with real_node.scheduling():
        yield real_node


@pytest.fixture(scope="session")
def kube(control_plane: ControlPlane) -> Kube:
    k = Kube.connect(control_plane)
    # The controllers run once Metacontroller discovered our CRDs and started each control loop.
    for kind in ("CompositeController", "DecoratorController"):
        for obj in k.list(kind):
            k.wait(f"{kind} {obj['metadata']['name']} started",
                   lambda o=obj, kd=kind: _controller_started(k, kd, o["metadata"]["name"]), timeout=60)
    return k


def _controller_started(k: Kube, kind: str, name: str) -> bool:
    # Until then Metacontroller logs "discovery: can't find resource" errors for our CRDs (it
    # finds new CRDs at its next discovery): expected at install, so tests start after it.
    log = k.cp.processes["metacontroller"].log.read_text(errors="replace")
    return any(f'"msg":"Starting {kind}"' in line and f'"name":"{name}"' in line for line in log.splitlines())


# ---------------------------------------------------------------------------------------------
# Per test: a namespace, and the error checks


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40].strip("-")


class LogWatch:
    """Lines Metacontroller logged at level error since a point in time, without what a known
    crash (controlplane.KNOWN_CRASHES) logged on its way out."""

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        self.path = cp.processes["metacontroller"].log
        self.offset = self.path.stat().st_size
        self.crashes_before = len(cp.crashes)

    def crashes(self) -> list[Crash]:
        return self.cp.crashes[self.crashes_before:]

    def errors(self, *needles: str) -> list[str]:
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            lines = handle.read().decode(errors="replace").splitlines()
        known = [c.output for c in self.crashes() if c.known]  # what a known crash logged on its way out
        out = []
        for line in lines:
            if any(line in o for o in known):
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("level") in ("error", "dpanic", "panic", "fatal") and (not needles or any(n in line for n in needles)):
                out.append(line if len(line) < 1500 else line[:1500] + "...")
        return out


# Races of Kubernetes and Metacontroller themselves (docs/e2e.md, "Known noise"): a late second
# finalize of a parent whose finalizer was just removed, the endpoints controller updating the
# Endpoints of a Service deleted meanwhile, the ClusterIP repair loop meeting a new Service.
KNOWN_NOISE = (
    r"can't remove finalizer for \w+ [^:]+: [\w.]+ \\?\"[^\"\\]+\\?\" not found",
    r"^FailedToUpdateEndpoint: Endpoints/[^:]+: .*Precondition failed: UID in precondition",
    # The API server's ClusterIP repair loop racing with a Service being created (it repairs).
    r"^ClusterIPNotAllocated: Service/[^:]+: Cluster IP \[IPv4\]: [0-9.]+ is not allocated; repairing$",
    # Metacontroller stopping (SIGTERM) or restarting a control loop (a chart upgrade changes its
    # controller) cancels the syncs in flight, and each logs "failed to sync <parent>: context
    # canceled" on the way out, with the cancelled hook call in between when it was waiting for our
    # answer (both seen, 1 run in several). Only Metacontroller cancels its own context: a hook that
    # fails, hangs or refuses shows a status, a timeout or a refused connection instead.
    r"failed to sync \w+ '[^']*': (.*: )?context canceled\b",
)


def _allowed(request: pytest.FixtureRequest) -> list[re.Pattern[str]]:
    return [re.compile(p) for p in KNOWN_NOISE] + [re.compile(p) for m in request.node.iter_markers("allow_errors") for p in m.args]


def check_clean(request: pytest.FixtureRequest, kube: Kube, watch: LogWatch, ns: Optional[str]) -> None:
    """No Metacontroller error mentions the test's namespace (or, without one, none at all) and
    no Warning event was recorded there (SyncError, a refused child, a failed create), except
    what the test provokes on purpose (@pytest.mark.allow_errors)."""
    allowed = _allowed(request)
    errors = [e for e in watch.errors(*([f'"{ns}"', f"{ns}/"] if ns else [])) if not any(p.search(e) for p in allowed)]
    if not ns:  # what the deletion of earlier tests' namespaces logs belongs to those tests
        errors = [e for e in errors if not any(f'"{d}"' in e or f"{d}/" in e or f"namespace {d} " in e for d in DELETED_NAMESPACES)]
    assert not errors, "Metacontroller logged errors:\n" + "\n".join(errors[:10])
    if ns:
        events = [f"{e.get('reason')}: {e.get('involvedObject', {}).get('kind')}/{e.get('involvedObject', {}).get('name')}: "
                  f"{e.get('message')}" for e in kube.events(ns) if e.get("type") == "Warning"]
        events = [w for w in events if not any(p.search(w) for p in allowed)]
        assert not events, "Warning events:\n" + "\n".join(events[:10])


@pytest.fixture(autouse=True)
def _crashes_reported() -> Iterator[None]:
    """Every test while the stack runs: a component that exited and that nothing starts again
    fails it at once (not after its timeouts); a supervised component that crashed meanwhile (and
    was started again) fails the test with the crashed run's output, unless the crash is a known
    upstream defect (controlplane.KNOWN_CRASHES), which is reported as a warning."""
    cp = _STACK.get("cp")  # session fixtures are set up before this one: up if the test uses it
    dead = cp.dead() if cp else []
    if dead:
        raise RuntimeError("the control plane is broken: " + "; ".join(
            f"{p.name} exited (code {p.popen.returncode if p.popen else '?'}) without being stopped:\n{p.tail()}" for p in dead))
    before = len(cp.crashes) if cp else 0
    yield
    crashes = cp.crashes[before:] if cp else []
    unknown = [c.describe() for c in crashes if not c.known]
    assert not unknown, "a component crashed (and was started again):\n" + "\n\n".join(unknown)
    for crash in crashes:
        warnings.warn(f"{crash.name} crashed and was started again: known upstream defect: {crash.known} (KNOWN_CRASHES)")


@pytest.fixture()
def namespace(request: pytest.FixtureRequest, kube: Kube) -> Iterator[str]:
    """A new tenant namespace (hardened by our decorator: Pod Security "restricted", quota,
    default-deny), ready for pods: its default ServiceAccount exists. After a passing test the
    clean-run checks run (check_clean); then the namespace is deleted in the background.
    Parametrize indirectly with a dict to give it annotations (quota sizes)."""
    name = f"e2e-{_slug(request.node.name.removeprefix('test_'))}-{secrets.token_hex(2)}"
    annotations = dict(getattr(request, "param", None) or {})
    watch = LogWatch(kube.cp)
    kube.apply({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": name, "labels": {"llmsafespace.dev/tenant": "true"}, "annotations": annotations}})
    kube.wait(f"namespace {name} hardened and ready", lambda: _tenant_ready(kube, name), timeout=60,
              show=lambda: (kube.core("Namespace", "", name) or {}).get("metadata"))
    yield name
    if not request.node.stash.get(_FAILED, False):
        check_clean(request, kube, watch, name)
    delete_namespaces(kube, name)



@pytest.fixture()
def clean_cluster(request: pytest.FixtureRequest, kube: Kube) -> Iterator[None]:
    """For tests without a namespace of their own: no Metacontroller error at all meanwhile."""
    watch = LogWatch(kube.cp)
    yield
    if not request.node.stash.get(_FAILED, False):
        check_clean(request, kube, watch, None)


@pytest.fixture()
def rte(kube: Kube) -> Iterator[str]:
    """A RuntimeEnvironment of the test's own (they are cluster-scoped), once validated."""
    name = f"python-e2e-{secrets.token_hex(3)}"
    kube.apply(runtime(name))
    kube.wait(f"runtime {name} available",
              lambda: ((kube.custom("RuntimeEnvironment", None, name) or {}).get("status") or {}).get("available") is True, 30)
    yield name
    kube.kubectl("delete", "runtimeenvironment", name, "--ignore-not-found", "--wait=false", check=False)


def _tenant_ready(kube: Kube, name: str) -> bool:
    ns = kube.core("Namespace", "", name) or {}
    meta = ns.get("metadata") or {}
    hardened = (meta.get("annotations") or {}).get("llmsafespace.dev/hardening-status") == "Applied"
    enforced = (meta.get("labels") or {}).get("pod-security.kubernetes.io/enforce") == "restricted"
    return hardened and enforced and kube.core("ServiceAccount", name, "default") is not None


_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    report = yield
    if report.failed:
        item.stash[_FAILED] = True
        _STACK["failed"] = True
        cp: Optional[ControlPlane] = _STACK.get("cp")
        if cp is not None:
            for proc in cp.processes.values():
                state = "running" if proc.alive() else "EXITED"
                report.sections.append((f"{proc.name} log ({state}, last lines)", proc.tail(25)))
    return report
