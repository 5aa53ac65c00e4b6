"""python -m conformance (also `llmsafespace conformance`): check a runtime against the contract.

  python -m conformance http://HOST:PORT --key KEY_FILE --pod-uid UID [--writable /tmp:/workspace]
  python -m conformance --command "python3 -m runtime" [--uid 1000]

The first checks a running endpoint (e.g. a pod through kubectl port-forward) with the gateway's
private key; the second starts the runtime itself as a process under the contract's constraints
with its own test key, and also checks SIGTERM. Every broken rule is printed with its reason;
exit 1 if any, 0 if none, 2 on a bad command line."""
from __future__ import annotations

import argparse
import shlex
import sys
from typing import Optional, Sequence

from runtime import auth

from .checks import Target, run_checks
from .client import Client
from .launch import launch, log_tail


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llmsafespace conformance", description=__doc__.split("\n\n")[0])
    p.add_argument("url", nargs="?", help="a running runtime, e.g. http://127.0.0.1:8080")
    p.add_argument("--key", help="the gateway's Ed25519 private key (PEM, or base64 of the 32-byte seed)")
    p.add_argument("--pod-uid", help="the pod's UID (kubectl get pod NAME -o jsonpath='{.metadata.uid}')")
    p.add_argument("--writable", default="/tmp:/workspace", help="the pod's writable paths (default /tmp:/workspace)")
    p.add_argument("--command", help="start the runtime with this command line instead")
    p.add_argument("--uid", type=int, help="uid to start --command as when run as root (default 1000)")
    p.add_argument("--grace", type=float, default=10.0, help="seconds a runtime may take to exit after SIGTERM")
    return p


def main(argv: Optional[Sequence[str]] = None, out=sys.stdout) -> int:
    args = parser().parse_args(argv)
    launched = None
    if args.command:
        launched = launch(shlex.split(args.command), uid=args.uid)
        if launched.exited is not None or launched.proc.poll() is not None:
            print(f"FAIL start: the runtime exited ({launched.proc.poll()}) or never answered /health:\n{log_tail(launched)}", file=out)
            launched.stop()
            return 1
        target = Target(launched.client, launched.writable, launched, args.grace)
    elif args.url:
        if not args.key or not args.pod_uid:
            print("llmsafespace conformance: an endpoint needs --key and --pod-uid", file=sys.stderr)
            return 2
        try:
            with open(args.key, "rb") as f:
                key = auth.load_private_key(f.read())
        except (OSError, ValueError) as exc:
            print(f"llmsafespace conformance: cannot read the key {args.key}: {exc}", file=sys.stderr)
            return 2
        target = Target(Client(args.url.rstrip("/"), key, args.pod_uid), tuple(p for p in args.writable.split(":") if p),
                        None, args.grace)
    else:
        print("llmsafespace conformance: give a URL or --command", file=sys.stderr)
        return 2
    try:
        results = run_checks(target)
    finally:
        if launched is not None:
            launched.stop()
    failed = 0
    for name, reason in results:
        print(f"{'FAIL' if reason else 'ok  '} {name}{': ' + reason if reason else ''}", file=out)
        failed += bool(reason)
    print(f"{len(results) - failed}/{len(results)} rules kept", file=out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
