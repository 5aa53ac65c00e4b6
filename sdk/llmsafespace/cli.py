"""`llmsafespace exec` and `llmsafespace run`: a command or code in a sandbox, from a terminal,
through the gateway with your kubeconfig's credentials. Output streams as it is produced
(stdout to stdout, stderr to stderr).

  llmsafespace exec [options] SANDBOX -- CMD [ARG...]
  llmsafespace exec [options] --runtime python:3.11 -- CMD [ARG...]   (a sandbox just for this; deleted after)
  llmsafespace run  [options] SANDBOX (-c CODE | FILE | -)
  llmsafespace run  [options] --runtime python:3.11 -c 'print(1)'

Exit status: the command's own (128+N when killed by signal N, 124 when it timed out); 125 when
the sandbox, the gateway or the credentials failed (the message names the sandbox's reason)."""
from __future__ import annotations

import argparse
import sys
from typing import Any, Optional, Sequence, TextIO

from .connection import Connection
from .errors import SandboxError
from .sandbox import ExecResult, Sandbox

EXIT_SANDBOX_ERROR = 125
EXIT_TIMED_OUT = 124


def _parser(verb: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"llmsafespace {verb}", description=(
        "Run a command in a sandbox" if verb == "exec" else "Run code in a sandbox (a fresh interpreter each time)"))
    p.add_argument("sandbox", nargs="?", help="an existing Sandbox's name (or give --runtime)")
    p.add_argument("--runtime", help="create a sandbox of this runtime just for this call, deleted afterwards")
    p.add_argument("-n", "--namespace", help="the sandbox's namespace (default: the kubeconfig context's)")
    p.add_argument("--gateway", help="the gateway's URL (default: LLMSS_GATEWAY_URL)")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: KUBECONFIG, ~/.kube/config, or in-cluster)")
    p.add_argument("--context", help="kubeconfig context")
    p.add_argument("--timeout", type=float, help="seconds the command may run (the runtime's default: 60)")
    p.add_argument("--wait", type=float, default=60.0,
                   help="seconds to wait for the sandbox to be running (resumed if suspended and you may patch it); default 60")
    p.add_argument("-e", "--env", action="append", default=[], metavar="NAME=VALUE", help="an environment variable (repeatable)")
    p.add_argument("--cwd", help="working directory in the sandbox (under /workspace or /tmp)")
    if verb != "exec":
        p.add_argument("-c", dest="code", help="the code")
        p.add_argument("--language", default="python")
        p.add_argument("file", nargs="?", help="a file of code, or - for stdin")
    return p


def _env(pairs: Sequence[str], p: argparse.ArgumentParser) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            p.error(f"--env wants NAME=VALUE, got {pair!r}")
        out[name] = value
    return out


def _status(result: ExecResult) -> int:
    if result.timed_out:
        return EXIT_TIMED_OUT
    if result.signal:
        return 128 + int(result.signal)
    return int(result.exit_code if result.exit_code is not None else EXIT_SANDBOX_ERROR)


def main(verb: str, argv: Sequence[str], out: TextIO = sys.stdout, err: TextIO = sys.stderr,
         stdin: Optional[TextIO] = None) -> int:
    p = _parser(verb)
    argv = list(argv)
    cmd: list[str] = []
    if verb == "exec":  # everything after the first -- is the command, options included (as kubectl exec)
        if "--" not in argv:
            p.error("no command: llmsafespace exec SANDBOX -- CMD [ARG...]")
        cut = argv.index("--")
        argv, cmd = argv[:cut], argv[cut + 1:]
        if not cmd:
            p.error("no command after --")
    args = p.parse_args(argv)
    if verb == "run" and args.sandbox and args.file is None and args.code is None and args.runtime:
        args.file, args.sandbox = args.sandbox, None  # `run --runtime R FILE`
    if bool(args.sandbox) == bool(args.runtime):
        p.error("name a SANDBOX or give --runtime (not both)")
    env = _env(args.env, p)
    code = ""
    if verb == "run":
        if (args.code is None) == (args.file is None):
            p.error("give the code with -c CODE, or a FILE (- for stdin)")
        if args.code is not None:
            code = args.code
        elif args.file == "-":
            code = (stdin or sys.stdin).read()
        else:
            try:
                with open(args.file, encoding="utf-8") as fh:
                    code = fh.read()
            except OSError as exc:
                p.error(f"cannot read {args.file}: {exc.strerror}")

    def write(stream: TextIO) -> Any:
        def emit(data: str) -> None:
            stream.write(data)
            stream.flush()
        return emit

    sandbox: Optional[Sandbox] = None
    created = False
    try:
        conn = Connection(args.gateway, kubeconfig=args.kubeconfig, context=args.context, namespace=args.namespace)
        if args.runtime:
            sandbox, created = Sandbox.create(args.runtime, connection=conn, wait_timeout=max(args.wait, 1.0)), True
        else:
            sandbox = Sandbox(args.sandbox, conn.namespace, conn)
        sandbox.wait = args.wait
        options: dict[str, Any] = {"timeout": args.timeout, "env": env or None, "cwd": args.cwd,
                                   "on_stdout": write(out), "on_stderr": write(err)}
        if verb == "exec":
            result = sandbox.exec(cmd, **options)
        else:
            result = sandbox.run(code, language=args.language, **options)
        return _status(result)
    except SandboxError as exc:
        reason = f" [{exc.reason}]" if exc.reason and exc.reason not in str(exc) else ""
        err.write(f"error: {exc}{reason}\n")
        return EXIT_SANDBOX_ERROR
    except KeyboardInterrupt:
        return 130
    finally:
        if sandbox is not None and created:
            sandbox.delete()
