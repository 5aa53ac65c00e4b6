"""A real node beside the kwok ones (docs/e2e.md, "The real node"): kubelet, containerd (>= 2.0),
runc (>= 1.2), the CNI bridge/host-local/loopback plugins, and, where their binaries are there,
kube-proxy (Services from pods) and kube-network-policies (NetworkPolicy enforcement). Started and
stopped by the harness like the other components: by PID, logs in the control plane's log
directory, readiness checked (the Node Ready in the API server).

The node registers tainted (`llmsafespace.dev/e2e-node=real:NoSchedule`) and labelled
(`llmsafespace.dev/e2e-node=real`), so nothing lands on it but what a test places there: pods
that tolerate the taint, or our sandbox and warm pods (which tolerate nothing) while
`RealNode.scheduling()` has the kwok nodes cordoned and the real node untainted.

The machine's own state stays as it was:
- containerd runs in a private mount namespace (`unshare -m --propagation private`) in which the
  paths it and the kubelet write whatever their configuration says are covered: a tmpfs on
  /run/containerd (shim sockets) and /var/lib/cni (CNI results), the run directory's kubelet root
  bound on /var/lib/kubelet (device plugins' socket) as a shared mount; the kubelet runs in a
  child namespace of that one (`--propagation unchanged`: its volume mounts reach containerd),
  with copies of vm.overcommit_memory, kernel.panic and kernel.panic_on_oops holding its expected
  values bound over the /proc/sys files (`protectKernelDefaults: true`: it checks instead of
  writing them) and the run directory bound on /var/log. The /proc cover is in the kubelet's
  namespace only: runc (containerd's) could not mount /proc in a user namespace under it.
  Empty mount points made on the machine for this (/run/containerd, /var/lib/cni,
  /var/lib/kubelet) are removed at stop.
- the node's address is 10.251.0.1/32 on a bridge without ports (no dummy module here; kubelet
  refuses a loopback address); pods get 10.252.0.0/24 on another bridge holding the gateway
  10.252.0.1, with no default route and no masquerade. net.ipv4.ip_forward stays 0. With
  kube-proxy, a pod's packet to a ClusterIP goes to the gateway and is DNATed back onto the bridge:
  this kernel drops such bridged-and-DNATed packets unless the bridge itself forwards
  (net.ipv4.conf.llmss-pods.forwarding=1, a setting of our bridge that goes with it), so first a
  table of our own (inet llmss-node) drops anything routed from the pod bridge to another
  interface or the other way: no packet leaves the machine (a ClusterIP without endpoints, or one
  whose endpoints are kwok's fake addresses, goes nowhere).
- cgroups under /<cgroup root> of our own in every hierarchy (made beforehand in each v1
  controller, as the kubelet requires), removed at stop; the machine's cgroups are not touched.
- the kubelet writes no sysctl (`protectKernelDefaults`), no iptables chain
  (`makeIPTablesUtilChains: false`); kube-proxy changes no conntrack setting (all zeros) and keeps
  its nftables tables, kube-network-policies its one table, both deleted at stop.
- what a crashed run left behind is listed in the lock file /run/lock/llmss-real-node.lock
  (which also keeps two suites from running a node at once) and removed by the next start.

Stop: the node is cordoned, its pods deleted (the kubelet stops them and releases their network),
the kubelet stopped, every container left killed through containerd, the shims (which outlive
containerd) killed by our socket path, containerd stopped, then cgroups, bridges, tables, mount
points and the run directory removed."""
from __future__ import annotations

import datetime as dt
import fcntl
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from tests.e2e.container import CONTAINERD_RUN_DIR, IMAGE_ARCHIVES, IMAGES_DIR, PROBE_IMAGE, RUNTIME_IMAGE, _pids_with, task_list
from tests.e2e.controlplane import (KWOK_NODE_ANNOTATION, SERVICE_CIDR, ControlPlane, NotReady, PKI, Process, bin_dir, free_port,
                                    wait_until)

NODE_NAME = "llmss-real-0"
LABEL_KEY, LABEL_VALUE = "llmsafespace.dev/e2e-node", "real"
TAINT = {"key": LABEL_KEY, "value": LABEL_VALUE, "effect": "NoSchedule"}
NODE_BRIDGE, NODE_IP = "llmss-node0", "10.251.0.1"
POD_BRIDGE, POD_SUBNET, POD_GATEWAY = "llmss-pods", "10.252.0.0/24", "10.252.0.1"
CLUSTER_DOMAIN = "cluster.local"
# kube-dns' usual address: pods' resolv.conf names it (without clusterDNS the kubelet records a
# MissingClusterDNS Warning event for every pod); a DNS pod behind a Service of that ClusterIP
# makes it answer.
CLUSTER_DNS = str(ipaddress.ip_network(SERVICE_CIDR)[10])
PAUSE_IMAGE = "localhost/llmsafespace/pause:1"
NODE_IMAGES = {**IMAGE_ARCHIVES, PAUSE_IMAGE: "pause.tar"}
# Imported too when scripts/build-images made them (the tests that use one skip without it).
GATEWAY_IMAGE = "localhost/llmsafespace/gateway:dev"
OPTIONAL_IMAGES = {GATEWAY_IMAGE: "gateway.tar"}
LOCK_FILE = Path("/run/lock/llmss-real-node.lock")
CGROUP_FS = Path("/sys/fs/cgroup")
# What the kubelet expects of these (protectKernelDefaults checks them); copies holding these
# values are bound over the /proc/sys files in the kubelet's mount namespace only.
KERNEL_DEFAULTS = {"vm/overcommit_memory": "1", "vm/panic_on_oom": "0", "kernel/panic": "10", "kernel/panic_on_oops": "1",
                   "kernel/keys/root_maxkeys": "1000000", "kernel/keys/root_maxbytes": "25000000"}
