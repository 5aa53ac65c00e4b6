"""The runtime's settings, read once from the environment at start (docs/runtime-contract.md).

Only what is fixed for the pod's lifetime is read (pod UID, trusted keys, limits): a warm pod that
is assigned to a sandbox later serves it unchanged."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Mapping, TypeVar

DEFAULT_PORT = 8080
DEFAULT_WRITABLE = "/tmp:/workspace"
MiB = 1024 * 1024


class SettingsError(ValueError):
    """One line naming the variable and the rule; the server exits 2 with it."""


@dataclass(frozen=True)
class Settings:
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    writable: tuple[str, ...] = ("/tmp", "/workspace")
    public_keys: tuple[str, ...] = ()  # base64 raw Ed25519 keys, validated by auth.load_keys
    pod_uid: str = ""
    max_output_bytes: int = 10 * MiB
    max_concurrent: int = 16
    max_sessions: int = 16
    max_file_bytes: int = 100 * MiB
    max_request_bytes: int = 8 * MiB  # JSON bodies (code, stdin, env)
    max_connections: int = 256
    header_timeout: float = 15.0  # request line + headers must arrive within this
    idle_timeout: float = 30.0  # any single read from a client (headers, body, keep-alive)
    kill_grace: float = 2.0  # a timed-out session gets SIGINT, then SIGKILL after this


N = TypeVar("N", int, float)


def _number(env: Mapping[str, str], name: str, default: N, low: N, high: N, parse: Callable[[str], N], what: str) -> N:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise SettingsError(f"{name}: must be {what}; got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}: must be between {low} and {high}; got {value}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    return _number(env, name, default, low, high, int, "an integer")


def _float(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    return _number(env, name, default, low, high, float, "a number of seconds")


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    host, port = "0.0.0.0", _int(env, "LLMSS_RUNTIME_PORT", DEFAULT_PORT, 1, 65535)
    bind = env.get("LLMSS_RUNTIME_BIND", "").strip()
    if bind:
        host, sep, port_text = bind.rpartition(":")
        if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise SettingsError(f"LLMSS_RUNTIME_BIND: must be HOST:PORT; got {bind!r}")
        host, port = host.strip("[]"), int(port_text)
    writable = []
    for item in env.get("LLMSS_RUNTIME_WRITABLE", DEFAULT_WRITABLE).split(":"):
        item = item.strip()
        if not item:
            continue
        if not item.startswith("/") or "\0" in item or ".." in item.split("/"):
            raise SettingsError(f"LLMSS_RUNTIME_WRITABLE: entries must be absolute paths without '..'; got {item!r}")
        writable.append(os.path.normpath(item))
    if not writable:
        raise SettingsError("LLMSS_RUNTIME_WRITABLE: must name at least one directory")
    keys = tuple(k.strip() for k in env.get("LLMSS_GATEWAY_PUBLIC_KEYS", "").split(",") if k.strip())
    return Settings(
        host=host,
        port=port,
        writable=tuple(writable),
        public_keys=keys,
        pod_uid=env.get("LLMSS_POD_UID", "").strip(),
        max_output_bytes=_int(env, "LLMSS_RUNTIME_MAX_OUTPUT_BYTES", 10 * MiB, 1024, 1024 * MiB),
        max_concurrent=_int(env, "LLMSS_RUNTIME_MAX_CONCURRENT", 16, 1, 1024),
        max_sessions=_int(env, "LLMSS_RUNTIME_MAX_SESSIONS", 16, 1, 1024),
        max_file_bytes=_int(env, "LLMSS_RUNTIME_MAX_FILE_BYTES", 100 * MiB, 1, 64 * 1024 * MiB),
        max_request_bytes=_int(env, "LLMSS_RUNTIME_MAX_REQUEST_BYTES", 8 * MiB, 1024, 1024 * MiB),
        max_connections=_int(env, "LLMSS_RUNTIME_MAX_CONNECTIONS", 256, 1, 65536),
        header_timeout=_float(env, "LLMSS_RUNTIME_HEADER_TIMEOUT", 15.0, 0.1, 3600),
        idle_timeout=_float(env, "LLMSS_RUNTIME_IDLE_TIMEOUT", 30.0, 0.1, 3600),
        kill_grace=_float(env, "LLMSS_RUNTIME_KILL_GRACE", 2.0, 0.0, 60),
    )
