"""Sandbox: create one, wait for it on a watch, run code and commands with streamed output, keep
Python state in sessions, move files, suspend, resume, delete (docs/gateway.md, README).

The logic is llmsafespace._core's (shared with the async client, llmsafespace.aio); this module
runs it in the calling thread, through a Connection."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Optional, Union, Unpack

from . import _core as core
from ._core import (ANNOTATION_LAST_ACTIVITY, ANNOTATION_USE_WARM_POD, Collector, Command, Event, ExecOptions, ExecResult,
                    FileEntry, Output, RunResult, SandboxOptions)
from .connection import Connection

__all__ = ["ANNOTATION_LAST_ACTIVITY", "ANNOTATION_USE_WARM_POD", "Command", "Event", "ExecOptions", "ExecResult", "FileEntry",
           "Files", "Output", "RunResult", "Sandbox", "SandboxOptions", "Session"]


def _collect(events: Iterator[Event], on_stdout: Output, on_stderr: Output) -> Collector:
    collector = Collector(on_stdout, on_stderr)
    for event in events:
        collector.add(event)
    return collector


class Files:
    """A sandbox's files, confined by its runtime to the writable paths (/workspace, /tmp)."""

    def __init__(self, sandbox: "Sandbox") -> None:
        self._sandbox = sandbox

    def write(self, path: str, data: Union[bytes, str]) -> int:
        """Create or replace `path` (parents created); returns its size."""
        return self._sandbox._run(core.write_plan(self._sandbox, path, data))

    def read(self, path: str) -> bytes:
        return self._sandbox._run(core.read_plan(self._sandbox, path))

    def read_text(self, path: str, encoding: str = "utf-8") -> str:
        return self.read(path).decode(encoding)

    def list(self, path: str = "/workspace") -> list[FileEntry]:
        return self._sandbox._run(core.list_plan(self._sandbox, path))

    def delete(self, path: str, recursive: bool = False) -> None:
        self._sandbox._run(core.remove_plan(self._sandbox, path, recursive))


class Session:
    """Stateful Python in the sandbox (one process, kept between runs, like a notebook's kernel).
    A context manager: closed (deleted) on exit."""

    def __init__(self, sandbox: "Sandbox", session_id: str) -> None:
        self.sandbox, self.id = sandbox, session_id

    def run_stream(self, code: str, *, timeout: Optional[float] = None) -> Iterator[Event]:
        return self.sandbox.connection.stream(core.session_run_call(self.sandbox, self.id, code, timeout), "done")

    def run(self, code: str, *, timeout: Optional[float] = None, on_stdout: Output = None, on_stderr: Output = None) -> RunResult:
        return _collect(self.run_stream(code, timeout=timeout), on_stdout, on_stderr).run_result()

    def interrupt(self) -> None:
        self.sandbox._run(core.session_verb_plan(self.sandbox, self.id, "interrupt"))

    def restart(self) -> None:
        self.sandbox._run(core.session_verb_plan(self.sandbox, self.id, "restart"))

    def close(self) -> None:
        self.sandbox._run(core.session_close_plan(self.sandbox, self.id))

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@dataclass
class Sandbox(core.SandboxBase[Connection]):
    """A Sandbox object on the cluster and the calls into it. Make one with Sandbox.create() (or
    Sandbox.get() for an existing one); as a context manager it is deleted on exit, whatever happened.
    `wait`: seconds each call waits for the sandbox to be Running (resumed on demand when it is
    suspended and you may patch it; docs/gateway.md)."""

    def __post_init__(self) -> None:
        self.files = Files(self)

    def _run(self, plan: core.Plan[core.T]) -> core.T:
        return self.connection.run(plan)

    # -- lifecycle -------------------------------------------------------------------------------

    @classmethod
    def create(cls, runtime: str, *, namespace: Optional[str] = None, wait: bool = True, wait_timeout: float = 300.0,
               connection: Optional[Connection] = None, gateway_url: Optional[str] = None,
               **options: Unpack[SandboxOptions]) -> "Sandbox":
        """Create a Sandbox (options: SandboxOptions; warm by default) and, unless wait=False,
        wait on a watch until it serves. If waiting fails the sandbox is deleted and the error says why."""
        conn = connection or Connection(gateway_url)
        ns = namespace or conn.namespace
        return conn.run(core.create_plan(lambda obj: cls(obj["metadata"]["name"], ns, conn, obj), ns, runtime, options, wait,
                                         wait_timeout))

    @classmethod
    def get(cls, name: str, *, namespace: Optional[str] = None, connection: Optional[Connection] = None,
            gateway_url: Optional[str] = None) -> "Sandbox":
        conn = connection or Connection(gateway_url)
        sandbox = cls(name, namespace or conn.namespace, conn)
        sandbox.refresh()
        return sandbox

    def refresh(self) -> dict[str, Any]:
        return self._run(core.refresh_plan(self))

    def wait_ready(self, timeout: float = 300.0, *, resuming: bool = False) -> "Sandbox":
        """Block on a watch (no polling) until the sandbox serves. NotReady when it failed or
        ended, Suspended when it is suspended (unless `resuming`: then until it is back), Timeout
        (with its last reason) when time runs out."""
        return self._run(core.wait_plan(self, timeout, resuming))

    def suspend(self, wait: bool = True, timeout: float = 120.0) -> None:
        """operatingMode Suspended: the pod goes, the volume stays (docs/suspend.md)."""
        self._run(core.suspend_plan(self, wait, timeout))

    def resume(self, wait: bool = True, timeout: float = 300.0) -> None:
        """operatingMode Running and fresh activity (which also ends an idle suspension)."""
        self._run(core.resume_plan(self, wait, timeout))

    def delete(self) -> None:
        """Delete the Sandbox (its pod, policies and Delete volumes go with it); gone already is fine."""
        self._run(core.delete_plan(self))

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.delete()

    # -- code ------------------------------------------------------------------------------------

    def exec_stream(self, cmd: Command, **options: Unpack[ExecOptions]) -> Iterator[Event]:
        """The runtime's events as they come: start, stdout/stderr chunks, exit (RUNTIME-API v1).
        `cmd` a list runs as is; a string runs under /bin/sh -c."""
        return self.connection.stream(core.exec_call(self, core.command_body(cmd), options), "exit")

    def exec(self, cmd: Command, *, on_stdout: Output = None, on_stderr: Output = None, **options: Unpack[ExecOptions]) -> ExecResult:
        """Run a command to its end; on_stdout/on_stderr see output as it is produced."""
        return _collect(self.exec_stream(cmd, **options), on_stdout, on_stderr).exec_result()

    def run_stream(self, code: str, *, language: str = "python", **options: Unpack[ExecOptions]) -> Iterator[Event]:
        return self.connection.stream(core.exec_call(self, {"code": code, "language": language}, options), "exit")

    def run(self, code: str, *, language: str = "python", on_stdout: Output = None, on_stderr: Output = None,
            **options: Unpack[ExecOptions]) -> ExecResult:
        """Run code in a fresh interpreter (no state kept: use session() for that)."""
        return _collect(self.run_stream(code, language=language, **options), on_stdout, on_stderr).exec_result()

    def kill(self, exec_id: str) -> None:
        """Kill a running execution's process group (its id is ExecResult.id / the start event's).
        NotFound when it is not running (any more)."""
        self._run(core.kill_plan(self, exec_id))

    def session(self, language: str = "python") -> Session:
        return Session(self, self._run(core.session_plan(self, language)))

    def sessions(self) -> list[dict[str, Any]]:
        return self._run(core.sessions_plan(self))
