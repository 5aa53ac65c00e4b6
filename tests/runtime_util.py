"""Starting the reference runtime as a process for the tests: on 127.0.0.1, a free port, uid 1000
when the suite runs as root, only temporary writable paths (conformance/launch.py)."""
from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

import pytest

from conformance.launch import Launched, launch

ROOT = Path(__file__).resolve().parent.parent


@functools.cache
def _interpreter() -> Optional[str]:
    for exe in (sys.executable, "/usr/bin/python3"):
        try:
            probe = subprocess.run([exe, "-c", "import cryptography"], capture_output=True, cwd="/",
                                   **({"user": 1000, "group": 1000, "extra_groups": []} if os.geteuid() == 0 else {}))  # type: ignore[arg-type]
        except OSError:
            continue
        if probe.returncode == 0:
            return exe
    return None


def interpreter() -> str:
    """A Python with cryptography that uid 1000 can run: ours unless it lives under a private
    home (pyenv under /root), else Debian's /usr/bin/python3 with python3-cryptography, which
    ./scripts/test installs when it runs as root (tools/install_tools.py, runtime-python). Skips,
    in one line saying what is missing, only where neither can be had."""
    exe = _interpreter()
    if exe is None:
        who = "uid 1000" if os.geteuid() == 0 else f"uid {os.geteuid()}"
        pytest.skip(f"runtime tests: no Python that {who} can run imports cryptography "
                    f"({sys.executable} is out of its reach or lacks it; /usr/bin/python3 needs python3-cryptography, "
                    f"which tools/install_tools.py --only runtime-python installs as root)")
    return exe


@functools.cache
def source_path() -> str:
    """Where the runtime's uid imports runtime/ (and tests/broken_runtime.py) from: the checkout
    when that uid can read it, else a root-owned, world-readable copy made once per test run (a
    checkout in root's home or a `mktemp -d`, mode 700; the copy is read-only to the runtime, as
    in its image)."""
    probe_env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    as_runtime = {"user": 1000, "group": 1000, "extra_groups": []} if os.geteuid() == 0 else {}
    probe = subprocess.run([interpreter(), "-c", "import runtime.__main__, tests.broken_runtime"], env=probe_env,
                           cwd="/", capture_output=True, **as_runtime)  # type: ignore[arg-type]
    if probe.returncode == 0:
        return str(ROOT)
    copy = tempfile.mkdtemp(prefix="llmss-runtime-src-")
    os.chmod(copy, 0o755)
    atexit.register(shutil.rmtree, copy, True)
    shutil.copytree(ROOT / "runtime", os.path.join(copy, "runtime"), ignore=shutil.ignore_patterns("__pycache__"))
    os.mkdir(os.path.join(copy, "tests"), 0o755)
    shutil.copy2(ROOT / "tests" / "broken_runtime.py", os.path.join(copy, "tests", "broken_runtime.py"))
    for dirpath, dirnames, filenames in os.walk(copy):
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o755)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o644)
    return copy


def start(script: Optional[str] = None, env: Optional[dict[str, str]] = None, uid: Optional[int] = None) -> Launched:
    """The runtime, or `script` (Python source run with the repository on sys.path) instead."""
    command = [interpreter(), "-m", "runtime"] if script is None else [interpreter(), "-c", script]
    full = {"PYTHONPATH": source_path(), **(env or {})}
    launched = launch(command, uid=uid, env=full)
    assert launched.exited is None, open(launched.log).read()
    return launched
