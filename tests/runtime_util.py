"""Starting the reference runtime as a process for the tests: on 127.0.0.1, a free port, uid 1000
when the suite runs as root, only temporary writable paths (conformance/launch.py)."""
from __future__ import annotations

import functools
import os
import subprocess
import sys
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


def start(script: Optional[str] = None, env: Optional[dict[str, str]] = None, uid: Optional[int] = None) -> Launched:
    """The runtime, or `script` (Python source run with the repository on sys.path) instead."""
    command = [interpreter(), "-m", "runtime"] if script is None else [interpreter(), "-c", script]
    full = {"PYTHONPATH": str(ROOT), **(env or {})}
    launched = launch(command, uid=uid, env=full)
    assert launched.exited is None, open(launched.log).read()
    return launched