# Directories containerd 2.3 and kubelet 1.36 use whatever their configuration says: covered in
# the private mount namespace (a tmpfs, or the run directory's copy for the kubelet root).
TMPFS_COVERS = (CONTAINERD_RUN_DIR, Path("/var/lib/cni"))
KUBELET_ROOT = Path("/var/lib/kubelet")
NFT_TABLES = (("inet", "kube-network-policies"), ("ip", "kube-proxy"), ("ip6", "kube-proxy"), ("inet", "llmss-node"))
# Our own table: nothing routed between the pod bridge and any other interface (kube-proxy's DNAT
# to a pod on the bridge needs forwarding on the bridge itself; this keeps everything else in).
GUARD_TABLE = ("inet", "llmss-node")

REQUIRED: dict[str, str] = {
    "kubelet": "Kubernetes node binaries, the API server's version (dl.k8s.io/release/<v>/bin/linux/amd64/kubelet)",
    "containerd": "containerd >= 2.0 (github.com/containerd/containerd/releases: containerd-2.x-linux-amd64.tar.gz, bin/)",
    "containerd-shim-runc-v2": "the same containerd release (bin/containerd-shim-runc-v2)",
    "ctr": "the same containerd release (bin/ctr)",
    "runc": ">= 1.2 (github.com/opencontainers/runc/releases: runc.amd64, renamed runc)",
    "cni/bridge": "CNI plugins >= 1.1 (github.com/containernetworking/plugins/releases, or Debian's containernetworking-plugins)",
    "cni/host-local": "the same CNI plugins (host-local)",
    "cni/loopback": "the same CNI plugins (loopback)",
}
OPTIONAL: dict[str, str] = {
    "kube-proxy": "Services' ClusterIPs from pods (dl.k8s.io/release/<v>/bin/linux/amd64/kube-proxy; nftables mode)",
    "kube-network-policies": ("NetworkPolicy enforcement (kubernetes-sigs/kube-network-policies, cmd/kube-network-policies/standard; "
                              "kernels without nft's queue expression need its NFQUEUE as the xt target, docs/e2e.md)"),
}
TOOLS = ("unshare", "nsenter", "mount", "ip", "nft")


def skip_reason(directory: Optional[Path] = None) -> Optional[str]:
    """One line saying what the real node lacks here, or None."""
    directory = directory or bin_dir()
    missing = [n for n in REQUIRED if not os.access(directory / n, os.X_OK)]
    if missing:
        how = "; ".join(f"{n}: {REQUIRED[n]}" for n in missing)
        return f"no real node: {directory} lacks {', '.join(missing)} ({how}; docs/e2e.md, 'The real node')"
    if os.geteuid() != 0:
        return "no real node: a kubelet and containerd need root"
    absent = [a for a in NODE_IMAGES.values() if not (IMAGES_DIR / a).is_file()]
    if absent:
        return f"no real node: {IMAGES_DIR} lacks {', '.join(absent)} (scripts/build-images)"
    tools = [t for t in TOOLS if shutil.which(t) is None]
    if tools:
        return f"no real node: {', '.join(tools)} missing (util-linux, iproute2, nftables)"
    if not (CGROUP_FS / "memory" / "cgroup.procs").exists() and not (CGROUP_FS / "cgroup.controllers").exists():
        return f"no real node: no cgroup hierarchy found under {CGROUP_FS}"
    return None


def stateless_enforcement() -> Optional[str]:
    """Why kube-network-policies cannot follow connections here, or None. It marks each accepted
    connection with a conntrack label set in its nfqueue verdict, which needs the kernel's
    CONFIG_NETFILTER_NETLINK_GLUE_CT; without it every packet is judged as a new connection, so
    the answer to an allowed connection passes only when a policy also allows it on its own."""
    import gzip

    try:
        with gzip.open("/proc/config.gz", "rt") as config:
            text = config.read()
    except OSError:
        return None  # cannot tell: assume the usual kernel
    if "CONFIG_NETFILTER_NETLINK_GLUE_CT=y" in text:
        return None
    return ("this kernel lacks CONFIG_NETFILTER_NETLINK_GLUE_CT: kube-network-policies' nfqueue verdicts cannot label "
            "accepted connections, so it judges every answer packet as a new connection (stateless enforcement)")


def optional_missing(directory: Optional[Path] = None) -> dict[str, str]:
    """The optional components absent from the binaries' directory, with what each gives."""
    directory = directory or bin_dir()
    return {n: why for n, why in OPTIONAL.items() if not os.access(directory / n, os.X_OK)}


# ---------------------------------------------------------------------------------------------
# Configuration files (pure functions of paths: tests/e2e/test_e2e_realnode_harness.py)


