"""Bearer-token authentication of hook calls (Metacontroller >= 4.16 `webhook.authorization`).

The token comes from LLMSS_HOOK_TOKEN_FILE (the chart mounts the Secret there) or, for a server
run by hand, LLMSS_HOOK_TOKEN. A configured source that yields no token stops the server at
start-up: an empty Secret must never switch authentication off.

The file is re-read by every worker at most every HOOK_TOKEN_RECHECK_SECONDS, so a rotated
Secret is honoured everywhere within a bounded time, and the token it replaced is still accepted
for HOOK_TOKEN_OVERLAP_SECONDS after the worker saw the change (rotation procedure:
docs/install.md). The decisions are pure functions of a TokenState and a monotonic clock value;
TokenSource adds the file reading.

The state is per process, so a worker that starts after the file changed (one still loading when
it changed, or one the master restarts during the overlap) would know only the new token. The
gunicorn master therefore keeps a TokenSource too, re-reads the file before every fork
(hooks/server/gunicorn_conf.py) and each worker begins from the state it inherits (`inherited`):
the previous token stays accepted there as well until the overlap ends."""
from __future__ import annotations

import hmac
import logging
from time import monotonic
from dataclasses import dataclass, replace
from typing import Callable, Mapping, Optional

from .. import constants as C
from . import logging_setup

log = logging.getLogger(logging_setup.HOOK_LOGGER)
# Set in the gunicorn master (before it forks the workers, which inherit it); None elsewhere.
inherited: Optional["TokenSource"] = None
SCHEME = "bearer"  # RFC 7235: auth-scheme names are case-insensitive


class TokenConfigError(ValueError):
    """A configured token source yields no token: the server must not start."""


@dataclass(frozen=True)
class TokenState:
    current: bytes
    previous: Optional[bytes] = None  # the token `current` replaced, accepted until previous_until
    previous_until: float = 0.0  # monotonic seconds
    checked_at: float = 0.0  # when the source was last read


def parse_token(text: str, setting: str) -> bytes:
    """The token in a file's or variable's text; surrounding whitespace (a trailing newline) is not
    part of it, and nothing left is an error naming the setting."""
    token = text.strip()
    if not token:
        raise TokenConfigError(f"{setting} is set but holds no token (empty or only whitespace); "
                               f"write the token there, or unset {setting} to run without authentication")
    return token.encode()


def credentials(authorization: str) -> Optional[bytes]:
    """The token of an `Authorization: Bearer <token>` header, any case of the scheme; None for
    another scheme or none."""
    scheme, _, rest = authorization.partition(" ")
    if scheme.lower() != SCHEME:
        return None
    return rest.lstrip(" ").encode()


def accepts(state: TokenState, authorization: str, now: float) -> bool:
    """Constant-time: both tokens are compared whenever the previous one is still valid."""
    sent = credentials(authorization)
    if sent is None:
        return False
    ok = hmac.compare_digest(sent, state.current)
    if state.previous is not None and now < state.previous_until:
        ok = hmac.compare_digest(sent, state.previous) | ok
    return ok


def due(state: TokenState, now: float, recheck: float = C.HOOK_TOKEN_RECHECK_SECONDS) -> bool:
    return now - state.checked_at >= recheck


def observed(state: TokenState, token: Optional[bytes], now: float,
             overlap: float = C.HOOK_TOKEN_OVERLAP_SECONDS, changed_ago: float = 0.0) -> TokenState:
    """The state after reading the source at `now`: a new token becomes current and the old one is
    accepted for `overlap` more seconds (less `changed_ago`, when the reader knows the change is
    that old); None (unreadable or empty now) keeps the current token, so a half-written Secret
    never opens the server."""
    if token is None or token == state.current:
        return replace(state, checked_at=now)
    return TokenState(current=token, previous=state.current, previous_until=now - changed_ago + overlap, checked_at=now)


class TokenSource:
    """One worker's view of the token: re-reads the file when due, on the request path (the read
    of a small file every few seconds costs nothing next to a hook call)."""

    def __init__(self, path: Optional[str], token: bytes, clock: Callable[[], float] = monotonic) -> None:
        self.path = path
        self.clock = clock
        self.state = TokenState(current=token, checked_at=clock())

    def accepts(self, authorization: str) -> bool:
        now = self.clock()
        if self.path is not None and due(self.state, now):
            self.refresh(self.read(), now)
        return accepts(self.state, authorization, now)

    def refresh(self, token: Optional[bytes], now: float, announce: bool = True, changed_ago: float = 0.0) -> None:
        """Take what the file held at `now` (None: unreadable, keep the current token)."""
        before = self.state.current
        self.state = observed(self.state, token, now, changed_ago=changed_ago)
        if announce and self.state.current != before:
            self.announce(now)

    def announce(self, now: float) -> None:
        """One hook_token_rotated line: operators wait for one per worker (docs/install.md)."""
        log.warning("hook token changed; the previous one is accepted for %d s more",
                    int(self.state.previous_until - now), extra={"fields": {"event": "hook_token_rotated"}})

    def read(self) -> Optional[bytes]:
        assert self.path is not None
        try:
            with open(self.path, encoding="utf-8") as handle:
                return parse_token(handle.read(), C.HOOK_TOKEN_FILE_ENV)
        except (OSError, UnicodeDecodeError, TokenConfigError) as exc:
            log.error("cannot re-read the hook token; keeping the current one: %s", exc,
                      extra={"fields": {"event": "hook_token_unreadable"}})
            return None


def from_env(env: Mapping[str, str], clock: Callable[[], float] = monotonic) -> Optional[TokenSource]:
    """The configured token source, or None when neither variable is set (no authentication).
    A set variable that yields no token raises TokenConfigError naming it."""
    path = env.get(C.HOOK_TOKEN_FILE_ENV)
    if path is not None and path.strip():
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenConfigError(f"{C.HOOK_TOKEN_FILE_ENV}={path!r} cannot be read: {exc}") from exc
        token = parse_token(text, C.HOOK_TOKEN_FILE_ENV)
        source = TokenSource(path, token, clock)
        if inherited is not None and inherited.path == path:  # a worker: continue the master's state
            now = clock()
            source.state = inherited.state
            source.refresh(token, now, announce=False)
            if source.state.previous is not None and now < source.state.previous_until:
                source.announce(now)  # whether this worker or the master saw the change
        return source
    if path is not None:
        raise TokenConfigError(f"{C.HOOK_TOKEN_FILE_ENV} is set but empty; name the token file, or unset it")
    if C.HOOK_TOKEN_ENV in env:
        return TokenSource(None, parse_token(env[C.HOOK_TOKEN_ENV], C.HOOK_TOKEN_ENV), clock)
    return None
