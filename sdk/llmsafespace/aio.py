"""llmsafespace.aio: the SDK for asyncio (pip install 'llmsafespace[async]', which adds aiohttp).

    from llmsafespace.aio import AsyncSandbox

    async with AsyncSandbox.create(runtime="python:3.11") as sandbox:    # deleted on exit
        async for event in sandbox.exec_stream("echo 1; sleep 1; echo 2"):
            print(event)
        print((await sandbox.run("print(6 * 7)")).stdout)

The same API as llmsafespace.Sandbox, awaited, and the same logic: requests, answers, NDJSON
streams, errors and the create/wait/suspend/resume/delete steps are llmsafespace._core's plans,
which this module carries out with aiohttp (the gateway) and worker threads (the API server).

Why the API server is reached through the sync kubernetes client in worker threads and not
kubernetes_asyncio or kubernetes.aio (kubernetes >= 37): it keeps ONE credential path for
both clients (kubeconfig, exec plugins, OIDC, in-cluster token rotation, and the bearer token the
gateway gets from the same configuration) and one error mapping; kubernetes_asyncio would be a
second client to install and keep in step, kubernetes.aio does not exist in the kubernetes
versions the SDK supports (>= 29) and is new. An SDK makes a handful of these calls per sandbox
(create, a watch while waiting, delete), so a thread each costs nothing that matters; a watch
that is cancelled is ended at once (its socket shut down, connection.Interrupt), and a call
already sent is seen through, so that a sandbox created as its task was cancelled is still
deleted."""
from __future__ import annotations

import asyncio
import functools
import inspect
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Coroutine, Generator, Optional, Union, Unpack

try:
    import aiohttp
    import yarl
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError("llmsafespace.aio needs aiohttp: pip install 'llmsafespace[async]'") from exc

from kubernetes import client as k8s_client

from . import _core as core
from ._core import (Call, Collector, Command, Event, Events, ExecOptions, ExecResult, FileEntry, Kube, Output, Pause, Plan,
                    RunResult, Runner, SandboxOptions, Step, Watch, answer_error, gateway_request, read_answer, stream_broken,
                    unreachable)
from .connection import Connection, Interrupt

__all__ = ["AsyncConnection", "AsyncFiles", "AsyncSandbox", "AsyncSession"]

_NETWORK_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)
# Threads for API-server calls, per connection, made as needed: a watch holds one for as long as its
# sandbox is waited for, so not the loop's default executor (cores + 4 threads), where a few waits
# would hold up every other call.
WORKER_THREADS = 256


