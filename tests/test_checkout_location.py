"""The suite does not depend on where the checkout lives (issue 24): a copy in a directory only
root may enter (mode 700, as root's home and `mktemp -d` are), with a space in its path, runs the
real-squid tests as root, where squid runs as nobody."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tooling import ROOT, tool


def _private_clone(tmp_path: Path) -> Path:
    """A copy of the checkout inside a mode-700 directory (a home or `mktemp -d`), spaces in both names."""
    private = tmp_path / "private home"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    clone = private / "llm safe space"
    clone.mkdir()
    _copy_checkout(clone)
    return clone


def _copy_checkout(dest: Path) -> None:
    """The tracked files as they are in the work tree, and the installed squid (.tools/squid and
    its .tools/bin link): a clone plus what scripts/test installs, without the other tools."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    installed = Path(tool("squid")).resolve().parent.parent
    shutil.copytree(installed, dest / ".tools" / "squid", symlinks=True)
    (dest / ".tools" / "bin").mkdir()
    (dest / ".tools" / "bin" / "squid").symlink_to("../squid/bin/squid")


@pytest.mark.skipif(os.geteuid() != 0, reason="squid runs as nobody only when the suite runs as root")
def test_squid_tests_pass_from_a_private_checkout_with_a_space_in_its_path(tmp_path: Path) -> None:
    clone = _private_clone(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "LLMSS_"))}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_egress_proxy_squid.py",
                           "-k", "no_rules_refuse_everything or listed_names_pass"],
                          cwd=clone, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout, done.stdout[-2000:]


@pytest.mark.skipif(os.geteuid() != 0, reason="the runtime runs as uid 1000 only when the suite runs as root")
def test_runtime_tests_pass_from_a_private_checkout(tmp_path: Path) -> None:
    """uid 1000 cannot read a checkout under a mode-700 directory: the runtime tests start it from
    a world-readable copy of runtime/ (tests/runtime_util.source_path) and still pass, none skipped."""
    clone = _private_clone(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "LLMSS_", "PYTHONPATH"))}
    tests = ["tests/test_runtime_conformance.py::test_the_reference_runtime_keeps_every_rule",
             "tests/test_runtime_conformance.py::test_a_runtime_breaking_a_rule_fails_with_the_reason[sessions keep state]",
             "tests/test_runtime_server.py::test_exit_code_stdin_env_and_cwd"]
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
                          cwd=clone, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "3 passed" in done.stdout and "skipped" not in done.stdout, done.stdout[-2000:]
