"""The calls the gateway forwards, and the permission each needs.

A gateway path `/v1/namespaces/<ns>/sandboxes/<name>/<rest>` maps to the runtime's `/v1/<rest>`
(RUNTIME-API v1) when (method, rest) is in this table, and only then: anything else is 404 before
a token is even reviewed. Query parameters other than the runtime's own (`path`, `recursive`)
never reach the runtime."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

EXEC, FILES = "exec", "files"


@dataclass(frozen=True)
class Operation:
    name: str  # metrics label and log field
    subresource: str
    verb: str
    streams: bool = False  # an NDJSON stream whose length is the execution's


# An id never starts with a dot, so "." and ".." cannot make the forwarded path climb out of its prefix.
_ID = r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}"
TABLE: tuple[tuple[str, "re.Pattern[str]", Operation], ...] = tuple(
    (method, re.compile(pattern), op) for method, pattern, op in (
        ("POST", r"exec", Operation("exec", EXEC, "create", streams=True)),
        ("POST", rf"exec/{_ID}/kill", Operation("exec_kill", EXEC, "create")),
        ("GET", r"sessions", Operation("session_list", EXEC, "create")),
        ("POST", r"sessions", Operation("session_create", EXEC, "create")),
        ("DELETE", rf"sessions/{_ID}", Operation("session_delete", EXEC, "create")),
        ("POST", rf"sessions/{_ID}/run", Operation("session_run", EXEC, "create", streams=True)),
        ("POST", rf"sessions/{_ID}/interrupt", Operation("session_interrupt", EXEC, "create")),
        ("POST", rf"sessions/{_ID}/restart", Operation("session_restart", EXEC, "create")),
        ("GET", r"files", Operation("file_read", FILES, "get")),
        ("GET", r"files/list", Operation("file_list", FILES, "get")),
        ("PUT", r"files", Operation("file_write", FILES, "create")),
        ("DELETE", r"files", Operation("file_delete", FILES, "delete")),
    ))
NAMES = tuple(sorted({op.name for _, _, op in TABLE}))
FORWARDED_QUERY = ("path", "recursive")


def find(method: str, rest: str) -> Optional[Operation]:
    for m, pattern, op in TABLE:
        if m == method and pattern.fullmatch(rest):
            return op
    return None
