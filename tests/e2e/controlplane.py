"""A real Kubernetes control plane on 127.0.0.1 for the end-to-end suite (docs/e2e.md).

Starts, in order and each only once the previous one answers its readiness check: etcd,
kube-apiserver, kube-controller-manager (garbage collection, namespaces, service accounts, the
hostPath volume provisioner), kube-scheduler, kwok (a fake node that runs pods without a
kubelet), the hook server the README's way (`./scripts/serve`, with a bearer token file) and
Metacontroller. Every process binds 127.0.0.1 on a free port, writes its log into the run
directory and is stopped by its PID.

The binaries come from one directory, `LLMSS_K8S_BIN` (default `~/.cache/llmss-k8s-bin`); they
are built from other projects' sources and never part of this repository.

Also a command for developers (and the benchmark): `python -m tests.e2e.controlplane up` starts
the stack, installs the chart and prints a KUBECONFIG to use until Ctrl-C."""
from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from tests.procs import die_with_parent

ROOT = Path(__file__).resolve().parents[2]
ENV_BIN = "LLMSS_K8S_BIN"
DEFAULT_BIN = Path.home() / ".cache" / "llmss-k8s-bin"
# What the directory must hold, and where a user gets each from its project's official releases.
REQUIRED: dict[str, str] = {
    "etcd": "etcd 3.6 (envtest assets: `setup-envtest use 1.36.x`, or github.com/etcd-io/etcd releases)",
    "kube-apiserver": "Kubernetes >= 1.33 server binaries (envtest assets, or dl.k8s.io/release/<v>/bin/linux/amd64/)",
    "kube-controller-manager": "Kubernetes server binaries (dl.k8s.io/release/<v>/bin/linux/amd64/kube-controller-manager)",
    "kube-scheduler": "Kubernetes server binaries (dl.k8s.io/release/<v>/bin/linux/amd64/kube-scheduler)",
    "metacontroller": "Metacontroller 4.17.x (/usr/bin/metacontroller in ghcr.io/metacontroller/metacontroller:v4.17.2)",
    "kwok": "kwok 0.8 (github.com/kubernetes-sigs/kwok/releases: kwok-linux-amd64)",
    "metacontroller-crds-v1.yaml": "Metacontroller's CRDs (manifests/production/metacontroller-crds-v1.yaml at tag v4.17.2)",
}
# Other projects' CRDs the egress-backend tests install (tests/e2e/test_e2e_egress.py), from the
# same directory; optional: without them only those tests skip, saying which file and where from.
EGRESS_CRDS: dict[str, str] = {
    "cilium-ciliumnetworkpolicies.yaml": (
        "Cilium's CiliumNetworkPolicy CRD: pkg/k8s/apis/cilium.io/client/crds/v2/ciliumnetworkpolicies.yaml of "
        "github.com/cilium/cilium (a release tag, or the commit in docs/e2e.md)"),
    "network-policy-api-clusternetworkpolicies.yaml": (
        "network-policy-api's ClusterNetworkPolicy CRD, experimental channel: "
        "config/crd/experimental/policy.networking.k8s.io_clusternetworkpolicies.yaml at tag v0.2.0 of "
        "github.com/kubernetes-sigs/network-policy-api"),
}
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
HOOK_TOKEN_ENV = "LLMSS_HOOK_TOKEN"
HOOK_TOKEN_FILE_ENV = "LLMSS_HOOK_TOKEN_FILE"  # as the chart runs it: the Secret mounted as a file
HOSTPATH_PV_DIR = "/tmp/hostpath_pv"  # kube-controller-manager's hostPath provisioner (fixed path)


def bin_dir() -> Path:
    raw = os.environ.get(ENV_BIN, "").strip()
    return Path(raw).expanduser() if raw else DEFAULT_BIN


def missing_binaries(directory: Optional[Path] = None) -> list[str]:
    directory = directory or bin_dir()
    out = []
    for name in REQUIRED:
        path = directory / name
        if not path.is_file() or (not name.endswith(".yaml") and not os.access(path, os.X_OK)):
            out.append(name)
    return out