class AsyncConnection:
    """Credentials, default namespace and the gateway, shared by every AsyncSandbox made with it;
    the arguments are Connection's (or `connection=`: a Connection whose credentials to use).
    Use it in one event loop; close() it (or `async with` it) when done."""

    def __init__(self, gateway_url: Optional[str] = None, *, kubeconfig: Optional[str] = None, context: Optional[str] = None,
                 namespace: Optional[str] = None, configuration: Optional[k8s_client.Configuration] = None,
                 gateway_ca: Optional[str] = None, connection: Optional[Connection] = None) -> None:
        self.sync = connection or Connection(gateway_url, kubeconfig=kubeconfig, context=context, namespace=namespace,
                                             configuration=configuration, gateway_ca=gateway_ca)
        self._own_sync = connection is None
        self.gateway_url, self.namespace = self.sync.gateway_url, self.sync.namespace
        self._http: Optional[aiohttp.ClientSession] = None
        self._threads: Optional[ThreadPoolExecutor] = None

    @classmethod
    async def open(cls, gateway_url: Optional[str] = None, **kwargs: Any) -> "AsyncConnection":
        """Made in a thread: reading the kubeconfig may run an exec plugin."""
        return await asyncio.to_thread(lambda: cls(gateway_url, **kwargs))

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            verify: Union[bool, str] = self.sync.verify  # a CA file, or requests' own bundle (certifi), as the sync client
            tls = ssl.create_default_context(cafile=verify if isinstance(verify, str) else _default_ca())
            # no cap on connections (like requests): each stream holds one while its command runs
            self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, ssl=tls), trust_env=True)
        return self._http

    def _in_thread(self, call: Callable[..., Any], *args: Any) -> "asyncio.Future[Any]":
        if self._threads is None:
            self._threads = ThreadPoolExecutor(WORKER_THREADS, thread_name_prefix="llmsafespace-kube")
        return asyncio.get_running_loop().run_in_executor(self._threads, functools.partial(call, *args))

    async def _bearer(self) -> str:
        # an exec plugin or the in-cluster token file may be read to refresh the token: not in the loop
        if self.sync.configuration.refresh_api_key_hook is not None:
            return await self._in_thread(self.sync.bearer)
        return self.sync.bearer()

    # -- plans: each step awaited ----------------------------------------------------------------

    async def run(self, plan: Plan[core.T]) -> core.T:
        """Carry a plan (llmsafespace._core) out, step by step."""
        runner = Runner(plan)
        late: Optional[BaseException] = None  # a cancellation that came while an API-server call was under way
        while runner.running:
            with runner as step:
                cancelled, late = late, None
                if cancelled is not None:  # thrown into the plan once it has that call's answer
                    raise cancelled
                runner.reply, late = await self._perform(step)
        if late is not None:
            raise late
        return runner.result  # type: ignore[no-any-return]

    async def _perform(self, step: Step) -> tuple[Any, Optional[BaseException]]:
        if isinstance(step, Kube):
            return await _seen_through(self._in_thread(getattr(self.sync, step.method), *step.args))
        if isinstance(step, Watch):
            return await self._next_change(step), None
        if isinstance(step, Pause):
            await asyncio.sleep(step.seconds)
            return None, None
        async with await self._send(step) as response:
            return read_answer(step.read, await response.read()), None

    async def _next_change(self, watch: Watch) -> Optional[Event]:
        interrupt = Interrupt()
        try:
            return await self._in_thread(self.sync.next_change, watch, interrupt)  # type: ignore[no-any-return]
        except asyncio.CancelledError:
            interrupt.fire()  # the thread's blocked read ends now, not when the watch would
            raise

    # -- the gateway -----------------------------------------------------------------------------

    async def stream(self, call: Call, last: str) -> AsyncIterator[Event]:
        """A streamed gateway call's events as they arrive, the stream ending with a `last` event
        (sent when first iterated)."""
        events = Events(last)
        async with await self._send(call) as response:
            try:
                async for chunk in response.content.iter_any():
                    for event in events.feed(chunk):
                        yield event
            except _NETWORK_ERRORS as exc:
                raise stream_broken(exc) from None
        for event in events.finish():
            yield event

    async def _send(self, call: Call) -> aiohttp.ClientResponse:
        """One gateway call; an error answer raises the matching SandboxError (with the sandbox's reason)."""
        request = gateway_request(self.gateway_url, await self._bearer(), call)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=request.connect_timeout, sock_read=request.read_timeout)
        try:
            response = await self._session().request(request.method, yarl.URL(request.url, encoded=True), data=request.data,
                                                     headers=request.headers, timeout=timeout, allow_redirects=False)
        except _NETWORK_ERRORS as exc:
            raise unreachable(self.gateway_url, exc) from None
        if response.status >= 400:
            async with response:
                raise answer_error(response.status, await response.read())
        return response

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._threads is not None:
            self._threads.shutdown(wait=False)  # a watch still open ends with its interrupt or timeout
            self._threads = None
        if self._own_sync:
            self.sync.close()

    async def __aenter__(self) -> "AsyncConnection":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


def _default_ca() -> Optional[str]:
    try:
        from requests.utils import DEFAULT_CA_BUNDLE_PATH
        return str(DEFAULT_CA_BUNDLE_PATH)
    except ImportError:  # pragma: no cover
        return None


async def _seen_through(call: "asyncio.Future[Any]") -> tuple[Any, Optional[BaseException]]:
    """A call in a worker thread goes on when its awaiter is cancelled: wait for its answer (a
    sandbox just created must be known to be deleted) and hand the cancellation back with it."""
    try:
        return await asyncio.shield(call), None
    except asyncio.CancelledError as cancelled:
        try:
            answer = await call
        except Exception:  # noqa: BLE001 - it failed: nothing to act on, the cancellation goes on
            raise cancelled from None
        return answer, cancelled


