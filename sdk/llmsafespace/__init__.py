"""LLMSafeSpace Python SDK: sandboxes on your own Kubernetes cluster, used through the gateway with
your own credentials (README "Run code in a sandbox", docs/gateway.md).

    from llmsafespace import Sandbox
    with Sandbox.create(runtime="python:3.11") as sandbox:
        print(sandbox.run("print(1)").stdout)
"""
from .connection import Connection
from .errors import (Forbidden, NotFound, NotReady, RuntimeUnreachable, SandboxError, Suspended, Timeout,
                     Unauthenticated)
from .sandbox import ExecResult, FileEntry, Files, RunResult, Sandbox, Session

__all__ = ["Connection", "ExecResult", "FileEntry", "Files", "Forbidden", "NotFound", "NotReady", "RunResult",
           "RuntimeUnreachable", "Sandbox", "SandboxError", "Session", "Suspended", "Timeout", "Unauthenticated"]