def skip_reason(directory: Optional[Path] = None) -> Optional[str]:
    """One line saying what is missing and how to get it, or None when everything is there."""
    directory = directory or bin_dir()
    absent = missing_binaries(directory)
    if not absent:
        return None
    where = f"{ENV_BIN}={directory}" if os.environ.get(ENV_BIN) else f"{directory} ({ENV_BIN} unset)"
    how = "; ".join(f"{name}: {REQUIRED[name]}" for name in absent)
    return f"real control plane not found: {where} lacks {', '.join(absent)}. Get them ({how}) - see docs/e2e.md"


def egress_crds_skip_reason(directory: Optional[Path] = None) -> Optional[str]:
    """One line naming the egress-backend CRDs missing from the binaries' directory, or None."""
    directory = directory or bin_dir()
    absent = [name for name in EGRESS_CRDS if not (directory / name).is_file()]
    if not absent:
        return None
    how = "; ".join(f"{name}: {EGRESS_CRDS[name]}" for name in absent)
    return f"egress-backend CRDs not found: {directory} ({ENV_BIN}) lacks {', '.join(absent)}. Get them ({how}) - see docs/e2e.md"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------------
# Certificates, made at run time


@dataclass(frozen=True)
class PKI:
    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_key: Path
    sa_pub: Path
    proxy_ca_cert: Path
    proxy_client_cert: Path
    proxy_client_key: Path