async def _collect(events: AsyncIterator[Event], on_stdout: Output, on_stderr: Output) -> Collector:
    collector = Collector(on_stdout, on_stderr)
    async for event in events:
        handled = collector.add(event)
        if inspect.isawaitable(handled):  # an async on_stdout / on_stderr
            await handled
    return collector


class AsyncFiles:
    """A sandbox's files, confined by its runtime to the writable paths (/workspace, /tmp)."""

    def __init__(self, sandbox: "AsyncSandbox") -> None:
        self._sandbox = sandbox

    async def write(self, path: str, data: Union[bytes, str]) -> int:
        """Create or replace `path` (parents created); returns its size."""
        return await self._sandbox._run(core.write_plan(self._sandbox, path, data))

    async def read(self, path: str) -> bytes:
        return await self._sandbox._run(core.read_plan(self._sandbox, path))

    async def read_text(self, path: str, encoding: str = "utf-8") -> str:
        return (await self.read(path)).decode(encoding)

    async def list(self, path: str = "/workspace") -> list[FileEntry]:
        return await self._sandbox._run(core.list_plan(self._sandbox, path))

    async def delete(self, path: str, recursive: bool = False) -> None:
        await self._sandbox._run(core.remove_plan(self._sandbox, path, recursive))


class AsyncSession:
    """Stateful Python in the sandbox (one process kept between runs); `async with`: closed on exit."""

    def __init__(self, sandbox: "AsyncSandbox", session_id: str) -> None:
        self.sandbox, self.id = sandbox, session_id

    def run_stream(self, code: str, *, timeout: Optional[float] = None) -> AsyncIterator[Event]:
        return self.sandbox.connection.stream(core.session_run_call(self.sandbox, self.id, code, timeout), "done")

    async def run(self, code: str, *, timeout: Optional[float] = None, on_stdout: Output = None,
                  on_stderr: Output = None) -> RunResult:
        return (await _collect(self.run_stream(code, timeout=timeout), on_stdout, on_stderr)).run_result()

    async def interrupt(self) -> None:
        await self.sandbox._run(core.session_verb_plan(self.sandbox, self.id, "interrupt"))

    async def restart(self) -> None:
        await self.sandbox._run(core.session_verb_plan(self.sandbox, self.id, "restart"))

    async def close(self) -> None:
        await self.sandbox._run(core.session_close_plan(self.sandbox, self.id))

    async def __aenter__(self) -> "AsyncSession":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


