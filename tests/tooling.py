"""Where the external test tools live: .tools/bin, filled by tools/install_tools.py.

Tests call ``tool("helm")`` instead of relying on PATH, so a test never silently picks up some
other helm/kubectl from the machine image. A missing tool is an error, never a skip: CI installs
them all (scripts/test runs the installer before pytest).
"""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS_BIN = ROOT / ".tools" / "bin"
KNOWN = ("helm", "kubectl", "checkov", "nca", "hadolint", "squid", "haproxy")


def tool(name: str) -> str:
    """Absolute path of .tools/bin/<name>; RuntimeError if it is not installed."""
    if name not in KNOWN:
        raise ValueError(f"unknown tool {name!r}; known: {', '.join(KNOWN)}")
    path = TOOLS_BIN / name
    if not os.access(path, os.X_OK):  # follows the checkov/nca symlinks into their venvs
        raise RuntimeError(
            f"{name} is not installed at {path}: run tools/install_tools.py "
            f"(or scripts/test, which runs it)"
        )
    return str(path)