def make_pki(directory: Path) -> PKI:
    """A CA, the API server's serving certificate, an admin client certificate (system:masters)
    and the service-account signing key pair, with ECDSA P-256 keys (fast to make)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)

    def key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def write_key(k: ec.EllipticCurvePrivateKey, name: str) -> Path:
        path = directory / name
        path.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
        path.chmod(0o600)
        return path

    def write_cert(cert: x509.Certificate, name: str) -> Path:
        path = directory / name
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    def name(cn: str, org: Optional[str] = None) -> x509.Name:
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if org:
            attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        return x509.Name(attrs)

    def authority(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        k = key()
        return k, (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(name(cn))
                   .public_key(k.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now).not_valid_after(now + dt.timedelta(days=2))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                                key_encipherment=False, data_encipherment=False, key_agreement=False,
                                                encipher_only=False, decipher_only=False), critical=True)
                   .sign(k, hashes.SHA256()))

    ca_key, ca = authority("llmss-e2e-ca")
    # The front proxy's CA: without it the controller-manager and scheduler log, again and again,
    # that the request-header CA bundle is missing.
    proxy_ca_key, proxy_ca = authority("llmss-e2e-front-proxy-ca")

    def leaf(k: ec.EllipticCurvePrivateKey, subject: x509.Name, usage: Any, sans: Sequence[x509.GeneralName] = (),
             issuer: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] = (ca_key, ca)) -> x509.Certificate:
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer[1].subject).public_key(k.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now)
                   .not_valid_after(now + dt.timedelta(days=2))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        return builder.sign(issuer[0], hashes.SHA256())

    serving_key, admin_key, sa_key, proxy_key = key(), key(), key(), key()
    service_ip = next(ipaddress.ip_network(SERVICE_CIDR).hosts())
    sans = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(service_ip), x509.DNSName("localhost"),
            *(x509.DNSName(n) for n in ("kubernetes", "kubernetes.default", "kubernetes.default.svc",
                                         "kubernetes.default.svc.cluster.local"))]
    serving = leaf(serving_key, name("kube-apiserver"), ExtendedKeyUsageOID.SERVER_AUTH, sans)
    admin = leaf(admin_key, name("llmss-e2e-admin", "system:masters"), ExtendedKeyUsageOID.CLIENT_AUTH)
    proxy_client = leaf(proxy_key, name("front-proxy-client"), ExtendedKeyUsageOID.CLIENT_AUTH, issuer=(proxy_ca_key, proxy_ca))
    sa_pub = directory / "sa.pub"
    sa_pub.write_bytes(sa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                        serialization.PublicFormat.SubjectPublicKeyInfo))
    return PKI(
        ca_cert=write_cert(ca, "ca.crt"), ca_key=write_key(ca_key, "ca.key"),
        serving_cert=write_cert(serving, "apiserver.crt"), serving_key=write_key(serving_key, "apiserver.key"),
        admin_cert=write_cert(admin, "admin.crt"), admin_key=write_key(admin_key, "admin.key"),
        sa_key=write_key(sa_key, "sa.key"), sa_pub=sa_pub, proxy_ca_cert=write_cert(proxy_ca, "front-proxy-ca.crt"),
        proxy_client_cert=write_cert(proxy_client, "front-proxy-client.crt"), proxy_client_key=write_key(proxy_key, "front-proxy-client.key"),
    )


def write_kubeconfig(path: Path, server: str, pki: PKI) -> Path:
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "llmss-e2e",
        "clusters": [{"name": "llmss-e2e", "cluster": {"server": server, "certificate-authority": str(pki.ca_cert)}}],
        "users": [{"name": "admin", "user": {"client-certificate": str(pki.admin_cert), "client-key": str(pki.admin_key)}}],
        "contexts": [{"name": "llmss-e2e", "context": {"cluster": "llmss-e2e", "user": "admin"}}],
    }
    path.write_text(json.dumps(config, indent=1))  # JSON is YAML
    path.chmod(0o600)
    return path


# ---------------------------------------------------------------------------------------------
# Processes


@dataclass
class Process:
    """One component: started with its output in a log file, stopped by its PID."""

    name: str
    argv: list[str]
    log: Path
    env: Optional[dict[str, str]] = None
    cwd: Optional[Path] = None
    popen: Optional[subprocess.Popen[bytes]] = None
    stopping: bool = False  # stop() was called: its exit is ours, not a crash
    log_offset: int = 0  # where this run's output starts in the log (restarts append to it)

    def start(self) -> "Process":
        self.log_offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            out.write(f"--- {time.strftime('%H:%M:%S')} start: {' '.join(self.argv)}\n".encode())
            out.flush()
            # A session of its own: Ctrl-C in a developer's terminal reaches only us, and we stop it.
            self.popen = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          env=self.env, cwd=self.cwd, start_new_session=True, preexec_fn=die_with_parent)
        return self

    @property
    def pid(self) -> Optional[int]:
        return self.popen.pid if self.popen else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def crashed(self) -> bool:
        """It ended without stop() being called."""
        return self.popen is not None and not self.stopping and self.popen.poll() is not None

    def output(self) -> str:
        """What this run of the process wrote (not earlier runs sharing its log)."""
        with self.log.open("rb") as handle:
            handle.seek(self.log_offset)
            return handle.read().decode(errors="replace")

    def again(self) -> "Process":
        """The same command line started anew, writing on in the same log."""
        return Process(self.name, self.argv, self.log, env=self.env, cwd=self.cwd).start()

    def note(self, text: str) -> None:
        with self.log.open("ab") as out:
            out.write(f"--- {time.strftime('%H:%M:%S')} {text}\n".encode())

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`; always reaps the child."""
        if self.popen is None:
            return
        self.stopping = True
        if self.popen.poll() is None:
            try:
                os.kill(self.popen.pid, signal.SIGTERM)
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
            except ProcessLookupError:
                pass
        self.note(f"stopped (exit {self.popen.returncode})")

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])


class NotReady(RuntimeError):
    pass


@dataclass(frozen=True)
class Crash:
    """A supervised component that exited without being stopped, and was restarted."""

    name: str
    code: Optional[int]
    output: str  # what that run of it wrote

    @property
    def known(self) -> Optional[str]:
        """The known upstream defect this crash is, if it is one (KNOWN_CRASHES)."""
        return next((why for name, patterns, why in KNOWN_CRASHES
                     if name == self.name and all(re.search(p, self.output) for p in patterns)), None)

    def describe(self, lines: int = 30, width: int = 400) -> str:
        last = (line if len(line) <= width else line[:width] + "..." for line in self.output.splitlines()[-lines:])
        return f"{self.name} exited (code {self.code}) without being stopped; its last output:\n" + "\n".join(last)