@dataclass(frozen=True)
class Layout:
    """Where everything of one node lives: the run directory (mode 711: pods in user namespaces
    traverse it to their logs and volumes) and the binaries."""

    run: Path
    bins: Path
    cgroup_root: str  # "/llmss-e2e-node-<pid>"

    @property
    def socket(self) -> Path:
        return self.run / "containerd.sock"

    @property
    def kubelet_root(self) -> Path:
        return self.run / "kubelet"  # bound on /var/lib/kubelet in the private namespace

    @property
    def pod_logs(self) -> Path:
        return self.run / "pod-logs"

    @property
    def cni_conf_dir(self) -> Path:
        return self.run / "cni" / "net.d"

    @property
    def ipam_dir(self) -> Path:
        return self.run / "cni" / "ipam"


def containerd_config(layout: Layout) -> str:
    """containerd 2.x (config version 3): root, state and sockets in the run directory, CRI with
    our CNI configuration, the pinned pause image, runc with cgroupfs; no NRI (its socket lives in
    /var/run/nri), no CDI, no /opt/containerd (the opt plugin makes it); a runtime handler `runsc`
    that is runc (gVisor's runsc does not build here: the `gvisor` RuntimeClass starts on runc,
    docs/e2e.md)."""
    disabled = ["io.containerd.nri.v1.nri", "io.containerd.internal.v1.opt", "io.containerd.internal.v1.tracing",
                "io.containerd.image-verifier.v1.bindir", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.blockfile",
                "io.containerd.snapshotter.v1.erofs", "io.containerd.differ.v1.erofs"]
    runc = str(layout.bins / "runc")

    def runtime(name: str) -> list[str]:
        key = f"[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.{name}"
        return [f"{key}]", "  runtime_type = 'io.containerd.runc.v2'", f"{key}.options]",
                f"  BinaryName = '{runc}'", "  SystemdCgroup = false"]

    return "\n".join([
        "version = 3",
        f"root = '{layout.run / 'containerd' / 'root'}'",
        f"state = '{layout.run / 'containerd' / 'state'}'",
        "oom_score = 0",
        "imports = []",
        "disabled_plugins = [" + ", ".join(f"'{p}'" for p in disabled) + "]",
        "[grpc]", f"  address = '{layout.socket}'",
        "[ttrpc]", f"  address = '{layout.socket}.ttrpc'",
        "[debug]", "  address = ''",
        "[metrics]", "  address = ''",
        "[plugins.'io.containerd.cri.v1.images']", "  snapshotter = 'overlayfs'",
        "[plugins.'io.containerd.cri.v1.images'.pinned_images]", f"  sandbox = '{PAUSE_IMAGE}'",
        "[plugins.'io.containerd.cri.v1.runtime']",
        # The machine strips CAP_SYS_RESOURCE: without this runc fails every pod (it cannot write
        # oom_score_adj below the shim's: "can't get final child's PID from pipe: EOF").
        "  restrict_oom_score_adj = true",
        "  netns_mounts_under_state_dir = true",  # not /var/run/netns
        "  enable_cdi = false",
        "  enable_selinux = false",
        "[plugins.'io.containerd.cri.v1.runtime'.cni]",
        f"  bin_dirs = ['{layout.bins / 'cni'}']",
        f"  conf_dir = '{layout.cni_conf_dir}'",
        "  max_conf_num = 1",
        "[plugins.'io.containerd.cri.v1.runtime'.containerd]", "  default_runtime_name = 'runc'",
        *runtime("runc"), *runtime("runsc"),
        "[plugins.'io.containerd.grpc.v1.cri']", "  stream_server_address = '127.0.0.1'", "  stream_server_port = '0'",
        "",
    ])


def cni_config(layout: Layout) -> dict[str, Any]:
    """The pod network: a bridge holding the gateway address (the harness gives it; the plugin
    is no gateway: isGateway would turn on IP forwarding), host-local addresses, one route, to the
    Service range through the gateway (kube-proxy's DNAT back onto the bridge needs no forwarding),
    no default route and no masquerade: nothing leaves the machine."""
    return {
        "cniVersion": "1.0.0", "name": POD_BRIDGE,
        "plugins": [{
            "type": "bridge", "bridge": POD_BRIDGE, "isGateway": False, "isDefaultGateway": False, "ipMasq": False,
            "hairpinMode": True,
            "ipam": {"type": "host-local", "dataDir": str(layout.ipam_dir),
                     "ranges": [[{"subnet": POD_SUBNET, "rangeStart": "10.252.0.10", "rangeEnd": "10.252.0.250",
                                  "gateway": POD_GATEWAY}]],
                     "routes": [{"dst": SERVICE_CIDR}]},
        }],
    }


def kubelet_config(layout: Layout, pki: PKI, serving: tuple[Path, Path], port: int, healthz_port: int) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": NODE_IP, "port": port, "readOnlyPort": 0, "healthzBindAddress": "127.0.0.1", "healthzPort": healthz_port,
        # The API server calls with the admin certificate (exec, logs): any certificate of the
        # cluster CA is let in, and nothing else (no anonymous access).
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                           "x509": {"clientCAFile": str(pki.ca_cert)}},
        "authorization": {"mode": "AlwaysAllow"},
        "tlsCertFile": str(serving[0]), "tlsPrivateKeyFile": str(serving[1]),
        "rotateCertificates": False, "serverTLSBootstrap": False,
        "containerRuntimeEndpoint": f"unix://{layout.socket}",
        "cgroupDriver": "cgroupfs", "cgroupRoot": layout.cgroup_root, "cgroupsPerQOS": True,
        "failCgroupV1": False, "failSwapOn": False, "memorySwap": {"swapBehavior": "NoSwap"},
        # Host settings untouched: checked, not written; no iptables chains.
        "protectKernelDefaults": True, "makeIPTablesUtilChains": False, "oomScoreAdj": 0,
        "podLogsDir": str(layout.pod_logs), "volumePluginDir": str(layout.run / "volume-plugins"),
        "registerNode": True, "registerWithTaints": [TAINT],
        "clusterDNS": [CLUSTER_DNS], "clusterDomain": CLUSTER_DOMAIN, "resolvConf": "",
        "maxPods": 40, "serializeImagePulls": False, "shutdownGracePeriod": "0s", "hairpinMode": "none",
        "nodeStatusUpdateFrequency": "4s", "syncFrequency": "10s",
        # A shared disk: no eviction, no image garbage collection of the imported images.
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "containerLogMaxSize": "1Mi", "containerLogMaxFiles": 2,
    }


