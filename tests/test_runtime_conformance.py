"""The conformance check passes against the reference runtime and fails, naming the rule and why,
against runtimes that each break one rule."""
from __future__ import annotations

import io
import os
import shlex

import pytest

from conformance.__main__ import main
from tests.runtime_util import ROOT, interpreter


def check(command: str, *extra: str) -> tuple[int, str]:
    out = io.StringIO()
    os.environ["PYTHONPATH"] = str(ROOT)
    return main(["--command", command, *extra], out), out.getvalue()


def test_the_reference_runtime_keeps_every_rule() -> None:
    code, out = check(f"{interpreter()} -m runtime")
    assert code == 0 and "FAIL" not in out and "11/11 rules kept" in out, out


# Each broken runtime is the reference one with one rule broken by a patch before it starts.
BROKEN = {
    "signatures": ("from runtime import auth\nauth.Verifier.verify = lambda self, *a, **k: "
                   "{'b': __import__('hashlib').sha256(b'').hexdigest()}\nauth.body_matches = lambda *a: None\n",
                   "a call without a signature was answered 200"),
    "SIGTERM exit within grace": ("import signal\n_orig = signal.signal\nsignal.signal = lambda s, h: _orig(s, signal.SIG_IGN)\n",
                                  "still running 3s after SIGTERM"),
    "non-root uid": ("import os\nos.geteuid = lambda: 1000\n", "the runtime runs as uid 0 (root)"),
}


@pytest.mark.parametrize("rule", sorted(BROKEN))
def test_a_runtime_breaking_a_rule_fails_with_the_reason(rule: str) -> None:
    patch, reason = BROKEN[rule]
    if rule == "non-root uid" and os.geteuid() != 0:
        pytest.skip("running a runtime as root needs root")
    script = patch + "import sys, runtime.__main__ as m\nsys.exit(m.main())\n"
    extra = ["--grace", "3"] + (["--uid", "0"] if rule == "non-root uid" else [])
    code, out = check(f"{interpreter()} -c {shlex.quote(script)}", *extra)
    assert code == 1, out
    line = next(l for l in out.splitlines() if l.startswith(f"FAIL {rule}:"))
    assert reason in line, out
