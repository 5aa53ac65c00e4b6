"""Start a runtime as a process under the contract's constraints: a non-root uid (1000 unless
given; only when we are root), only fresh temporary writable paths, the env the hooks set
(LLMSS_GATEWAY_PUBLIC_KEYS with a test key of our own, LLMSS_POD_UID, LLMSS_RUNTIME_WRITABLE),
listening on 127.0.0.1 on a free port."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Optional

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from runtime import auth

from .client import Client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Launched:
    proc: subprocess.Popen[bytes]
    client: Client
    writable: tuple[str, ...]
    scratch: str
    uid: int
    log: str = ""
    exited: Optional[int] = field(default=None)

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        shutil.rmtree(self.scratch, ignore_errors=True)


def launch(command: list[str], uid: Optional[int] = None, env: Optional[dict[str, str]] = None,
           wait: float = 30.0, cwd: str = "/") -> Launched:
    key = Ed25519PrivateKey.generate()
    pod_uid = str(uuid.uuid4())
    port = free_port()
    scratch = tempfile.mkdtemp(prefix="llmss-conformance-")
    os.chmod(scratch, 0o755)
    writable = (os.path.join(scratch, "tmp"), os.path.join(scratch, "workspace"))
    if uid is None:
        uid = 1000 if os.geteuid() == 0 else os.geteuid()
    for path in writable:
        os.mkdir(path, 0o755)
        if os.geteuid() == 0:
            os.chown(path, uid, uid)
    full_env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": writable[1], "TMPDIR": writable[0], "LANG": "C.UTF-8",
                "LLMSS_RUNTIME_BIND": f"127.0.0.1:{port}", "LLMSS_RUNTIME_WRITABLE": ":".join(writable),
                "LLMSS_GATEWAY_PUBLIC_KEYS": auth.public_key_b64(key), "LLMSS_POD_UID": pod_uid}
    if "PYTHONPATH" in os.environ:  # where the runtime package is, when run from a checkout
        full_env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    full_env.update(env or {})
    log_path = os.path.join(scratch, "runtime.log")
    with open(log_path, "wb") as log:
        kwargs = {"user": uid, "group": uid, "extra_groups": []} if os.geteuid() == 0 and uid != 0 else {}
        proc = subprocess.Popen(command, env=full_env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, **kwargs)  # type: ignore[arg-type]
    launched = Launched(proc, Client(f"http://127.0.0.1:{port}", key, pod_uid), writable, scratch, uid, log_path)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            if launched.client.request("GET", "/health").status == 200:
                return launched
        except OSError:
            time.sleep(0.05)
    launched.exited = proc.poll()
    return launched


def log_tail(launched: Launched, chars: int = 2000) -> str:
    try:
        with open(launched.log, "rb") as f:
            return f.read().decode("utf-8", "replace")[-chars:]
    except OSError:
        return ""