def kube_proxy_config(kubeconfig: Path, healthz_port: int, metrics_port: int) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "mode": "nftables", "clientConnection": {"kubeconfig": str(kubeconfig)}, "hostnameOverride": NODE_NAME,
        "bindAddress": NODE_IP, "healthzBindAddress": f"127.0.0.1:{healthz_port}", "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "clusterCIDR": POD_SUBNET, "detectLocalMode": "ClusterCIDR", "nodePortAddresses": [f"{NODE_IP}/32"],
        # Zeros: leave the machine's conntrack settings as they are.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        "oomScoreAdj": 0,
    }


def guard_rules() -> str:
    """nft input for the guard table: what arrives on the pod bridge leaves only by it, and
    nothing is routed onto it from elsewhere (bridged traffic, seen here through br_netfilter,
    comes and goes by the bridge and passes)."""
    family, name = GUARD_TABLE
    return (f"table {family} {name} {{\n chain forward {{\n  type filter hook forward priority -10; policy accept;\n"
            f'  iifname "{POD_BRIDGE}" oifname != "{POD_BRIDGE}" counter drop\n'
            f'  oifname "{POD_BRIDGE}" iifname != "{POD_BRIDGE}" counter drop\n }}\n}}\n')


def _kubeconfig(path: Path, server: str, ca: Path, cert: Path, key: Path) -> Path:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "node",
        "clusters": [{"name": "llmss-e2e", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": "node", "user": {"client-certificate": str(cert), "client-key": str(key)}}],
        "contexts": [{"name": "node", "context": {"cluster": "llmss-e2e", "user": "node"}}],
    }, indent=1))
    path.chmod(0o600)
    return path


def issue_certificate(pki: PKI, directory: Path, stem: str, cn: str, org: Optional[str], server: bool,
                      ips: Sequence[str] = (), dns: Sequence[str] = ()) -> tuple[Path, Path]:
    """A leaf certificate of the cluster CA (ECDSA P-256, two days): a client one (the kubelet's
    system:node:<name> in system:nodes, for the Node authorizer) or a serving one."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), None)
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    builder = (x509.CertificateBuilder().subject_name(x509.Name(attrs)).issuer_name(ca.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + dt.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                              critical=False))
    sans = [x509.IPAddress(ipaddress.ip_address(i)) for i in ips] + [x509.DNSName(d) for d in dns]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


# ---------------------------------------------------------------------------------------------
# What the node made on the machine: recorded in the lock file as it goes, removed at stop or by
# the next start after a crash.


@dataclass
class Made:
    pid: int = field(default_factory=os.getpid)
    run: str = ""
    socket: str = ""
    cgroup_root: str = ""
    links: list[str] = field(default_factory=list)
    mount_points: list[str] = field(default_factory=list)
    tables: list[list[str]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> Optional["Made"]:
        try:
            data = json.loads(text)
            return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        except (ValueError, TypeError):
            return None


def _run(*argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {out.stderr.strip()[-1500:]}")
    return out


def link_exists(name: str) -> bool:
    return (Path("/sys/class/net") / name).exists()


def nft_table_exists(family: str, name: str) -> bool:
    return _run("nft", "list", "table", family, name, check=False).returncode == 0


def cgroup_hierarchies() -> list[Path]:
    """Every mounted hierarchy: each v1 controller's (and named ones), and the cgroup2 one."""
    return sorted(p for p in CGROUP_FS.iterdir() if (p / "cgroup.procs").exists()) if not (CGROUP_FS / "cgroup.controllers").exists() \
        else [CGROUP_FS]


def make_cgroup_root(root: str) -> None:
    """The kubelet's cgroupRoot, made in every v1 hierarchy beforehand (it refuses to start
    without it; cpuset needs its cpus and mems filled in), or in the cgroup2 one with the
    controllers the kubelet uses enabled below it."""
    name = root.strip("/")
    if (CGROUP_FS / "cgroup.controllers").exists():
        path = CGROUP_FS / name
        path.mkdir(exist_ok=True)
        wanted = set((CGROUP_FS / "cgroup.subtree_control").read_text().split()) & {"cpu", "cpuset", "memory", "pids", "io", "hugetlb"}
        if wanted:
            (path / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in sorted(wanted)))
        return
    for hierarchy in cgroup_hierarchies():
        if hierarchy.name == "unified":
            continue  # cgroup2 beside v1: the container library makes its part itself
        path = hierarchy / name
        path.mkdir(exist_ok=True)
        if hierarchy.name.startswith("cpuset") or (hierarchy / "cpuset.cpus").exists():
            for knob in ("cpuset.cpus", "cpuset.mems"):
                (path / knob).write_text((hierarchy / knob).read_text())


