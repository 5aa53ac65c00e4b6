"""Several hook-server replicas behind one URL, as the chart runs them (a Deployment behind a
Service): N servers started the README's way (`./scripts/serve`, each on its own loopback port),
Debian's haproxy in front (round robin, health checks on /readyz, a failed connection retried on
another replica) standing in for the Service, and the chart upgraded so that every webhook names
the balancer. `kill()` ends one replica with SIGKILL, as a node failure would: what it had in
flight fails, Metacontroller retries, the balancer stops sending it anything.

Used by tests/e2e/test_e2e_resilience.py and by bench/e2e.py's replica section."""
from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Optional

from tests.e2e.controlplane import ControlPlane, Process, free_port, http_ok, install_chart, wait_until
from tests.tooling import tool

# What Metacontroller may log for calls in flight on a killed replica (it retries them): as with a
# restarted server, or haproxy's own answer when no retry was left (502/503). For allow_errors.
KILLED_REPLICA_ERRORS = (r"connection refused|connection reset by peer|: EOF|use of closed network connection|broken pipe|50[23]",
                         r"SyncError")
HAPROXY_CONFIG = """global
    maxconn 4096
defaults
    mode http
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    # A request whose connection failed, or that got no answer because its replica died, goes to
    # another replica (hook calls are pure functions: sending one twice is harmless).
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout
    option http-buffer-request
frontend hooks
    bind 127.0.0.1:{port}
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk GET /readyz
    default-server inter 500ms fastinter 200ms fall 1 rise 2
{servers}
"""


class HookReplicas:
    def __init__(self, cp: ControlPlane, count: int) -> None:
        self.cp, self.count = cp, count
        self.port = free_port()
        self.names: list[str] = []
        self.balancer: Optional[Process] = None
        self._previous_port = cp.ports["hooks"]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "HookReplicas":
        ports = []
        for i in range(self.count):
            name, port = f"hooks-replica-{i}", free_port()
            self.cp.start_hook_server(name, port)
            self.names.append(name)
            ports.append(port)
        config = self.cp.workdir / "haproxy.cfg"
        config.write_text(HAPROXY_CONFIG.format(port=self.port, servers="\n".join(
            f"    server r{i} 127.0.0.1:{p} check" for i, p in enumerate(ports))))
        self.balancer = Process("haproxy", [tool("haproxy"), "-db", "-f", str(config)], self.cp.logs / "haproxy.log").start()
        self.cp.processes["haproxy"] = self.balancer
        wait_until(lambda: http_ok(f"{self.url}/readyz"), 30, "haproxy in front of the hook replicas", process=self.balancer)
        # Every webhook names the balancer from now on (what a Service name in the chart does).
        self.cp.ports["hooks"] = self.port
        install_chart(self.cp, upgrade=True)
        return self

    def kill(self, index: int) -> None:
        """SIGKILL one replica's whole process group (master and workers), as a lost node would."""
        proc = self.cp.processes.pop(self.names[index])
        assert proc.pid is not None
        proc.stopping = True  # ours, not a crash
        os.killpg(proc.pid, signal.SIGKILL)
        if proc.popen is not None:
            proc.popen.wait(10)

    def stop(self) -> None:
        """Back to the one hook server the suite started; the chart names it again."""
        self.cp.ports["hooks"] = self._previous_port
        install_chart(self.cp, upgrade=True)
        for name in self.names:
            proc = self.cp.processes.pop(name, None)
            if proc is not None:
                proc.stop()
        if self.balancer is not None:
            self.cp.processes.pop("haproxy", None)
            self.balancer.stop()

    def served(self) -> dict[str, int]:
        """Hook calls each replica answered, from its access log."""
        counts = {}
        for name in self.names:
            log: Path = self.cp.logs / f"{name}.log"
            counts[name] = log.read_text(errors="replace").count('"event":"hook_call"') if log.exists() else 0
        return counts

