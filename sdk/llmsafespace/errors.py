"""Errors of the SDK: each names what went wrong and, where there is one, the sandbox's own reason
(the reason of its Ready or Suspended condition, as the controllers wrote it)."""
from __future__ import annotations

from typing import Any, Mapping, Optional


class SandboxError(Exception):
    """Something a sandbox or the gateway refused. `code` is the gateway's error code
    (docs/gateway.md) or the SDK's own; `reason`/`phase` are the sandbox's, when known."""

    def __init__(self, message: str, *, code: str = "error", status: Optional[int] = None,
                 sandbox: Optional[Mapping[str, Any]] = None) -> None:
        self.code, self.status = code, status
        self.sandbox: dict[str, Any] = dict(sandbox or {})
        self.reason: Optional[str] = self.sandbox.get("reason")
        self.phase: Optional[str] = self.sandbox.get("phase")
        self.condition: Optional[str] = self.sandbox.get("condition")
        super().__init__(message)


class Unauthenticated(SandboxError):
    """The gateway did not accept the credentials (no bearer token, expired or unknown token)."""


class Forbidden(SandboxError):
    """RBAC refused: sandboxes/exec or sandboxes/files (docs/gateway.md, "Roles")."""


class NotFound(SandboxError):
    """No such sandbox (or session, or file)."""


class NotReady(SandboxError):
    """The sandbox is not Running and Ready (yet): `reason` says why; or it failed or ended."""


class Suspended(SandboxError):
    """The sandbox is suspended and was not resumed (no patch right, or no wait asked)."""


class RuntimeUnreachable(SandboxError):
    """The gateway could not reach the sandbox's runtime."""


class Timeout(SandboxError):
    """Waiting for the sandbox ran out of time; `reason` is its state at that moment."""


_BY_CODE: dict[str, type[SandboxError]] = {
    "unauthenticated": Unauthenticated, "forbidden": Forbidden, "sandbox_not_found": NotFound, "not_found": NotFound,
    "sandbox_not_ready": NotReady, "sandbox_ended": NotReady, "sandbox_suspended": Suspended,
    "runtime_unreachable": RuntimeUnreachable, "runtime_rejected_gateway": RuntimeUnreachable,
}


def from_answer(status: int, body: Any) -> SandboxError:
    """The error of a gateway (or runtime) JSON answer: {"error": {"code", "message", "sandbox"}}."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return SandboxError(f"the gateway answered HTTP {status}", code="http_error", status=status)
    code = str(error.get("code") or "error")
    sandbox = error.get("sandbox") if isinstance(error.get("sandbox"), dict) else None
    message = str(error.get("message") or code)
    cls = _BY_CODE.get(code, NotFound if status == 404 else SandboxError)
    return cls(message, code=code, status=status, sandbox=sandbox)