def cgroup_pids(root: str) -> list[int]:
    pids: set[int] = set()
    for hierarchy in cgroup_hierarchies():
        base = hierarchy / root.strip("/")
        if not base.is_dir():
            continue
        for procs in base.rglob("cgroup.procs"):
            try:
                pids.update(int(p) for p in procs.read_text().split())
            except OSError:
                continue
    return sorted(pids)


def remove_cgroup_root(root: str, timeout: float = 10) -> list[str]:
    """Kill what still runs in our cgroups, then remove them deepest first in every hierarchy
    (v1 controllers, named ones and cgroup2); returns those that could not be removed."""
    deadline = time.monotonic() + timeout
    while cgroup_pids(root) and time.monotonic() < deadline:
        for pid in cgroup_pids(root):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    left = []
    for hierarchy in cgroup_hierarchies() + ([CGROUP_FS / "unified"] if (CGROUP_FS / "unified").is_dir() else []):
        base = hierarchy / root.strip("/")
        if not base.is_dir():
            continue
        for directory in sorted((p for p in base.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True) + [base]:
            for _ in range(50):
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)
            else:
                left.append(str(directory))
    return left


def remove_made(made: Made, keep_run: bool = False) -> list[str]:
    """Undo what `made` lists (a crashed run's, or ours at stop); returns what stayed."""
    left: list[str] = []
    if made.socket:
        for pid in _pids_with(made.socket):  # shims, and anything else still talking to it
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if made.cgroup_root:
        left += remove_cgroup_root(made.cgroup_root)
    for link in made.links:  # first: the pod bridge's forwarding goes with it, before the guard table
        if link_exists(link):
            _run("ip", "link", "delete", link, check=False)
            if link_exists(link):
                left.append(f"link {link}")
    for family, table in made.tables:
        if nft_table_exists(family, table):
            _run("nft", "delete", "table", family, table, check=False)
            if nft_table_exists(family, table):
                left.append(f"nft table {family} {table}")
    for point in made.mount_points:
        try:
            Path(point).rmdir()
        except FileNotFoundError:
            pass
        except OSError as exc:
            left.append(f"{point}: {exc}")
    if made.run and not keep_run:
        shutil.rmtree(made.run, ignore_errors=True)
        if Path(made.run).exists():
            left.append(made.run)
    return left