# Metacontroller v4.17.2 panics when one of its control loops stops (its CompositeController's
# spec changed: `helm upgrade` with a new hook URL, say) while it is removing a parent's finalizer.
# Its AtomicUpdate retries with client-go's retry.RetryOnConflict, which reports a cancelled
# context as "interrupted" and returns the last conflict, none on a first attempt: no object and
# no error; syncParentObject then reads the missing parent's UID (makeSelector) and the process
# dies. Its Deployment restarts it and the finalizer is removed again; the e2e suite does the
# same (ControlPlane.supervise) and reports each such crash as a warning (docs/e2e.md).
KNOWN_CRASHES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("metacontroller", (r"panic: runtime error: invalid memory address or nil pointer dereference",
                        r"\(\*Unstructured\)\.GetUID", r"\(\*parentController\)\.makeSelector",
                        r"\(\*parentController\)\.syncParentObject"),
     "Metacontroller v4.17.2: nil parent after a finalizer removal cancelled by a control loop stopping"),
)


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.1,
               process: Optional[Process] = None) -> Any:
    """Call `check` until it returns something truthy; raise NotReady naming `what` (with the
    process's log tail when it died or never became ready)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - a check that cannot answer yet is "not yet"
            last = exc
        if process is not None and not process.alive():
            raise NotReady(f"{process.name} exited (code {process.popen.returncode if process.popen else '?'}) "
                           f"before {what}:\n{process.tail()}")
        if time.monotonic() > deadline:
            tail = f"\n{process.name} log:\n{process.tail()}" if process is not None else ""
            raise NotReady(f"not {what} within {timeout:.0f}s (last: {last!r}){tail}")
        time.sleep(interval)


def http_ok(url: str, context: Optional[ssl.SSLContext] = None, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            return bool(200 <= response.status < 300)
    except (urllib.error.URLError, OSError):
        return False


# ---------------------------------------------------------------------------------------------
# The stack


# Metacontroller's workers and client-go rate limit: its defaults (5 workers, QPS 5, burst 10)
# make every sync wait for requests (each sync GETs its parent, a status write is a GET and a PUT,
# plus the finalizer and every child: ~14 requests per sandbox): a handful of sandboxes created at
# once took 15 s. docs/install.md recommends these (figures in docs/benchmark.md, `bench/run e2e`);
# the suite runs what it recommends.
METACONTROLLER_CLIENT_ARGS = ("-workers=10", "-client-go-qps=300", "-client-go-burst=600")


@dataclass
class Settings:
    """What a run may tune: the hook server's configuration and Metacontroller's flags."""

    hook_env: dict[str, str] = field(default_factory=dict)
    hook_workers: int = 2
    metacontroller_args: list[str] = field(default_factory=lambda: list(METACONTROLLER_CLIENT_ARGS))


class ControlPlane:
    def __init__(self, workdir: Path, bins: Optional[Path] = None, settings: Optional[Settings] = None) -> None:
        self.bins = bins or bin_dir()
        self.workdir = workdir
        self.settings = settings or Settings()
        self.logs = workdir / "logs"
        self.processes: dict[str, Process] = {}
        self.ports = {name: free_port() for name in (
            "etcd", "etcd-peer", "apiserver", "kcm", "scheduler", "kwok", "hooks", "mc-metrics", "mc-health")}
        self.token = secrets.token_urlsafe(32)
        self.token_file = workdir / "hook-token"
        self.pki: Optional[PKI] = None
        self.kubeconfig = workdir / "kubeconfig"
        self.started_at: dict[str, float] = {}
        self.crashes: list[Crash] = []
        self._supervised: set[str] = set()
        self._supervisor: Optional[threading.Thread] = None
        self._shutdown = threading.Event()
        self._lock = threading.Lock()

    # -- paths and clients ------------------------------------------------------------------------
    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    @property
    def hook_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['hooks']}"

    def binary(self, name: str) -> str:
        return str(self.bins / name)

    def kubectl_binary(self) -> str:
        own = self.bins / "kubectl"  # the server's own version when the directory has one
        if own.is_file() and os.access(own, os.X_OK):
            return str(own)
        found = shutil.which("kubectl") or str(ROOT / ".tools" / "bin" / "kubectl")
        return found

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(self, *args: str, input: Optional[str] = None, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self.kubectl_binary(), *args], input=input, capture_output=True, text=True,
                              env=self.env(), timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def tls(self) -> ssl.SSLContext:
        """A client context: trusts the cluster CA, authenticates as the admin."""
        assert self.pki is not None
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        ctx.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        return ctx

    @staticmethod
    def _insecure() -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # the components' self-signed health endpoints on loopback
        return ctx

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> "ControlPlane":
        self.logs.mkdir(parents=True, exist_ok=True)
        try:
            self.pki = make_pki(self.workdir / "pki")
            write_kubeconfig(self.kubeconfig, self.server, self.pki)
            self._start_etcd()
            self._start_apiserver()
            self._start_controller_manager()
            self._start_scheduler()
            self._start_kwok()
            self._start_hooks()
            self._install_metacontroller_crds()
            self._start_metacontroller()
            self.supervise("metacontroller")
            self._prepare_cluster()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every process, newest first, by PID."""
        self._shutdown.set()
        if self._supervisor is not None:
            self._supervisor.join()
        self.remove_volume_dirs()
        for proc in reversed(list(self.processes.values())):
            proc.stop()

    def supervise(self, name: str, interval: float = 0.2) -> None:
        """Start `name` again whenever it exits without being stopped, as its Deployment would in
        a cluster, and record the crash in `crashes` (the suite fails the test it happened in,
        unless it is a known upstream defect). Stops with stop()."""
        self._supervised.add(name)
        if self._supervisor is None:
            self._supervisor = threading.Thread(target=self._supervise, args=(interval,), name="e2e-supervisor", daemon=True)
            self._supervisor.start()

    def _supervise(self, interval: float) -> None:
        while not self._shutdown.wait(interval):
            for name in sorted(self._supervised):
                with self._lock:
                    proc = self.processes.get(name)
                    if proc is None or not proc.crashed() or self._shutdown.is_set():
                        continue
                    code = proc.popen.returncode if proc.popen else None
                    self.crashes.append(Crash(name, code, proc.output()))
                    proc.note(f"exited (code {code}) without being stopped: started again, as its Deployment would")
                    self.processes[name] = proc.again()

    def dead(self) -> list[Process]:
        """Components that exited without being stopped and that nothing starts again."""
        return [p for n, p in self.processes.items() if p.crashed() and n not in self._supervised]

    def remove_volume_dirs(self, *names: str) -> None:
        """The hostPath provisioner keeps volumes in directories under /tmp/hostpath_pv that
        outlive the cluster: remove those of the named PersistentVolumes (default: all of them)."""
        if "kube-apiserver" not in self.processes or not self.processes["kube-apiserver"].alive():
            return
        proc = self.kubectl("get", "pv", *names, "-o", "json", "--ignore-not-found", check=False)
        if proc.returncode != 0 or not proc.stdout.strip():
            return
        data = json.loads(proc.stdout)
        for pv in data["items"] if "items" in data else [data]:
            path = ((pv.get("spec") or {}).get("hostPath") or {}).get("path", "")
            if path.startswith(HOSTPATH_PV_DIR + "/") and ".." not in path:
                shutil.rmtree(path, ignore_errors=True)

    def _run(self, name: str, argv: list[str], ready: Callable[[], Any], timeout: float, *,
             env: Optional[dict[str, str]] = None, cwd: Optional[Path] = None) -> Process:
        t0 = time.monotonic()
        proc = Process(name, argv, self.logs / f"{name}.log", env=env, cwd=cwd).start()
        self.processes[name] = proc
        wait_until(ready, timeout, f"{name} ready", process=proc)
        self.started_at[name] = time.monotonic() - t0
        return proc

    def restart(self, name: str, down_seconds: float = 0.0) -> Process:
        """Stop one component by PID, leave it down for `down_seconds`, and start it again with
        the same command line."""
        with self._lock:  # not while the supervisor replaces it
            old = self.processes[name]
            old.stop()
        time.sleep(down_seconds)
        with self._lock:
            fresh = old.again()
            self.processes[name] = fresh
        wait_until(self._readiness(name), 90, f"{name} ready again", process=fresh)
        return fresh

    def start_second_hook_server(self) -> Process:
        """Another hook server on a new port (a new release of the hooks); hook_url names it
        from now on. The old one keeps running until stop_hook_server(old)."""
        old = self.processes.pop("hooks")
        self.processes[f"hooks-{old.pid}"] = old
        self.ports["hooks"] = free_port()
        self._start_hooks()
        return old

    def _readiness(self, name: str) -> Callable[[], Any]:
        checks: dict[str, Callable[[], Any]] = {
            "hooks": lambda: http_ok(f"{self.hook_url}/readyz"),
            "metacontroller": lambda: http_ok(f"http://127.0.0.1:{self.ports['mc-health']}/readyz"),
        }
        return checks[name]

    def _start_etcd(self) -> None:
        p = self.ports
        self._run("etcd", [
            self.binary("etcd"), "--name=e2e", f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{p['etcd']}", f"--advertise-client-urls=http://127.0.0.1:{p['etcd']}",
            f"--listen-peer-urls=http://127.0.0.1:{p['etcd-peer']}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{p['etcd-peer']}",
            f"--initial-cluster=e2e=http://127.0.0.1:{p['etcd-peer']}", "--initial-cluster-state=new",
            # A throw-away store: no fsync keeps writes cheap on a shared 2-core machine.
            "--unsafe-no-fsync=true", "--quota-backend-bytes=2147483648", "--log-level=warn",
        ], lambda: http_ok(f"http://127.0.0.1:{p['etcd']}/health"), 30)

    def _start_apiserver(self) -> None:
        assert self.pki is not None
        pki, p = self.pki, self.ports
        self._run("kube-apiserver", [
            self.binary("kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{p['etcd']}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={p['apiserver']}",
            f"--tls-cert-file={pki.serving_cert}", f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            f"--service-account-key-file={pki.sa_pub}", f"--service-account-signing-key-file={pki.sa_key}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            # Real authorization and the default admission plugins (PodSecurity, ServiceAccount,
            # LimitRanger, ResourceQuota, RuntimeClass, DefaultStorageClass, ...): what users run.
            "--authorization-mode=Node,RBAC", f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=false", "--profiling=false", "--endpoint-reconciler-type=none",
            f"--requestheader-client-ca-file={pki.proxy_ca_cert}", "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki.proxy_client_cert}", f"--proxy-client-key-file={pki.proxy_client_key}",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            # A real node (tests/e2e/realnode.py): reached at its InternalIP (not its name through
            # DNS), authenticated with a certificate of the cluster CA; harmless without one.
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-client-certificate={pki.admin_cert}", f"--kubelet-client-key={pki.admin_key}",
        ], lambda: http_ok(f"{self.server}/readyz", self.tls()), 120)

    def _start_controller_manager(self) -> None:
        assert self.pki is not None
        kc = str(self.kubeconfig)
        self._run("kube-controller-manager", [
            self.binary("kube-controller-manager"), f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1", f"--secure-port={self.ports['kcm']}", "--leader-elect=false",
            f"--service-account-private-key-file={self.pki.sa_key}", f"--root-ca-file={self.pki.ca_cert}",
            "--use-service-account-credentials=true", "--controllers=*",
            # Persistent sandboxes need claims that bind: the in-tree hostPath provisioner serves
            # StorageClasses with provisioner kubernetes.io/host-path (paths under /tmp).
            "--enable-hostpath-provisioner=true",
            f"--cluster-signing-cert-file={self.pki.ca_cert}", f"--cluster-signing-key-file={self.pki.ca_key}",
            f"--cert-dir={self.workdir / 'kcm-certs'}",
        ], lambda: http_ok(f"https://127.0.0.1:{self.ports['kcm']}/healthz", self._insecure()), 90)

    def _start_scheduler(self) -> None:
        kc = str(self.kubeconfig)
        self._run("kube-scheduler", [
            self.binary("kube-scheduler"), f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1", f"--secure-port={self.ports['scheduler']}", "--leader-elect=false",
            f"--cert-dir={self.workdir / 'scheduler-certs'}",
        ], lambda: http_ok(f"https://127.0.0.1:{self.ports['scheduler']}/healthz", self._insecure()), 90)

    def _start_kwok(self) -> None:
        from tests.e2e import fakenode

        stages = fakenode.write_stages(self.workdir / "kwok-stages.yaml")
        home = self.workdir / "kwok-home"  # kwok keeps state under $HOME/.kwok
        home.mkdir(exist_ok=True)
        self._run("kwok", [
            self.binary("kwok"), f"--kubeconfig={self.kubeconfig}", f"--config={stages}",
            "--manage-all-nodes=false", f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
            "--node-ip=127.0.0.1", "--node-lease-duration-seconds=40", f"--cidr={POD_CIDR}",
            f"--server-address=127.0.0.1:{self.ports['kwok']}",
        ], lambda: http_ok(f"http://127.0.0.1:{self.ports['kwok']}/healthz"), 60, env={**os.environ, "HOME": str(home)})

    def rotate_token(self) -> str:
        """A new token in the hook server's token file, written as the kubelet updates a mounted
        Secret (a new file renamed over the old); what Metacontroller sends is the chart's
        business (install_chart with the new cp.token)."""
        self.token = secrets.token_urlsafe(32)
        self._write_token()
        return self.token

    def _write_token(self) -> None:
        fresh = self.token_file.with_name(self.token_file.name + ".new")
        fresh.write_text(self.token + "\n")
        os.replace(fresh, self.token_file)

    def _start_hooks(self) -> None:
        self.start_hook_server("hooks", self.ports["hooks"])

    def start_hook_server(self, name: str, port: int) -> Process:
        """A hook server the README's way on 127.0.0.1:`port` (tests/e2e/replicas.py starts several)."""
        if not self.token_file.exists():
            self._write_token()
        env = {**os.environ, **self.settings.hook_env, HOOK_TOKEN_FILE_ENV: str(self.token_file),
               "BIND": f"127.0.0.1:{port}", "WORKERS": str(self.settings.hook_workers),
               # One directory per server: scripts/serve empties it at start.
               "PROMETHEUS_MULTIPROC_DIR": str(self.workdir / f"hook-metrics-{port}")}
        env.pop(HOOK_TOKEN_ENV, None)
        return self._run(name, [str(ROOT / "scripts" / "serve")], lambda: http_ok(f"http://127.0.0.1:{port}/readyz"), 120,
                         env=env, cwd=ROOT)

    def _install_metacontroller_crds(self) -> None:
        self.kubectl("apply", "--server-side", "-f", str(self.bins / "metacontroller-crds-v1.yaml"))
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                     "crd/compositecontrollers.metacontroller.k8s.io", "crd/decoratorcontrollers.metacontroller.k8s.io")

    def _start_metacontroller(self) -> None:
        p = self.ports
        self._run("metacontroller", [
            self.binary("metacontroller"), f"-kubeconfig={self.kubeconfig}",
            # Its defaults listen on every interface: loopback only.
            f"-metrics-address=127.0.0.1:{p['mc-metrics']}", f"-health-probe-bind-address=127.0.0.1:{p['mc-health']}",
            "-pprof-address=0",
            # New CRDs (ours, installed after it starts) are found at the next discovery.
            "-discovery-interval=2s", "-cache-flush-interval=30m", "-zap-log-level=info",
            *self.settings.metacontroller_args,
        ], self._readiness("metacontroller"), 60)

    def _prepare_cluster(self) -> None:
        """What a cluster of users' has and a bare control plane lacks: a node (kwok), the
        gVisor RuntimeClass, storage classes with a provisioner, the DNS namespace."""
        from tests.e2e import fakenode

        self.kubectl("apply", "-f", "-", input=fakenode.cluster_objects())
        wait_until(lambda: self.kubectl("wait", "--for=condition=Ready", "--timeout=2s", "node", "--all",
                                        check=False).returncode == 0, 60, "fake nodes ready", process=self.processes["kwok"])
        wait_until(lambda: self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0,
                   60, "service-account controller running", process=self.processes["kube-controller-manager"])

    def summary(self) -> str:
        parts = [f"{name} {secs:.1f}s" for name, secs in self.started_at.items()]
        return f"control plane at {self.server} (logs in {self.logs}); ready after: " + ", ".join(parts)


