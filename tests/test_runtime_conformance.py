"""The conformance check passes against the reference runtime and fails, naming the rule and why,
against runtimes that each break one rule."""
from __future__ import annotations

import io
import os
import shlex

import pytest

from conformance.__main__ import main
from conformance.checks import CHECKS
from tests.broken_runtime import BREAKS, NEEDS_ROOT
from tests.runtime_util import interpreter, source_path


def check(command: str, *extra: str) -> tuple[int, str]:
    """conformance's CLI (it passes our PYTHONPATH on to the runtime it starts)."""
    out = io.StringIO()
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = source_path()
    try:
        return main(["--command", command, *extra], out), out.getvalue()
    finally:
        if saved is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = saved


def test_the_reference_runtime_keeps_every_rule() -> None:
    code, out = check(f"{interpreter()} -m runtime")
    assert code == 0 and "FAIL" not in out and "11/11 rules kept" in out, out


# Each broken runtime is the reference one with one rule broken (tests/broken_runtime.py), and
# the reason the check must give. Every rule of the check has one.
REASONS = {
    "probes": "GET /ready answered 503",
    "signatures": "a call without a signature was answered 200",
    "non-root uid": "the runtime runs as uid 0 (root)",
    "read-only root": "paths outside the writable paths are writable: ['/opt']",
    "writable paths": "HOME and TMPDIR of executions must be inside the writable paths",
    "exec streaming": "output is not streamed",
    "timeout kills the group": "the process group was not killed",
    "sessions keep state": "a session did not keep its state",
    "files and path escapes": "GET /etc/passwd (outside the writable paths) answered 200, not refused",
    "errors are JSON": "malformed JSON was answered 400 with a body that is not a JSON error",
    "SIGTERM exit within grace": "still running 3s after SIGTERM",
}
# Rules that cannot be broken alone: root may write the root filesystem.
ALSO_BROKEN = {"non-root uid": {"read-only root"}}


def test_every_rule_has_a_broken_runtime() -> None:
    assert set(REASONS) == set(BREAKS) == {name for name, _ in CHECKS}


@pytest.mark.parametrize("rule", sorted(REASONS))
def test_a_runtime_breaking_a_rule_fails_with_the_reason(rule: str) -> None:
    if rule in NEEDS_ROOT and os.geteuid() != 0:
        pytest.skip(f"the broken runtime for {rule!r} is started as root: needs root")
    command = f"{interpreter()} -m tests.broken_runtime {shlex.quote(rule)}"
    extra = ["--grace", "3"] + (["--uid", "0"] if rule in NEEDS_ROOT else [])
    code, out = check(command, *extra)
    assert code == 1, out
    failed = {line[5:].split(":", 1)[0] for line in out.splitlines() if line.startswith("FAIL ")}
    assert failed == {rule} | ALSO_BROKEN.get(rule, set()), out  # the broken rule, named, and only it
    line = next(l for l in out.splitlines() if l.startswith(f"FAIL {rule}:"))
    assert REASONS[rule] in line, out