@dataclass
class AsyncSandbox(core.SandboxBase[AsyncConnection]):
    """Sandbox, for asyncio: make one with `await AsyncSandbox.create(...)` (or `async with
    AsyncSandbox.create(...) as sandbox`: deleted on exit, whatever happened) or AsyncSandbox.get()."""

    def __post_init__(self) -> None:
        self.files = AsyncFiles(self)
        self._own_connection = False  # made by create()/get(): closed with the sandbox's delete()

    async def _run(self, plan: Plan[core.T]) -> core.T:
        return await self.connection.run(plan)

    # -- lifecycle -------------------------------------------------------------------------------

    @classmethod
    def create(cls, runtime: str, *, namespace: Optional[str] = None, wait: bool = True, wait_timeout: float = 300.0,
               connection: Optional[AsyncConnection] = None, gateway_url: Optional[str] = None,
               **options: Unpack[SandboxOptions]) -> "Creating":
        """Sandbox.create(), to await or to `async with`."""
        async def create() -> AsyncSandbox:
            conn = connection or await AsyncConnection.open(gateway_url)
            ns = namespace or conn.namespace
            plan = core.create_plan(lambda obj: cls(obj["metadata"]["name"], ns, conn, obj), ns, runtime, options, wait, wait_timeout)
            return await cls._owning(conn, connection is None, plan)
        return Creating(create())

    @classmethod
    async def get(cls, name: str, *, namespace: Optional[str] = None, connection: Optional[AsyncConnection] = None,
                  gateway_url: Optional[str] = None) -> "AsyncSandbox":
        conn = connection or await AsyncConnection.open(gateway_url)
        sandbox = cls(name, namespace or conn.namespace, conn)
        return await cls._owning(conn, connection is None, _then(core.refresh_plan(sandbox), sandbox))

    @staticmethod
    async def _owning(conn: AsyncConnection, own: bool, plan: Plan["AsyncSandbox"]) -> "AsyncSandbox":
        try:
            sandbox = await conn.run(plan)
        except BaseException:
            if own:
                await conn.close()
            raise
        sandbox._own_connection = own
        return sandbox

    async def refresh(self) -> dict[str, Any]:
        return await self._run(core.refresh_plan(self))

    async def wait_ready(self, timeout: float = 300.0, *, resuming: bool = False) -> "AsyncSandbox":
        """Sandbox.wait_ready(): on a watch until the sandbox serves; NotReady, Suspended, Timeout with its reason."""
        return await self._run(core.wait_plan(self, timeout, resuming))

    async def suspend(self, wait: bool = True, timeout: float = 120.0) -> None:
        await self._run(core.suspend_plan(self, wait, timeout))

    async def resume(self, wait: bool = True, timeout: float = 300.0) -> None:
        await self._run(core.resume_plan(self, wait, timeout))

    async def delete(self) -> None:
        """Delete the Sandbox (gone already is fine), and close the connection create()/get() made for it."""
        try:
            await self._run(core.delete_plan(self))
        finally:
            if self._own_connection:
                await self.connection.close()

    async def __aenter__(self) -> "AsyncSandbox":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.delete()

    # -- code ------------------------------------------------------------------------------------

    def exec_stream(self, cmd: Command, **options: Unpack[ExecOptions]) -> AsyncIterator[Event]:
        """`async for event in sandbox.exec_stream(cmd)`: start, stdout/stderr chunks, exit."""
        return self.connection.stream(core.exec_call(self, core.command_body(cmd), options), "exit")

    async def exec(self, cmd: Command, *, on_stdout: Output = None, on_stderr: Output = None,
                   **options: Unpack[ExecOptions]) -> ExecResult:
        """Run a command to its end; on_stdout/on_stderr (plain or async functions) see output as it is produced."""
        return (await _collect(self.exec_stream(cmd, **options), on_stdout, on_stderr)).exec_result()

    def run_stream(self, code: str, *, language: str = "python", **options: Unpack[ExecOptions]) -> AsyncIterator[Event]:
        return self.connection.stream(core.exec_call(self, {"code": code, "language": language}, options), "exit")

    async def run(self, code: str, *, language: str = "python", on_stdout: Output = None, on_stderr: Output = None,
                  **options: Unpack[ExecOptions]) -> ExecResult:
        """Run code in a fresh interpreter (no state kept: use session() for that)."""
        return (await _collect(self.run_stream(code, language=language, **options), on_stdout, on_stderr)).exec_result()

    async def kill(self, exec_id: str) -> None:
        await self._run(core.kill_plan(self, exec_id))

    async def session(self, language: str = "python") -> AsyncSession:
        return AsyncSession(self, await self._run(core.session_plan(self, language)))

    async def sessions(self) -> list[dict[str, Any]]:
        return await self._run(core.sessions_plan(self))


def _then(plan: Plan[Any], value: core.T) -> Plan[core.T]:
    yield from plan
    return value


class Creating:
    """What AsyncSandbox.create() returns: await it for the sandbox, or `async with` it (the
    sandbox is deleted on exit, whatever happened)."""

    def __init__(self, creating: Coroutine[Any, Any, AsyncSandbox]) -> None:
        self._creating = creating
        self._sandbox: Optional[AsyncSandbox] = None

    def __await__(self) -> Generator[Any, None, AsyncSandbox]:
        return self._creating.__await__()

    async def __aenter__(self) -> AsyncSandbox:
        self._sandbox = await self._creating
        return self._sandbox

    async def __aexit__(self, *exc: Any) -> None:
        if self._sandbox is not None:
            await self._sandbox.delete()
