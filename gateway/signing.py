"""Signing of every call the gateway forwards to a sandbox's runtime (RUNTIME-API v1, docs/runtime-contract.md).

`Authorization: LLMSS-Signature <b64url(payload)>.<b64url(Ed25519 signature of the first part)>`;
the payload binds the token to one pod (aud = pod UID), one request (method, path with query,
sha256 of the body) and a lifetime of at most 60 s, with a random jti the runtime remembers.
Nothing in a sandbox can mint one: only the gateway holds the private key."""
from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

SCHEME = "LLMSS-Signature"
# The contract allows up to 60 s; a short life keeps a captured token useless sooner.
TOKEN_LIFETIME_SECONDS = 30
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class SigningKeyError(ValueError):
    """The signing key cannot be used (named in the message, the key never printed)."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_key_b64(key: Ed25519PrivateKey) -> str:
    """The form runtimes trust (LLMSS_GATEWAY_PUBLIC_KEYS): standard padded base64 of the 32 raw bytes."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """A PKCS#8 PEM Ed25519 private key (what `python -m gateway keygen` writes)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"cannot read the signing key file {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise SigningKeyError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def generate() -> tuple[bytes, str]:
    """A new key: (PKCS#8 PEM of the private key, base64 of the public key)."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return pem, public_key_b64(key)


@dataclass(frozen=True)
class Signer:
    key: Ed25519PrivateKey
    lifetime: int = TOKEN_LIFETIME_SECONDS

    @property
    def public_key(self) -> str:
        return public_key_b64(self.key)

    def header(self, pod_uid: str, method: str, path: str, body_sha256: str, now: float) -> str:
        """The Authorization header value for one request to one pod. `path` includes the query
        string exactly as it will be sent."""
        iat = int(now)
        payload = {"v": 1, "aud": pod_uid, "m": method.upper(), "p": path, "b": body_sha256,
                   "iat": iat, "exp": iat + self.lifetime, "jti": secrets.token_hex(16)}
        first = _b64url(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
        return f"{SCHEME} {first}.{_b64url(self.key.sign(first.encode('ascii')))}"
