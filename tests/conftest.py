"""Suite-wide: one line at the top of every run saying where the end-to-end suite's real control
plane comes from, or what is missing and how to get it (tests/e2e then skip, pointing here); and
SIGTERM (a CI runner's timeout, `kill`) stops the run as Ctrl-C does, so the fixtures still stop
every process they started (tests/procs.die_with_parent covers a SIGKILL); and the Hypothesis
profile (tests/strategies.py: derandomized unless LLMSS_LONG=1)."""
from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Optional

import pytest
from hypothesis import settings

from tests import strategies
from tests.e2e.controlplane import bin_dir, skip_reason


def _interrupt(signum: int, frame: Optional[FrameType]) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    settings.load_profile(strategies.PROFILE_NAME)  # tests with their own @settings inherit it
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


def pytest_report_header(config: pytest.Config) -> str:
    reason = skip_reason()
    return f"e2e: {reason}" if reason else f"e2e: real control plane from {bin_dir()}"
