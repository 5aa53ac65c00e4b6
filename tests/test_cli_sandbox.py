"""`llmsafespace exec` / `run` (sdk/llmsafespace/cli.py through hooks.offline.cli:main) against the
loopback cluster of tests/test_sdk.py: output streamed to the right stream, the command's exit
status, ephemeral sandboxes deleted, errors naming the sandbox's reason."""
from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any

from hooks.offline import cli
from tests.test_sdk import ALICE, BOB, NS, cluster, kubeconfig  # noqa: F401 - cluster is a fixture

ROOT = Path(__file__).resolve().parent.parent


def llmsafespace(cluster: dict[str, Any], *argv: str, token: str = ALICE, stdin: str = "") -> tuple[int, str, str]:
    config = kubeconfig(cluster["tmp"], cluster["api"], token, f"cli-{token}")
    out, err = io.StringIO(), io.StringIO()
    verb, rest = argv[0], list(argv[1:])
    code = cli.main([verb, "--gateway", cluster["url"], "--kubeconfig", config, *rest], out, err)
    return code, out.getvalue(), err.getvalue()


def sandbox_name(cluster: dict[str, Any]) -> str:
    from llmsafespace import Sandbox

    return Sandbox.create(runtime="python", connection=cluster["alice"]).name


def test_exec_streams_both_streams_and_returns_the_exit_status(cluster: dict[str, Any]) -> None:
    name = sandbox_name(cluster)
    code, out, err = llmsafespace(cluster, "exec", name, "--", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (code, out, err) == (7, "out\n", "err\n")
    code, out, _ = llmsafespace(cluster, "exec", name, "-e", "GREETING=hi", "--", "sh", "-c", 'echo "$GREETING"')
    assert (code, out) == (0, "hi\n")
    code, _, _ = llmsafespace(cluster, "exec", name, "--timeout", "1", "--", "sleep", "30")
    assert code == 124


def test_run_code_from_an_option_a_file_or_stdin(cluster: dict[str, Any], tmp_path: Path) -> None:
    name = sandbox_name(cluster)
    assert llmsafespace(cluster, "run", name, "-c", "print(6 * 7)")[:2] == (0, "42\n")
    script = tmp_path / "job.py"
    script.write_text("import sys\nprint('from a file')\nsys.exit(3)\n")
    assert llmsafespace(cluster, "run", name, str(script))[:2] == (3, "from a file\n")


def test_an_ephemeral_sandbox_is_deleted_afterwards(cluster: dict[str, Any]) -> None:
    before = set(cluster["api"].sandboxes)
    assert llmsafespace(cluster, "run", "--runtime", "python", "-n", NS, "-c", "print('once')")[:2] == (0, "once\n")
    assert set(cluster["api"].sandboxes) == before
    code, _, err = llmsafespace(cluster, "exec", "--runtime", "broken", "--", "true")
    assert code == 125 and "ImagePullBackOff" in err and set(cluster["api"].sandboxes) == before


def test_refusals_are_one_line_with_exit_125(cluster: dict[str, Any]) -> None:
    name = sandbox_name(cluster)
    code, out, err = llmsafespace(cluster, "exec", name, "--", "id", token=BOB)
    assert code == 125 and out == "" and err.startswith("error: ") and "sandboxes/exec" in err and err.count("\n") == 1
    code, _, err = llmsafespace(cluster, "run", "nope", "-c", "1")
    assert code == 125 and "not found" in err


def test_bad_command_lines_are_usage_errors() -> None:
    for argv in (["exec", "--gateway", "http://127.0.0.1:1", "sb"], ["run", "--gateway", "http://127.0.0.1:1", "sb"],
                 ["exec", "--gateway", "http://127.0.0.1:1", "--", "true"]):
        done = subprocess.run([sys.executable, "-m", "hooks", *argv], cwd=ROOT, capture_output=True, text=True,
                              env={"PYTHONPATH": f"{ROOT}:{ROOT / 'sdk'}", "PATH": "/usr/bin:/bin"})
        assert done.returncode == 2 and "usage: llmsafespace" in done.stderr, (argv, done.stderr)
