"""Who is calling and what they may do: TokenReview, then SubjectAccessReview, both cached briefly.

Cache entries are keyed by the SHA-256 of the token (never the token itself), kept for
`ttl` seconds in a bounded LRU per process. A refusal is cached like a grant, so a flood of bad
tokens costs the API server one review per token per TTL. An API server error is never cached.

Authorisation is on virtual subresources of sandboxes, granted like pods/exec:
- `sandboxes/exec`, verb `create`: executions, runs, sessions (all of them run code);
- `sandboxes/files`, verb `get` to read or list files, `create` to write, `delete` to delete;
- `sandboxes`, verb `patch`: resuming a suspended sandbox on demand (what `kubectl patch` needs)."""
from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Generic, Hashable, Optional, TypeVar

from .kube import GROUP, Kube

V = TypeVar("V")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


class TTLCache(Generic[V]):
    """A bounded LRU whose entries expire; thread-safe (gunicorn threads share one)."""

    def __init__(self, ttl: float, size: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl, self.size, self.clock = ttl, size, clock
        self._data: "OrderedDict[Hashable, tuple[float, V]]" = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Optional[V]:
        with self._lock:
            hit = self._data.get(key)
            if hit is None:
                return None
            if hit[0] <= self.clock():
                del self._data[key]
                return None
            self._data.move_to_end(key)
            return hit[1]

    def put(self, key: Hashable, value: V) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            self._data[key] = (self.clock() + self.ttl, value)
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


@dataclass(frozen=True)
class User:
    username: str
    uid: str
    groups: tuple[str, ...]
    extra: tuple[tuple[str, tuple[str, ...]], ...]

    @classmethod
    def from_review(cls, user: dict[str, Any]) -> "User":
        extra = user.get("extra") or {}
        return cls(str(user.get("username", "")), str(user.get("uid", "")),
                   tuple(str(g) for g in user.get("groups") or ()),
                   tuple(sorted((str(k), tuple(str(x) for x in v or ())) for k, v in extra.items())))


@dataclass(frozen=True)
class Identity:
    """The outcome of a TokenReview: a user, or why there is none."""

    user: Optional[User]
    error: str = ""


class Access:
    def __init__(self, kube: Kube, ttl: float, size: int, audiences: tuple[str, ...] = (),
                 clock: Callable[[], float] = time.monotonic, on_cache: Callable[[str, bool], None] = lambda kind, hit: None) -> None:
        self.kube, self.audiences = kube, audiences
        self.identities: TTLCache[Identity] = TTLCache(ttl, size, clock)
        self.decisions: TTLCache[tuple[bool, str]] = TTLCache(ttl, size, clock)
        self.on_cache = on_cache

    def authenticate(self, token: str) -> Identity:
        key = token_hash(token)
        cached = self.identities.get(key)
        self.on_cache("tokenreview", cached is not None)
        if cached is not None:
            return cached
        status = (self.kube.token_review(token, self.audiences).get("status") or {})
        if not status.get("authenticated"):
            identity = Identity(None, str(status.get("error") or "the token was not accepted"))
        elif self.audiences and not set(status.get("audiences") or ()) & set(self.audiences):
            identity = Identity(None, "the token is not meant for the gateway (audience)")
        else:
            identity = Identity(User.from_review(status.get("user") or {}))
        self.identities.put(key, identity)
        return identity

    def authorize(self, token: str, user: User, namespace: str, name: str, resource: str, subresource: str,
                  verb: str) -> tuple[bool, str]:
        """(allowed, the authoriser's reason). The key carries the token hash, so a grant to one
        token is never reused for another, even of the same user."""
        key = (token_hash(token), namespace, name, resource, subresource, verb)
        cached = self.decisions.get(key)
        self.on_cache("subjectaccessreview", cached is not None)
        if cached is not None:
            return cached
        spec: dict[str, Any] = {
            "user": user.username, "uid": user.uid, "groups": list(user.groups),
            "resourceAttributes": {"namespace": namespace, "verb": verb, "group": GROUP, "resource": resource,
                                   "subresource": subresource, "name": name},
        }
        if user.extra:
            spec["extra"] = {k: list(v) for k, v in user.extra}
        status = self.kube.subject_access_review(spec).get("status") or {}
        decision = (bool(status.get("allowed")) and not status.get("denied"), str(status.get("reason") or ""))
        self.decisions.put(key, decision)
        return decision