class NodeBusy(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------
# The node


class RealNode:
    def __init__(self, cp: ControlPlane, bins: Optional[Path] = None, name: str = NODE_NAME) -> None:
        self.cp = cp
        self.bins = bins or cp.bins
        self.name = name
        self.optional_missing = optional_missing(self.bins)
        self.layout: Optional[Layout] = None
        self.made = Made()
        self.processes: dict[str, Process] = {}
        self.started_at: dict[str, float] = {}
        self.ports = {n: free_port() for n in ("kubelet", "kubelet-healthz", "proxy-healthz", "proxy-metrics", "knp-metrics")}
        self._lock: Optional[Any] = None

    # -- what tests ask --------------------------------------------------------------------------
    def has(self, component: str) -> Optional[str]:
        """None when `component` runs, else why not (a skip reason)."""
        if component in self.optional_missing:
            return f"{component} is not in {self.bins}: {self.optional_missing[component]}"
        if component not in self.processes:
            return f"{component} was not started"
        return None

    @property
    def socket(self) -> Path:
        assert self.layout is not None
        return self.layout.socket

    def ctr(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        out = subprocess.run([str(self.bins / "ctr"), "-a", str(self.socket), "-n", "k8s.io", *args],
                             capture_output=True, text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)}: {out.stderr.strip()[-2000:]}")
        return out

    def tasks(self) -> dict[str, tuple[int, str]]:
        """containerd's tasks on the node: container ID -> (host PID, status)."""
        return task_list(self.ctr("tasks", "ls").stdout)

    def host_pid(self, container_id: str) -> int:
        """The machine's PID of a pod's container (its status' containerID)."""
        cid = container_id.split("://", 1)[-1]
        pid, state = self.tasks()[cid]
        assert state == "RUNNING", (cid, state)
        return pid

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self, wait: float = 0.0) -> "RealNode":
        """Start everything; `wait` seconds for another run's node to finish first (its lock)."""
        self._acquire(wait)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _acquire(self, wait: float = 0.0) -> None:
        LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + wait
        while True:
            handle = open(LOCK_FILE, "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                if time.monotonic() >= deadline:
                    raise NodeBusy(f"another run's real node holds {LOCK_FILE}" + (f" (waited {wait:.0f}s)" if wait else "")) from None
                time.sleep(2)
                continue
            try:
                current = os.stat(LOCK_FILE).st_ino
            except FileNotFoundError:
                current = None
            if current != os.fstat(handle.fileno()).st_ino:
                handle.close()  # unlinked by its last holder meanwhile: lock the file that is there now
                continue
            break
        self._lock = handle
        handle.seek(0)
        previous = Made.from_json(handle.read())
        if previous is not None and previous.pid != os.getpid():
            left = remove_made(previous)  # a crashed run's leftovers
            if left:
                raise RuntimeError(f"what an earlier run left could not be removed: {left}")
        for family, table in NFT_TABLES:
            if nft_table_exists(family, table):
                raise NodeBusy(f"nft table {family} {table} exists and is not ours (a kube-proxy or "
                               "kube-network-policies of this machine?): no real node beside it")
        self._record()

    def _record(self) -> None:
        if self._lock is not None:
            self._lock.seek(0)
            self._lock.truncate()
            self._lock.write(self.made.to_json())
            self._lock.flush()

    def _start(self) -> None:
        t0 = time.monotonic()
        run = Path(tempfile.mkdtemp(prefix="llmss-node-"))
        os.chmod(run, 0o711)  # pods in user namespaces traverse it to their volumes and logs
        self.made.run = str(run)
        layout = self.layout = Layout(run, self.bins, f"/llmss-e2e-node-{os.getpid()}")
        self.made.socket = str(layout.socket)
        for d in (layout.kubelet_root, layout.pod_logs, layout.cni_conf_dir, layout.ipam_dir, run / "var-log", run / "sysctl",
                  run / "certs", run / "volume-plugins"):
            d.mkdir(parents=True, exist_ok=True)
        # containerd would make it 700: a pod in a user namespace could not reach its bundle's rootfs
        # below state/ (runc: "remount-private dst=.../rootfs: permission denied").
        (run / "containerd").mkdir(mode=0o711)
        self._record()

        self._network()
        self.made.cgroup_root = layout.cgroup_root
        self._record()
        make_cgroup_root(layout.cgroup_root)
        for point in (*TMPFS_COVERS, KUBELET_ROOT):
            if not point.exists():
                point.mkdir(mode=0o711)
                self.made.mount_points.append(str(point))
        self._record()
        (run / "containerd.toml").write_text(containerd_config(layout))
        (layout.cni_conf_dir / "10-llmss.conflist").write_text(json.dumps(cni_config(layout), indent=1))
        self._start_containerd()
        self._import_images()
        self._start_kubelet()
        if "kube-proxy" not in self.optional_missing:
            self._start_kube_proxy()
        if "kube-network-policies" not in self.optional_missing:
            self._start_network_policies()
        self.started_at["node"] = time.monotonic() - t0

    def _network(self) -> None:
        for link, address in ((NODE_BRIDGE, f"{NODE_IP}/32"), (POD_BRIDGE, f"{POD_GATEWAY}/24")):
            self.made.links.append(link)
            self._record()
            _run("ip", "link", "add", link, "type", "bridge")
            _run("ip", "addr", "add", address, "dev", link)
            _run("ip", "link", "set", link, "up")

    def _process(self, name: str, argv: list[str], ready: Any, timeout: float, env: Optional[dict[str, str]] = None) -> Process:
        t0 = time.monotonic()
        proc = Process(name, argv, self.cp.logs / f"{name}.log", env=env).start()
        self.processes[name] = proc
        self.cp.processes[name] = proc  # reported with the others when a test fails; stopped by us first
        wait_until(ready, timeout, f"{name} ready", interval=0.2, process=proc)
        self.started_at[name] = time.monotonic() - t0
        return proc

    def _start_containerd(self) -> None:
        layout = self.layout
        assert layout is not None
        covers = " && ".join(f"mount -t tmpfs -o mode=0711 tmpfs {p}" for p in TMPFS_COVERS)
        script = (f"{covers} && mount --bind {layout.kubelet_root} {KUBELET_ROOT} && mount --make-shared {KUBELET_ROOT}"
                  f" && exec {self.bins / 'containerd'} --config {layout.run / 'containerd.toml'}")
        env = {**os.environ, "PATH": f"{self.bins}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
               # Nothing is pulled: a missing image fails at once (ErrImagePull), no lookup leaves the machine.
               "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": "",
               "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9", "no_proxy": ""}
        self._process("node-containerd", ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                      lambda: layout.socket.exists() and self.ctr("version", check=False).returncode == 0, 60, env=env)

    def _import_images(self) -> None:
        t0 = time.monotonic()
        images = {**NODE_IMAGES, **{i: a for i, a in OPTIONAL_IMAGES.items() if (IMAGES_DIR / a).is_file()}}
        procs = [(image, subprocess.Popen([str(self.bins / "ctr"), "-a", str(self.socket), "-n", "k8s.io", "images", "import",
                                           str(IMAGES_DIR / archive)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
                 for image, archive in images.items()]
        for image, proc in procs:
            output, _ = proc.communicate(timeout=300)
            if proc.returncode != 0:
                raise RuntimeError(f"importing {image}: {output[-1500:]}")
        listed = self.ctr("images", "ls", "-q").stdout.split()
        absent = [i for i in images if not any(line.endswith(i) or line == i for line in listed)]
        if absent:
            raise RuntimeError(f"imported, yet containerd does not list {absent}: {listed}")
        self.started_at["images"] = time.monotonic() - t0

    def _start_kubelet(self) -> None:
        layout, pki = self.layout, self.cp.pki
        assert layout is not None and pki is not None
        certs = layout.run / "certs"
        client = issue_certificate(pki, certs, "kubelet-client", f"system:node:{self.name}", "system:nodes", server=False)
        serving = issue_certificate(pki, certs, "kubelet-serving", self.name, None, server=True, ips=[NODE_IP], dns=[self.name])
        kubeconfig = _kubeconfig(layout.run / "kubelet.kubeconfig", self.cp.server, pki.ca_cert, *client)
        config = layout.run / "kubelet.json"
        config.write_text(json.dumps(kubelet_config(layout, pki, serving, self.ports["kubelet"], self.ports["kubelet-healthz"]), indent=1))
        binds = []
        for key, value in KERNEL_DEFAULTS.items():
            copy = layout.run / "sysctl" / key.replace("/", ".")
            copy.write_text(value + "\n")
            binds.append(f"mount --bind {copy} /proc/sys/{key}")
        binds.append(f"mount --bind {layout.run / 'var-log'} /var/log")  # /var/log/containers: the kubelet's symlinks
        argv = [str(self.bins / "kubelet"), f"--config={config}", f"--kubeconfig={kubeconfig}", f"--hostname-override={self.name}",
                f"--node-ip={NODE_IP}", f"--node-labels={LABEL_KEY}={LABEL_VALUE}", "--v=2"]
        containerd = self.processes["node-containerd"].pid
        script = " && ".join(binds) + " && exec " + " ".join(argv)
        self._process("kubelet", ["nsenter", "-t", str(containerd), "-m", "--", "unshare", "-m", "--propagation", "unchanged",
                                  "sh", "-c", script], self._node_ready, 120)

    def node(self) -> Optional[dict[str, Any]]:
        out = self.cp.kubectl("get", "node", self.name, "-o", "json", "--ignore-not-found", check=False)
        return json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() else None

    def _node_ready(self) -> bool:
        node = self.node()
        conditions = ((node or {}).get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    def _forward_on_the_bridge(self) -> None:
        """The guard table first, then forwarding on the pod bridge only (see the module's doc)."""
        family, name = GUARD_TABLE
        self.made.tables.append([family, name])
        self._record()
        out = subprocess.run(["nft", "-f", "-"], input=guard_rules(), capture_output=True, text=True, timeout=30)
        if out.returncode != 0 or not nft_table_exists(family, name):
            raise RuntimeError(f"nft: the guard table was not made: {out.stderr.strip()}")
        conf = Path("/proc/sys/net/ipv4/conf") / POD_BRIDGE
        (conf / "send_redirects").write_text("0\n")
        (conf / "forwarding").write_text("1\n")

    def _start_kube_proxy(self) -> None:
        assert self.layout is not None
        self._forward_on_the_bridge()
        config = self.layout.run / "kube-proxy.json"
        config.write_text(json.dumps(kube_proxy_config(self.cp.kubeconfig, self.ports["proxy-healthz"], self.ports["proxy-metrics"])))
        self.made.tables += [["ip", "kube-proxy"], ["ip6", "kube-proxy"]]
        self._record()
        from tests.e2e.controlplane import http_ok
        self._process("kube-proxy", [str(self.bins / "kube-proxy"), f"--config={config}", "--v=2"],
                      lambda: http_ok(f"http://127.0.0.1:{self.ports['proxy-healthz']}/healthz"), 60)

    def _start_network_policies(self) -> None:
        self.made.tables.append(["inet", "kube-network-policies"])
        self._record()
        self._process("kube-network-policies", [
            str(self.bins / "kube-network-policies"), f"--kubeconfig={self.cp.kubeconfig}", f"--hostname-override={self.name}",
            f"--metrics-bind-address=127.0.0.1:{self.ports['knp-metrics']}", "--disable-nri", "--v=2",
        ], lambda: nft_table_exists("inet", "kube-network-policies"), 60)

    def stop(self) -> list[str]:
        """Everything undone; returns what could not be (also printed)."""
        left: list[str] = []
        try:
            if "kubelet" in self.processes and self.processes["kubelet"].alive():
                self._drain()
        except Exception as exc:  # noqa: BLE001 - the rest of the cleanup runs regardless
            left.append(f"draining the node: {exc}")
        for name in ("kube-network-policies", "kube-proxy", "kubelet"):
            if name in self.processes:
                self.processes[name].stop()
        if "node-containerd" in self.processes and self.processes["node-containerd"].alive():
            self._kill_containers()
        if self.made.socket:
            for pid in _pids_with(self.made.socket):  # the shims outlive containerd
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if "node-containerd" in self.processes:
            self.processes["node-containerd"].stop()
        try:
            if self.cp.processes.get("kube-apiserver") and self.cp.processes["kube-apiserver"].alive():
                self.cp.kubectl("delete", "node", self.name, "--ignore-not-found", "--wait=false", check=False)
        except Exception:  # noqa: BLE001
            pass
        left += remove_made(self.made, keep_run=bool(os.environ.get("LLMSS_E2E_KEEP")))
        if self._lock is not None:
            if not left:
                self.made = Made(pid=os.getpid())
                LOCK_FILE.unlink(missing_ok=True)  # non-blocking locks only: nobody waits on this inode
            self._record()
            self._lock.close()
            self._lock = None
        if left:
            print(f"\nreal node: could not remove: {left}")
        return left

    def _drain(self, timeout: float = 30) -> None:
        """Cordon, delete every pod on the node, wait until the kubelet has stopped them."""
        self.cp.kubectl("patch", "node", self.name, "-p", json.dumps({"spec": {"unschedulable": True}}), check=False)
        selector = f"spec.nodeName={self.name}"
        self.cp.kubectl("delete", "pods", "-A", "--field-selector", selector, "--wait=false", "--grace-period=2", check=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.cp.kubectl("get", "pods", "-A", "--field-selector", selector, "-o", "name", check=False)
            if out.returncode == 0 and not out.stdout.strip():
                return
            time.sleep(0.3)

    def _kill_containers(self) -> None:
        try:
            tasks = self.tasks()
        except Exception:  # noqa: BLE001
            return
        for cid in tasks:
            self.ctr("tasks", "kill", "-s", "SIGKILL", cid, check=False)
        for cid in tasks:
            self.ctr("tasks", "delete", "-f", cid, check=False)
        for cid in self.ctr("containers", "ls", "-q", check=False).stdout.split():
            self.ctr("containers", "delete", cid, check=False)

    # -- placing our pods -------------------------------------------------------------------------
    @contextmanager
    def scheduling(self, settle: float = 1.0) -> Iterator[None]:
        """While inside: the real node takes every new pod (its taint off, the kwok nodes
        cordoned), so sandbox and warm pods, which tolerate nothing, land on it; afterwards the
        kwok nodes take them again. The receiving side opens first and closes last: a pod is
        never without a node (that would be a FailedScheduling Warning event), and the
        RuntimeEnvironments never see no schedulable node."""
        self.wait_idle()
        cordoned = []
        self._set_taint(False)
        try:
            for node in json.loads(self.cp.kubectl("get", "nodes", "-o", "json").stdout)["items"]:
                meta = node["metadata"]
                if (meta.get("annotations") or {}).get(KWOK_NODE_ANNOTATION) and not node["spec"].get("unschedulable"):
                    self.cp.kubectl("patch", "node", meta["name"], "-p", json.dumps({"spec": {"unschedulable": True}}))
                    cordoned.append(meta["name"])
            time.sleep(settle)  # the scheduler's informer sees both changes
            yield
        finally:
            for name in cordoned:
                self.cp.kubectl("patch", "node", name, "-p", json.dumps({"spec": {"unschedulable": None}}), check=False)
            time.sleep(settle if cordoned else 0)
            self._set_taint(True)

    def wait_idle(self, timeout: float = 60) -> None:
        """Until no pod on the node is being deleted (earlier tests' namespaces go in the
        background; their pods' requests still count against the node's 2 CPUs meanwhile)."""
        def idle() -> bool:
            pods = json.loads(self.cp.kubectl("get", "pods", "-A", "--field-selector", f"spec.nodeName={self.name}",
                                              "-o", "json").stdout)["items"]
            namespaces = json.loads(self.cp.kubectl("get", "namespaces", "-o", "json").stdout)["items"]
            going = {n["metadata"]["name"] for n in namespaces if (n.get("status") or {}).get("phase") == "Terminating"}
            return not any(p["metadata"].get("deletionTimestamp") or p["metadata"]["namespace"] in going for p in pods)
        wait_until(idle, timeout, f"no pod terminating on {self.name}", interval=0.5)

    def _set_taint(self, on: bool) -> None:
        node = self.node()
        if node is None:
            raise NotReady(f"node {self.name} is not registered")
        taints = [t for t in node["spec"].get("taints") or [] if t.get("key") != TAINT["key"]]
        if on:
            taints.append(dict(TAINT))
        patch = [{"op": "test", "path": "/metadata/resourceVersion", "value": node["metadata"]["resourceVersion"]},
                 {"op": "add", "path": "/spec/taints", "value": taints}]
        for _ in range(5):
            out = self.cp.kubectl("patch", "node", self.name, "--type=json", "-p", json.dumps(patch), check=False)
            if out.returncode == 0:
                return
            node = self.node() or node  # the kubelet updated it meanwhile
            taints = [t for t in node["spec"].get("taints") or [] if t.get("key") != TAINT["key"]] + ([dict(TAINT)] if on else [])
            patch = [{"op": "test", "path": "/metadata/resourceVersion", "value": node["metadata"]["resourceVersion"]},
                     {"op": "add", "path": "/spec/taints", "value": taints}]
        raise RuntimeError(f"could not {'taint' if on else 'untaint'} {self.name}: {out.stderr}")

    def summary(self) -> str:
        parts = ", ".join(f"{n} {s:.1f}s" for n, s in self.started_at.items())
        missing = f"; without {', '.join(self.optional_missing)}" if self.optional_missing else ""
        return f"real node {self.name} ({NODE_IP}, pods {POD_SUBNET}) in {self.made.run}: {parts}{missing}"


def probe_pod(name: str, namespace: str, labels: Optional[dict[str, str]] = None, env: Optional[dict[str, str]] = None,
              args: Sequence[str] = (), image: str = PROBE_IMAGE, host_users: bool = False) -> dict[str, Any]:
    """A pod of the probe image (tests/e2e/probe_server.py) on the real node, as Pod Security
    "restricted" wants it: a helper a test places there itself (it tolerates the node's taint)."""
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": {
            "nodeSelector": {LABEL_KEY: LABEL_VALUE}, "tolerations": [{**TAINT, "operator": "Equal"}],
            "automountServiceAccountToken": False, "enableServiceLinks": False, "terminationGracePeriodSeconds": 1,
            **({} if host_users else {"hostUsers": False}),
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "probe", "image": image, "imagePullPolicy": "Never", "args": list(args),
                "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
                "ports": [{"containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 1},
                "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}, "requests": {"cpu": "10m", "memory": "32Mi"}},
                "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}},
            }],
        },
    }


__all__ = ["RealNode", "NodeBusy", "skip_reason", "probe_pod", "NODE_NAME", "RUNTIME_IMAGE", "PROBE_IMAGE", "PAUSE_IMAGE"]