# ---------------------------------------------------------------------------------------------
# The chart, installed as a user does


RELEASE = "llmsafespace"
RELEASE_NAMESPACE = "llmsafespace"


def helm_binary() -> str:
    return shutil.which("helm") or str(ROOT / ".tools" / "bin" / "helm")


def install_chart(cp: ControlPlane, *extra: str, upgrade: bool = False) -> subprocess.CompletedProcess[str]:
    """`helm install` (or upgrade) of chart/ with the webhooks pointed at the loopback hook
    server and the bearer token the server was started with."""
    verb = ["upgrade", "--install"] if upgrade else ["install"]
    argv = [helm_binary(), *verb, RELEASE, str(ROOT / "chart"), "--namespace", RELEASE_NAMESPACE, "--create-namespace",
            "--set", f"externalHookServer.url={cp.hook_url}", "--set", f"hookAuth.token={cp.token}", *extra]
    proc = subprocess.run(argv, capture_output=True, text=True, env=cp.env(), timeout=180)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def main(argv: Optional[list[str]] = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.e2e.controlplane", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "check"], help="up: start and install, wait for Ctrl-C; check: say what is missing")
    parser.add_argument("--workdir", type=Path, help="run directory (default: a new temporary one)")
    parser.add_argument("--no-chart", action="store_true", help="start the control plane only")
    parser.add_argument("--real-node", action="store_true", help="also a real node: kubelet, containerd, runc (tests/e2e/realnode.py)")
    args = parser.parse_args(argv)
    from tests.e2e import realnode

    reason = skip_reason() or (realnode.skip_reason() if args.real_node else None)
    if args.command == "check" or reason:
        print(reason or f"all binaries found in {bin_dir()}")
        return 1 if reason else 0
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="llmss-e2e-"))
    if args.workdir and workdir.exists() and any(workdir.iterdir()):
        print(f"{workdir} is not empty: every run starts a fresh cluster in an empty directory", file=sys.stderr)
        return 2
    cp = ControlPlane(workdir)
    node: Optional[realnode.RealNode] = None
    stop = False

    def on_signal(signum: int, frame: Any) -> None:  # noqa: ARG001
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        cp.start()
        if not args.no_chart:
            install_chart(cp)
        print(cp.summary())
        if args.real_node:
            node = realnode.RealNode(cp).start()
            print(node.summary())
        print(f"export KUBECONFIG={cp.kubeconfig}\nhook server: {cp.hook_url} (token in {cp.token_file}: {cp.token})\n"
              "Ctrl-C stops everything.", flush=True)
        while not stop and all(p.alive() for p in cp.processes.values()):
            time.sleep(0.5)
        dead = [p.name for p in cp.processes.values() if not p.alive()]
        if dead:
            print(f"exited: {', '.join(dead)}; see {cp.logs}", file=sys.stderr)
    finally:
        if node is not None:
            node.stop()
        cp.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
