"""`python -m runtime`: serve until SIGTERM (or SIGINT), then stop accepting, kill running
executions' process groups, close sessions and exit 0."""
from __future__ import annotations

import os
import signal
import sys
import threading
import time

from . import auth
from .server import Runtime, Server, log
from .settings import SettingsError, from_env

REAP_SECONDS = 2.0


def reap_orphans(known: set[int]) -> None:
    """As PID 1 of the container, every orphan of an execution becomes our child: collect the
    zombies among them, never a process the executor or sessions wait for themselves."""
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in known:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == b"Z" and int(fields[1]) == me:
            try:
                os.waitpid(int(entry), os.WNOHANG)
            except ChildProcessError:
                pass


def main() -> int:
    try:
        settings = from_env()
        runtime = Runtime(settings)
    except (SettingsError, auth.KeyConfigError) as exc:
        print(f"llmss-runtime: {exc}", file=sys.stderr)
        return 2
    if os.geteuid() == 0:
        print("llmss-runtime: refusing to run as root (the runtime contract: any non-root uid)", file=sys.stderr)
        return 2
    try:
        server = Server(runtime)
    except OSError as exc:
        print(f"llmss-runtime: cannot listen on {settings.host}:{settings.port}: {exc.strerror}", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    serving.start()
    log("info", "serving", address=f"{settings.host}:{server.server_address[1]}", writable=settings.writable,
        keys=len(runtime.verifier.keys), pod_uid_set=bool(settings.pod_uid))
    while not stop.wait(REAP_SECONDS):
        if os.getpid() == 1:
            reap_orphans(runtime.executor.known_pids() | runtime.sessions.known_pids())
    started = time.monotonic()
    runtime.draining = True
    server.shutdown()  # stop accepting; streams in flight end as their processes are killed
    runtime.executor.kill_all()
    runtime.sessions.close_all()
    server.server_close()
    log("info", "stopped", seconds=round(time.monotonic() - started, 3))
    return 0


if __name__ == "__main__":
    sys.exit(main())
