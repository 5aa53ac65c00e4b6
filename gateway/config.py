"""The gateway's settings, all from the environment (the chart sets each one; docs/gateway.md)."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Mapping, Optional


class ConfigError(ValueError):
    """A setting is wrong: the message names the variable and the rule."""


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


@dataclass(frozen=True)
class Settings:
    signing_key_file: str
    # Outside a cluster (scripts/serve-gateway, the e2e harness): a kubeconfig; in a pod: empty.
    kubeconfig: Optional[str] = None
    # Authentication and authorisation decisions are reused this long (a revoked token or a removed
    # RoleBinding is honoured at most this long), in at most cache_size entries per process.
    auth_cache_seconds: int = 10
    auth_cache_size: int = 10000
    # Required audiences of callers' tokens (TokenReview spec.audiences); empty: the API server's.
    token_audiences: tuple[str, ...] = ()
    # llmsafespace.dev/last-activity is written at most once per interval per sandbox.
    activity_interval_seconds: int = 60
    runtime_port: int = 8080
    connect_timeout_seconds: int = 5
    # Longest wait for a sandbox to become Running (?wait=true), whatever the caller asks.
    max_wait_seconds: int = 300
    # Largest request body forwarded (file uploads; the runtime's own default limit is 100 MiB).
    max_body_bytes: int = 100 * 1024 * 1024
    # Seconds between streamed bytes after which a silent runtime counts as unreachable, on top of
    # the execution's own timeout.
    stream_grace_seconds: int = 30

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Settings":
        key = env.get("LLMSS_GATEWAY_SIGNING_KEY_FILE", "").strip()
        if not key:
            raise ConfigError("LLMSS_GATEWAY_SIGNING_KEY_FILE must name the Ed25519 private key file "
                              "(create one with: python -m gateway keygen)")
        audiences = tuple(a.strip() for a in env.get("LLMSS_GATEWAY_TOKEN_AUDIENCES", "").split(",") if a.strip())
        return cls(
            signing_key_file=key,
            kubeconfig=env.get("KUBECONFIG", "").strip() or None,
            auth_cache_seconds=_int(env, "LLMSS_GATEWAY_AUTH_CACHE_SECONDS", 10, 0, 300),
            auth_cache_size=_int(env, "LLMSS_GATEWAY_AUTH_CACHE_SIZE", 10000, 1, 1_000_000),
            token_audiences=audiences,
            activity_interval_seconds=_int(env, "LLMSS_GATEWAY_ACTIVITY_INTERVAL_SECONDS", 60, 1, 3600),
            runtime_port=_int(env, "LLMSS_GATEWAY_RUNTIME_PORT", 8080, 1, 65535),
            connect_timeout_seconds=_int(env, "LLMSS_GATEWAY_CONNECT_TIMEOUT_SECONDS", 5, 1, 60),
            max_wait_seconds=_int(env, "LLMSS_GATEWAY_MAX_WAIT_SECONDS", 300, 0, 3600),
            max_body_bytes=_int(env, "LLMSS_GATEWAY_MAX_BODY_BYTES", 100 * 1024 * 1024, 1024, 1024 ** 3),
            stream_grace_seconds=_int(env, "LLMSS_GATEWAY_STREAM_GRACE_SECONDS", 30, 1, 600),
        )


VARIABLES = tuple(f"LLMSS_GATEWAY_{f.name.upper()}" for f in fields(Settings) if f.name != "kubeconfig")
