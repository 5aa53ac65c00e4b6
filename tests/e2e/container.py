"""A real container runtime without Kubernetes: containerd (>= 2.0) and runc (>= 1.2) from
LLMSS_K8S_BIN, started by the suite, running the images scripts/build-images makes with exactly
the restrictions our pods carry (hooks/builders/pod.py): uid 1000, read-only root, every
capability dropped, no new privileges, containerd's default seccomp profile (what RuntimeDefault
is under CRI), a user namespace of its own (hostUsers: false), and only the writable paths
writable (tmpfs, like the pods' size-limited emptyDirs).

This is the layer below the kubelet: it shows that the images keep the runtime contract under a
real OCI runtime. What needs a kubelet and an API server (probes run by the kubelet, Services,
NetworkPolicy enforcement) is the real node's (docs/e2e.md).

Everything stays off the machine's own state:
- containerd runs in a private mount namespace (`unshare -m --propagation private`) with its root,
  state and sockets in the run directory; the one directory it insists on (/run/containerd, for
  shim sockets) is a tmpfs inside that namespace, and the empty mount point is removed at stop if
  the suite made it;
- each container gets a network namespace of its own (no interface but loopback), owned by its
  user namespace, which the checks enter with `nsenter -t <pid> -n`: no packet leaves it;
- cgroups under `llmss-e2e-ct-<pid>/` in each hierarchy, removed at stop; the machine's own
  cgroups are never touched;
- stop kills every task, then the shims (they outlive containerd), then containerd, by PID."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from tests.e2e.controlplane import bin_dir

BINARIES = ("containerd", "containerd-shim-runc-v2", "ctr", "runc")
IMAGES_DIR = Path(os.environ.get("LLMSS_IMAGES_DIR", Path.home() / ".cache" / "llmss-images"))
RUNTIME_IMAGE = "ghcr.io/llmsafespace/runtime-python:3.11"
PROBE_IMAGE = "localhost/llmsafespace/e2e-probe:1"
IMAGE_ARCHIVES = {RUNTIME_IMAGE: "runtime.tar", PROBE_IMAGE: "probe.tar"}
NAMESPACE = "llmss-e2e"
# The capabilities containerd's default spec grants; dropping each is `capabilities: drop: [ALL]`.
DEFAULT_CAPS = ("CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP",
                "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE")
# A user namespace like the kubelet's for hostUsers: false: 65536 ids from an unprivileged base.
USERNS_BASE = 1_000_000 + (os.getpid() % 1000) * 65536
CONTAINERD_RUN_DIR = Path("/run/containerd")
# Plugins a ctr-only containerd does not need (CRI, NRI's socket in /var/run/nri, the opt plugin
# that makes /opt/containerd, snapshotters that probe the host).
DISABLED_PLUGINS = (
    "io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime",
    "io.containerd.nri.v1.nri", "io.containerd.internal.v1.opt", "io.containerd.internal.v1.tracing", "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.blockfile",
    "io.containerd.snapshotter.v1.erofs", "io.containerd.differ.v1.erofs",
)


def skip_reason() -> Optional[str]:
    """One line saying what is missing, or None."""
    missing = [b for b in BINARIES if not os.access(bin_dir() / b, os.X_OK)]
    if missing:
        return f"no container runtime in {bin_dir()}: {', '.join(missing)} missing (docs/e2e.md, 'A real container runtime')"
    if os.geteuid() != 0:
        return "containers need root"
    absent = [p for p in IMAGE_ARCHIVES.values() if not (IMAGES_DIR / p).is_file()]
    if absent:
        return f"no images in {IMAGES_DIR}: {', '.join(absent)} missing (scripts/build-images)"
    for tool in ("unshare", "nsenter", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (util-linux)"
    return None


@dataclass
class Container:
    id: str
    pid: int
    log: Path

    def status(self, rt: "ContainerRuntime") -> str:
        return rt.tasks().get(self.id, (0, "GONE"))[1]


@dataclass
class ContainerRuntime:
    workdir: Path
    bins: Path = field(default_factory=bin_dir)
    process: Optional[subprocess.Popen[bytes]] = None
    containers: list[Container] = field(default_factory=list)
    made_run_dir: bool = False
    cgroup_parent: str = f"llmss-e2e-ct-{os.getpid()}"

    @property
    def socket(self) -> Path:
        return self.workdir / "containerd.sock"

    def start(self, timeout: float = 60) -> None:
        config = self.workdir / "config.toml"
        config.write_text("\n".join([
            "version = 3",
            f'root = "{self.workdir / "root"}"',
            f'state = "{self.workdir / "state"}"',
            "imports = []",
            "disabled_plugins = [" + ", ".join(f'"{p}"' for p in DISABLED_PLUGINS) + "]",
            "[grpc]", f'  address = "{self.socket}"',
            "[ttrpc]", f'  address = "{self.socket}.ttrpc"',
            "[debug]", '  address = ""',
            "[metrics]", '  address = ""', "",
        ]))
        if not CONTAINERD_RUN_DIR.exists():
            CONTAINERD_RUN_DIR.mkdir(mode=0o711)  # only the mount point; the tmpfs is private
            self.made_run_dir = True
        env = {**os.environ, "PATH": f"{self.bins}:{os.environ.get('PATH', '/usr/bin:/bin')}",
               # Nothing may be pulled: a missing image fails at once instead of looking it up.
               "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}
        script = f"mount -t tmpfs -o mode=0711 tmpfs {CONTAINERD_RUN_DIR} && exec {self.bins / 'containerd'} --config {config}"
        log = open(self.workdir / "containerd.log", "wb")
        self.process = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                                        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"containerd exited ({self.process.returncode}): {self.log_tail('containerd.log')}")
            if self.socket.exists() and self.ctr("version", check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"containerd did not answer within {timeout}s: {self.log_tail('containerd.log')}")

    def ctr(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        out = subprocess.run([str(self.bins / "ctr"), "-a", str(self.socket), "-n", NAMESPACE, *args],
                             capture_output=True, text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)}: {out.stderr.strip()[-2000:]}")
        return out

    def import_images(self, images: Sequence[str] = tuple(IMAGE_ARCHIVES)) -> None:
        for image in images:
            self.ctr("images", "import", str(IMAGES_DIR / IMAGE_ARCHIVES[image]), timeout=300)

    def run(self, image: str, name: str, env: Optional[dict[str, str]] = None, args: Sequence[str] = (),
            writable: Sequence[str] = ("/tmp", "/workspace"), user_namespace: bool = True,
            memory_bytes: Optional[int] = None, timeout: float = 60) -> Container:
        """Start `image` as our pods run it and return once its process exists. `args`, if any,
        are the whole command line, entrypoint included (ctr's rule; a pod's `command`)."""
        log = self.workdir / f"{name}.log"
        flags = ["--read-only", "--user", "1000:1000", "--seccomp", *[f for c in DEFAULT_CAPS for f in ("--cap-drop", f"CAP_{c}")],
                 "--cgroup", f"{self.cgroup_parent}/{name}", "--log-uri", f"file://{log}"]
        if user_namespace:
            flags += ["--uidmap", f"0:{USERNS_BASE}:65536", "--gidmap", f"0:{USERNS_BASE}:65536"]
        for path in writable:
            # emptyDir with a size limit: a tmpfs, writable by the pod's fsGroup (here: everyone, sticky).
            flags += ["--mount", f"type=tmpfs,src=tmpfs,dst={path},options=rw:nosuid:nodev:mode=1777"]
        if memory_bytes is not None:
            flags += ["--memory-limit", str(memory_bytes)]
        for key, value in (env or {}).items():
            flags += ["--env", f"{key}={value}"]
        self.ctr("run", "-d", *flags, image, name, *args, timeout=timeout)
        pid = self._task_pid(name)
        container = Container(name, pid, log)
        self.containers.append(container)
        return container

    def tasks(self) -> dict[str, tuple[int, str]]:
        return task_list(self.ctr("task", "ls").stdout)

    def _task_pid(self, name: str) -> int:
        if name not in (tasks := self.tasks()):
            raise RuntimeError(f"no task {name}")
        return tasks[name][0]

    def in_netns(self, container: Container, command: Sequence[str], timeout: float = 120,
                 env: Optional[dict[str, str]] = None) -> subprocess.CompletedProcess[str]:
        """Run a host command inside the container's network namespace only (its loopback)."""
        return subprocess.run(["nsenter", "-t", str(container.pid), "-n", *command], capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, **(env or {})})

    def http_get(self, container: Container, path: str, port: int = 8080, timeout: float = 10) -> tuple[int, str]:
        """GET from inside the container's network namespace (urllib in a short host process)."""
        code = ("import sys, urllib.request, urllib.error\n"
                "try:\n r = urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])); print(r.status); print(r.read().decode())\n"
                "except urllib.error.HTTPError as e:\n print(e.code); print(e.read().decode())\n")
        out = self.in_netns(container, ["python3", "-c", code, f"http://127.0.0.1:{port}{path}", str(timeout)], timeout=timeout + 30)
        if out.returncode != 0:
            raise OSError(out.stderr.strip()[-500:])
        status, _, body = out.stdout.partition("\n")
        return int(status), body

    def wait_http(self, container: Container, path: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                status, body = self.http_get(container, path, timeout=5)
                if status == 200:
                    return body
                last = f"HTTP {status}"
            except OSError as exc:
                last = str(exc)
            if container.status(self) != "RUNNING":
                break
            time.sleep(0.2)
        raise AssertionError(f"{container.id}{path} never answered 200 ({last}); log: {self.log_tail(container.log.name)}")

    def kill(self, container: Container, sig: str = "SIGTERM") -> None:
        self.ctr("task", "kill", "-s", sig, container.id, check=False)

    def wait_exit(self, container: Container, timeout: float) -> Optional[int]:
        """The exit status once the task stopped, None if it still runs after `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if container.status(self) == "STOPPED":
                return self._exit_status(container)
            time.sleep(0.1)
        return None

    def _exit_status(self, container: Container) -> Optional[int]:
        """Deleting a stopped task gives its exit status: ctr warns "exit with non-zero exit code N"
        (cmd/ctr tasks delete), and says nothing for 0."""
        out = self.ctr("task", "delete", container.id, check=False)
        found = re.search(r"non-zero exit code (\d+)", out.stderr)
        if found:
            return int(found.group(1))
        if out.returncode == 0:
            return 0
        raise RuntimeError(f"ctr task delete {container.id}: {out.stderr.strip()[-500:]}")

    def log_tail(self, name: str, chars: int = 3000) -> str:
        try:
            return (self.workdir / name).read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        for container in self.containers:
            self.ctr("task", "kill", "-s", "SIGKILL", container.id, check=False)
        for container in self.containers:
            self.ctr("task", "delete", "-f", container.id, check=False)
            self.ctr("container", "delete", container.id, check=False)
        # Shims outlive containerd: each names our socket on its command line.
        for pid in _pids_with(str(self.socket)):
            _kill(pid)
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        from tests.e2e.realnode import remove_cgroup_root  # the node's (it imports this module)
        left = remove_cgroup_root(self.cgroup_parent)
        if left:
            raise RuntimeError(f"cgroups left behind: {left}")
        if self.made_run_dir and not _real_node_running():
            try:
                CONTAINERD_RUN_DIR.rmdir()
            except OSError:
                pass


def task_list(ctr_output: str) -> dict[str, tuple[int, str]]:
    """`ctr task ls` read: container ID -> (host PID, status). The real node's tasks too."""
    out: dict[str, tuple[int, str]] = {}
    for line in ctr_output.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 3:
            out[parts[0]] = (int(parts[1]), parts[2])
    return out


def _real_node_running() -> bool:
    """Whether another run's real node (tests/e2e/realnode.py, holding its lock) may have its own
    tmpfs on /run/containerd: removing the mount point here would detach that mount in the node's
    namespace (found when two suites ran at once), so the empty directory is then left to it."""
    import fcntl

    from tests.e2e.realnode import LOCK_FILE  # it imports this module
    try:
        with open(LOCK_FILE, "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(lock, fcntl.LOCK_UN)
    except OSError:
        return False
    return False


def _pids_with(needle: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle.encode() in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def new_workdir() -> Path:
    workdir = Path(tempfile.mkdtemp(prefix="llmss-ct-"))
    os.chmod(workdir, 0o711)  # a container's uid must traverse it to reach its log and rootfs
    return workdir


def whoami(body: str) -> dict[str, object]:
    return json.loads(body)
