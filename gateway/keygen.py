"""`python -m gateway keygen`: a new Ed25519 signing key as a Kubernetes Secret manifest.

The private key goes only into the Secret (stdout, to pipe into kubectl); the public key, which
every runtime must trust, is printed on stderr with the chart value to set (docs/gateway.md)."""
from __future__ import annotations

import argparse
import base64
import json
import sys
from typing import Optional, Sequence, TextIO

from .signing import generate

KEY_NAME = "ed25519.pem"
DEFAULT_SECRET = "llmsafespace-gateway-signing-key"


def main(argv: Optional[Sequence[str]] = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    parser = argparse.ArgumentParser(prog="llmsafespace gateway keygen",
                                     description="Print a Secret holding a new gateway signing key; its public key goes to stderr.")
    parser.add_argument("--namespace", "-n", default="llmsafespace", help="the gateway's namespace (the chart's release namespace)")
    parser.add_argument("--name", default=DEFAULT_SECRET, help="the Secret's name (chart value gateway.signingKey.secretName)")
    parser.add_argument("--public-key-out", help="also write the public key (base64) to this file")
    args = parser.parse_args(argv)
    pem, public = generate()
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
              "metadata": {"name": args.name, "namespace": args.namespace,
                           "labels": {"app.kubernetes.io/name": "llmsafespace", "app.kubernetes.io/component": "gateway"},
                           "annotations": {"llmsafespace.dev/gateway-public-key": public}},
              "data": {KEY_NAME: base64.b64encode(pem).decode()}}
    out.write(json.dumps(secret, indent=2) + "\n")
    if args.public_key_out:
        with open(args.public_key_out, "w") as fh:
            fh.write(public + "\n")
    err.write(f"public key: {public}\n"
              f"trust it in every runtime: helm upgrade ... --set-json 'runtimeAuth.gatewayPublicKeys=[\"{public}\"]' "
              "(keep the old key in the list during a rotation: docs/gateway.md)\n")
    return 0
