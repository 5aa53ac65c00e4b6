"""Request signatures: the API component (gateway) signs every call with its Ed25519 private key;
the runtime verifies with the public key(s) it was given (LLMSS_GATEWAY_PUBLIC_KEYS).

Header: `Authorization: LLMSS-Signature <b64url(payload_json)>.<b64url(sig)>` (no padding), where
sig = Ed25519(private key, the ASCII bytes of b64url(payload_json)) and the payload is
{"v":1,"aud":<pod uid>,"m":<method>,"p":<path with query, as sent>,"b":<hex sha256 of the body>,
 "iat":<unix s>,"exp":<unix s, exp - iat <= 60>,"jti":<random 128-bit hex>}.
Nothing a sandbox can read lets it mint a token (it holds no private key); a token seen by one
pod is useless for another (aud), for another request (m, p, b), after 60 s (exp), or twice (jti).
docs/runtime-contract.md states the scheme and its trade-offs."""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
import threading
import time
from typing import Any, Optional

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives import serialization

SCHEME = "LLMSS-Signature"
VERSION = 1
MAX_VALIDITY = 60  # exp - iat
MAX_FUTURE = 30  # iat may be this far ahead of our clock (skew)
MAX_TOKEN_CHARS = 4096
REPLAY_CACHE_ENTRIES = 100_000
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_HEX32 = re.compile(r"[0-9a-f]{32}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_FIELDS = {"v", "aud", "m", "p", "b", "iat", "exp", "jti"}


class AuthError(Exception):
    """A refused token: `check` names the rule (for the client and the metric), never a key."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(message)
        self.check = check


class KeyConfigError(ValueError):
    """A configured public key that is not the base64 of 32 raw bytes."""


def load_keys(items: tuple[str, ...]) -> tuple[Ed25519PublicKey, ...]:
    keys = []
    for item in items:
        try:
            raw = base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError):
            raise KeyConfigError(f"LLMSS_GATEWAY_PUBLIC_KEYS: entries must be standard base64; got {item!r}") from None
        if len(raw) != 32:
            raise KeyConfigError(f"LLMSS_GATEWAY_PUBLIC_KEYS: entries must be 32 raw bytes (an Ed25519 public key); "
                            f"{item!r} is {len(raw)}")
        keys.append(Ed25519PublicKey.from_public_bytes(raw))
    return tuple(keys)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    if not _B64URL.fullmatch(text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ReplayCache:
    """jti -> exp of every accepted token until it expires; bounded (a full cache refuses)."""

    def __init__(self, limit: int = REPLAY_CACHE_ENTRIES) -> None:
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()
        self._limit = limit

    def add(self, jti: str, exp: int, now: float) -> bool:
        """False when jti was seen (a replay) or the cache is full of live tokens."""
        with self._lock:
            if jti in self._seen:
                return False
            if len(self._seen) >= self._limit:
                self._seen = {k: e for k, e in self._seen.items() if e >= now}
                if len(self._seen) >= self._limit:
                    return False
            self._seen[jti] = exp
            return True


class Verifier:
    def __init__(self, keys: tuple[Ed25519PublicKey, ...], pod_uid: str, replay: Optional[ReplayCache] = None) -> None:
        self.keys = keys
        self.pod_uid = pod_uid
        self.replay = replay or ReplayCache()

    def verify(self, header: Optional[str], method: str, path: str, now: Optional[float] = None) -> dict[str, Any]:
        """The token's payload once everything but the body hash holds (the caller compares
        payload["b"] after reading the body, so an unsigned client never makes us read one)."""
        now = time.time() if now is None else now
        if not self.keys:
            raise AuthError("no_keys", "this runtime trusts no gateway key (LLMSS_GATEWAY_PUBLIC_KEYS is empty): "
                                       "every authenticated call is refused")
        if not self.pod_uid:
            raise AuthError("no_pod_uid", "this runtime does not know its pod UID (LLMSS_POD_UID is empty)")
        if not header:
            raise AuthError("missing", f"missing Authorization: {SCHEME} <token>")
        scheme, _, token = header.strip().partition(" ")
        if scheme != SCHEME or not token or len(token) > MAX_TOKEN_CHARS:
            raise AuthError("format", f"the Authorization header must be '{SCHEME} <payload>.<signature>'")
        body, sep, sig_text = token.strip().partition(".")
        try:
            if not sep:
                raise ValueError("no signature")
            signature = _unb64url(sig_text)
            payload = json.loads(_unb64url(body))
        except (ValueError, UnicodeDecodeError):
            raise AuthError("format", "the token is not base64url(payload JSON).base64url(signature)") from None
        for key in self.keys:
            try:
                key.verify(signature, body.encode("ascii"))
                break
            except InvalidSignature:
                continue
        else:
            raise AuthError("signature", "the signature is not valid for any trusted gateway key")
        if not isinstance(payload, dict) or set(payload) != _FIELDS or payload.get("v") != VERSION:
            raise AuthError("format", f"the payload must be a version {VERSION} object with exactly {sorted(_FIELDS)}")
        iat, exp = payload["iat"], payload["exp"]
        if not all(type(x) is int for x in (iat, exp)) or not all(isinstance(payload[f], str) for f in ("aud", "m", "p", "b", "jti")):
            raise AuthError("format", "iat and exp must be integers, the other fields strings")
        if payload["aud"] != self.pod_uid:
            raise AuthError("audience", "the token is for another pod (aud is not this pod's UID)")
        if payload["m"] != method:
            raise AuthError("method", f"the token is for method {payload['m']!r}, not {method!r}")
        if payload["p"] != path:
            raise AuthError("path", "the token is for another path (p must be the path and query exactly as sent)")
        if not _HEX64.fullmatch(payload["b"]):
            raise AuthError("format", "b must be the lower-case hex SHA-256 of the body")
        if exp - iat > MAX_VALIDITY or exp < iat:
            raise AuthError("validity", f"exp - iat must be between 0 and {MAX_VALIDITY} seconds")
        if exp < now:
            raise AuthError("expired", "the token has expired")
        if iat > now + MAX_FUTURE:
            raise AuthError("not_yet_valid", f"iat is more than {MAX_FUTURE} s in the future (clock skew?)")
        if not _HEX32.fullmatch(payload["jti"]):
            raise AuthError("format", "jti must be 32 lower-case hex digits (128 random bits)")
        if not self.replay.add(payload["jti"], exp, now):
            raise AuthError("replay", "this token was used before (jti seen)")
        return payload


def body_matches(payload: dict[str, Any], digest: str) -> None:
    if payload["b"] != digest:
        raise AuthError("body", "the body's SHA-256 is not the one the token was signed for")


# ---------------------------------------------------------------------------------------------
# Signing: the gateway's side, and the conformance tool's and tests' (with a test key).

def token(private_key: Ed25519PrivateKey, pod_uid: str, method: str, path: str, body: bytes = b"",
          now: Optional[float] = None, validity: int = 30, jti: Optional[str] = None, **override: Any) -> str:
    """The Authorization token for one request. `override` replaces payload fields (tests)."""
    now = int(time.time() if now is None else now)
    payload = {"v": VERSION, "aud": pod_uid, "m": method, "p": path, "b": hashlib.sha256(body).hexdigest(),
               "iat": now, "exp": now + validity, "jti": jti or secrets.token_hex(16)}
    payload.update(override)
    encoded = _b64url(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    return f"{encoded}.{_b64url(private_key.sign(encoded.encode('ascii')))}"


def sign(private_key: Ed25519PrivateKey, pod_uid: str, method: str, path: str, body: bytes = b"",
         now: Optional[float] = None) -> str:
    """The Authorization header value (RUNTIME-API: sign(private_key, pod_uid, method, path, body, now))."""
    return f"{SCHEME} {token(private_key, pod_uid, method, path, body, now)}"


def public_key_b64(private_key: Ed25519PrivateKey) -> str:
    raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def load_private_key(data: bytes) -> Ed25519PrivateKey:
    """A private key file: PEM (PKCS#8, `openssl genpkey -algorithm ed25519`) or the base64 of
    the raw 32-byte seed."""
    text = data.strip()
    if text.startswith(b"-----BEGIN"):
        key = serialization.load_pem_private_key(text, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the PEM key is not an Ed25519 key")
        return key
    raw = base64.b64decode(text, validate=True)
    if len(raw) != 32:
        raise ValueError("a raw key file must hold the base64 of the 32-byte Ed25519 seed")
    return Ed25519PrivateKey.from_private_bytes(raw)
