"""Suite-wide: one line at the top of every run saying where the end-to-end suite's real control
plane comes from, or what is missing and how to get it (tests/e2e then skip, pointing here)."""
from __future__ import annotations

import pytest

from tests.e2e.controlplane import bin_dir, skip_reason


def pytest_report_header(config: pytest.Config) -> str:
    reason = skip_reason()
    return f"e2e: {reason}" if reason else f"e2e: real control plane from {bin_dir()}"
