"""Processes the tests and benchmarks start die with them."""
from __future__ import annotations

import ctypes
import signal
from typing import Callable, Optional

# prctl(PR_SET_PDEATHSIG, SIGKILL) in a child between fork and exec: it dies with the thread that
# started it, so a test run killed outright (SIGKILL; SIGTERM is handled in tests/conftest.py)
# leaves no server behind. Resolved once here, not in the forked child. Linux only; elsewhere a no-op.
_PR_SET_PDEATHSIG = 1
try:
    _prctl: Optional[Callable[..., int]] = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _prctl = None


def die_with_parent() -> None:
    """A subprocess.Popen preexec_fn; processes started from the main thread only (a child gets the
    signal when the starting *thread* ends)."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
