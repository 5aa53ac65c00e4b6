"""The async SDK (llmsafespace.aio) end to end on the loopback cluster of tests/test_sdk.py (the fake
API server and its "controllers", the gateway, the real runtime), mirroring that file's tests; and
that the sync and async clients run the same code (llmsafespace._core) for everything but I/O."""
from __future__ import annotations

import asyncio
import gc
import re
import threading
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator

import pytest
from kubernetes import client as k8s_client
from werkzeug.serving import make_server

from llmsafespace import Connection, Forbidden, NotFound, NotReady, Sandbox, SandboxError, Suspended, Timeout, _core
from llmsafespace import aio
from llmsafespace import connection as sync_connection
from llmsafespace.aio import AsyncConnection, AsyncSandbox
from tests.test_sdk import ALICE, NS, cluster, kubeconfig  # noqa: F401 - cluster is a fixture

ROOT = Path(__file__).resolve().parent.parent


def run(main: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(main())  # type: ignore[arg-type]


def alice(cluster: dict[str, Any]) -> AsyncConnection:
    return AsyncConnection(connection=cluster["alice"])  # the same credentials as the sync tests' Connection


def test_create_run_and_delete_in_a_few_lines(cluster: dict[str, Any]) -> None:
    api = cluster["api"]

    async def main() -> str:
        async with alice(cluster) as conn:
            async with AsyncSandbox.create(runtime="python:3.11", connection=conn) as sandbox:
                assert sandbox.namespace == NS
                assert (await sandbox.run("print(6 * 7)")).stdout == "42\n"
                result = await sandbox.exec(["sh", "-c", "echo out; echo err >&2; exit 3"])
                assert (result.exit_code, result.stdout, result.stderr, result.ok) == (3, "out\n", "err\n", False)
                with pytest.raises(SandboxError, match="exited 3"):
                    result.check()
                assert (NS, sandbox.name) in api.sandboxes
            return sandbox.name

    name = run(main)
    assert (NS, name) not in api.sandboxes
    reads = [p for m, p, b, _ in api.calls if b == ALICE and m == "GET" and p.endswith(f"/sandboxes/{name}")]
    assert len(reads) <= 2, reads  # it waited on a watch, not a GET loop
    assert any(b == ALICE and m == "GET" and p.endswith("/sandboxes") for m, p, b, _ in api.calls), "no watch"


def test_output_streams_while_the_command_runs(cluster: dict[str, Any]) -> None:
    async def main() -> None:
        async with alice(cluster) as conn, AsyncSandbox.create(runtime="python", connection=conn) as sandbox:
            seen: list[tuple[float, str]] = []
            start = time.monotonic()

            async def on_stdout(data: str) -> None:  # an async callback is awaited
                seen.append((time.monotonic() - start, data))

            result = await sandbox.exec("echo first; sleep 2; echo second", on_stdout=on_stdout)
            end = time.monotonic() - start
            assert result.stdout == "first\nsecond\n" and result.exit_code == 0 and result.id
            assert seen[0][1] == "first\n" and end - seen[0][0] >= 1.5, seen  # 'first' arrived long before the end
            # the async iterator: each event as it comes
            start = time.monotonic()
            events = [(time.monotonic() - start, e) async for e in sandbox.exec_stream("echo a; sleep 2; echo b")]
            kinds = [e["type"] for _, e in events]
            assert kinds == ["start", "stdout", "stdout", "exit"], kinds
            assert events[-1][0] - events[1][0] >= 1.5, events  # 'a' long before the exit
            assert [e["type"] async for e in sandbox.run_stream("print('hi')")] == ["start", "stdout", "exit"]

    run(main)


def test_sessions_keep_python_state(cluster: dict[str, Any]) -> None:
    async def main() -> None:
        async with alice(cluster) as conn, AsyncSandbox.create(runtime="python", connection=conn) as sandbox:
            async with await sandbox.session() as session:
                assert (await session.run("x = 40")).ok
                answer = await session.run("x += 2\nprint('x is', x)\nx")
                assert (answer.stdout, answer.result, answer.status) == ("x is 42\n", "42", "ok")
                failed = await session.run("1 / 0")
                assert failed.status == "error" and failed.error and failed.error["ename"] == "ZeroDivisionError"
                assert [s["id"] for s in await sandbox.sessions()] == [session.id]
                assert [e["type"] async for e in session.run_stream("x")][-1] == "done"
            assert await sandbox.sessions() == []
            await session.close()  # closed already: fine

    run(main)


def test_files_round_trip(cluster: dict[str, Any]) -> None:
    workspace = cluster["runtime"].writable[1]

    async def main() -> None:
        async with alice(cluster) as conn, AsyncSandbox.create(runtime="python", connection=conn) as sandbox:
            assert await sandbox.files.write(f"{workspace}/data/in.txt", "hello\n") == 6
            assert await sandbox.files.write(f"{workspace}/data/raw.bin", bytes(range(256))) == 256
            assert (await sandbox.run(f"print(open('{workspace}/data/in.txt').read().upper(), end='')")).stdout == "HELLO\n"
            assert await sandbox.files.read_text(f"{workspace}/data/in.txt") == "hello\n"
            assert await sandbox.files.read(f"{workspace}/data/raw.bin") == bytes(range(256))
            entries = await sandbox.files.list(f"{workspace}/data")
            assert sorted((e.name, e.type, e.size) for e in entries) == [("in.txt", "file", 6), ("raw.bin", "file", 256)]
            await sandbox.files.delete(f"{workspace}/data", recursive=True)
            assert await sandbox.files.list(workspace) == []
            with pytest.raises(SandboxError) as outside:
                await sandbox.files.read("/etc/passwd")
            assert outside.value.code == "path_outside_writable"

    run(main)


def test_warm_by_default_through_the_annotation_or_a_named_pool(cluster: dict[str, Any]) -> None:
    async def main() -> None:
        async with alice(cluster) as conn:
            warm, pooled, cold = await asyncio.gather(
                AsyncSandbox.create(runtime="python", connection=conn, wait=False),
                AsyncSandbox.create(runtime="python", connection=conn, wait=False, warm_pool="py-pool"),
                AsyncSandbox.create(runtime="python", connection=conn, wait=False, warm=False))
            try:
                assert warm.obj["metadata"]["annotations"] == {"llmsafespace.dev/use-warm-pod": "true"}
                assert pooled.obj["spec"]["warmPoolRef"] == {"name": "py-pool"} and not pooled.obj["metadata"]["annotations"]
                assert "warmPoolRef" not in cold.obj["spec"] and not cold.obj["metadata"]["annotations"]
            finally:
                await asyncio.gather(*(s.delete() for s in (warm, pooled, cold)))
            with pytest.raises(TypeError, match="warm_poll"):
                await AsyncSandbox.create(runtime="python", connection=conn, warm_poll="typo")  # type: ignore[call-arg]

    run(main)


def test_the_context_manager_deletes_whatever_happens(cluster: dict[str, Any]) -> None:
    api = cluster["api"]
    made: list[AsyncSandbox] = []

    async def failing() -> None:
        async with alice(cluster) as conn:
            with pytest.raises(RuntimeError):
                async with AsyncSandbox.create(runtime="python", connection=conn) as sandbox:
                    made.append(sandbox)
                    raise RuntimeError("the agent's own bug")
            assert (NS, sandbox.name) not in api.sandboxes
            await sandbox.delete()  # twice is fine
            # a sandbox awaited first, then used as a context manager
            with pytest.raises(RuntimeError):
                async with await AsyncSandbox.create(runtime="python", connection=conn) as other:
                    made.append(other)
                    raise RuntimeError("again")

    run(failing)
    assert all((NS, s.name) not in api.sandboxes for s in made) and len(made) == 2

    async def cancelled() -> None:
        # a task cancelled while it waits for its sandbox: the sandbox is deleted, the cancellation goes on
        async with alice(cluster) as conn:
            task = asyncio.ensure_future(AsyncSandbox.create(runtime="slow", connection=conn, name="c1"))
            for _ in range(200):
                if (NS, "c1") in api.sandboxes:
                    break
                await asyncio.sleep(0.05)
            assert (NS, "c1") in api.sandboxes
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    run(cancelled)
    assert (NS, "c1") not in api.sandboxes


def test_errors_name_the_sandboxs_reason_and_failed_creations_are_cleaned_up(cluster: dict[str, Any]) -> None:
    api = cluster["api"]

    async def main() -> None:
        async with alice(cluster) as conn:
            with pytest.raises(NotReady) as failed:
                await AsyncSandbox.create(runtime="broken", connection=conn, name="b1")
            assert failed.value.reason == "ImagePullBackOff" and failed.value.phase == "Failed"
            assert "no such image" in str(failed.value)
            assert (NS, "b1") not in api.sandboxes
            with pytest.raises(Timeout) as slow:
                await AsyncSandbox.create(runtime="slow", connection=conn, name="s1", wait_timeout=1.5)
            assert slow.value.reason == "PodPending" and "no node has room" in str(slow.value)
            assert (NS, "s1") not in api.sandboxes
            pending = await AsyncSandbox.create(runtime="slow", connection=conn, name="s2", wait=False)
            pending.wait = 0
            try:
                await asyncio.sleep(0.3)
                with pytest.raises(NotReady) as not_ready:
                    await pending.run("print(1)")
                assert not_ready.value.code == "sandbox_not_ready" and not_ready.value.reason == "PodPending"
            finally:
                await pending.delete()
            with pytest.raises(NotFound):
                await AsyncSandbox.get("no-such-sandbox", connection=conn)

    run(main)


def test_another_user_cannot_touch_it(cluster: dict[str, Any]) -> None:
    async def main() -> None:
        async with alice(cluster) as conn, AsyncSandbox.create(runtime="python", connection=conn) as sandbox:
            async with AsyncConnection(connection=cluster["bob"]) as bob:
                intruder = AsyncSandbox(sandbox.name, NS, bob)
                with pytest.raises(Forbidden) as refused:
                    await intruder.run("print(1)")
                assert 'user "bob" cannot create sandboxes/exec' in str(refused.value)
                with pytest.raises(Forbidden):
                    await intruder.files.read("/workspace/x")

    run(main)


def test_suspend_resume_and_resume_on_demand(cluster: dict[str, Any]) -> None:
    async def main() -> None:
        async with alice(cluster) as conn, AsyncSandbox.create(runtime="python", connection=conn) as sandbox:
            await sandbox.suspend()
            assert sandbox.phase == "Suspended"
            await sandbox.resume()
            assert sandbox.phase == "Running" and (await sandbox.run("print('back')")).stdout == "back\n"
            await sandbox.suspend()
            assert (await sandbox.run("print('woken')")).stdout == "woken\n"  # the gateway resumes it and waits
            await sandbox.suspend()
            sandbox.wait = 0
            with pytest.raises(Suspended) as suspended:
                await sandbox.run("print(1)")
            assert suspended.value.code == "sandbox_suspended" and suspended.value.reason == "Requested"

    run(main)


def test_a_running_execution_can_be_killed(cluster: dict[str, Any]) -> None:
    async def main() -> None:
        async with alice(cluster) as conn, AsyncSandbox.create(runtime="python", connection=conn) as sandbox:
            events = sandbox.exec_stream(["sleep", "60"])
            start = await events.__anext__()
            assert start["type"] == "start"
            began = time.monotonic()
            await sandbox.kill(start["id"])
            end = [e async for e in events if e["type"] == "exit"][0]
            assert end["signal"] == 9 and time.monotonic() - began < 30
            with pytest.raises(NotFound):
                await sandbox.kill(start["id"])

    run(main)


def test_many_sandboxes_and_calls_at_once(cluster: dict[str, Any]) -> None:
    """What the async client is for: calls that wait on the same loop, side by side; sandboxes
    being waited for (each holds a watch in a thread) do not hold up the others."""
    api = cluster["api"]

    async def main() -> None:
        async with alice(cluster) as conn:
            # more waits than the loop's default executor has threads (cores + 4)
            stuck = [asyncio.ensure_future(AsyncSandbox.create(runtime="slow", connection=conn, name=f"w{i}", wait_timeout=120))
                     for i in range(12)]
            try:
                for _ in range(1200):  # at most 60 s (well under 1 s on a quiet machine)
                    if all((NS, f"w{i}") in api.sandboxes for i in range(12)):
                        break
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.5)  # all waiting on their watches
                sandboxes = await asyncio.wait_for(
                    asyncio.gather(*(AsyncSandbox.create(runtime="python", connection=conn) for _ in range(3))), 30)
                try:
                    results = await asyncio.gather(*(s.exec(f"sleep 1; echo {i}") for i, s in enumerate(sandboxes)))
                    assert [r.stdout for r in results] == ["0\n", "1\n", "2\n"]
                finally:
                    await asyncio.gather(*(s.delete() for s in sandboxes))
            finally:
                for task in stuck:
                    task.cancel()
                await asyncio.gather(*stuck, return_exceptions=True)

    run(main)
    assert not [i for i in range(12) if (NS, f"w{i}") in api.sandboxes]  # the cancelled ones were deleted


def test_the_docs_async_example_runs_as_written(cluster: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """docs/gateway.md's async example, with credentials from KUBECONFIG and the URL from
    LLMSS_GATEWAY_URL: create() makes its own connection, and closes it with the sandbox."""
    doc = (ROOT / "docs" / "gateway.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(from llmsafespace\.aio import.*?)```", doc, re.S).group(1)  # type: ignore[union-attr]
    monkeypatch.setenv("LLMSS_GATEWAY_URL", cluster["url"])
    monkeypatch.setenv("KUBECONFIG", kubeconfig(cluster["tmp"], cluster["api"], ALICE, "async-doc"))
    before = set(cluster["api"].sandboxes)
    unclosed: list[str] = []

    def handler(loop: Any, context: dict[str, Any]) -> None:
        unclosed.append(str(context.get("message")))

    async def wrapped() -> None:
        asyncio.get_running_loop().set_exception_handler(handler)
        namespace: dict[str, Any] = {}
        body = code.replace("asyncio.run(main())", "")  # run in this test's loop instead
        exec(compile(body, "docs/gateway.md", "exec"), namespace)  # noqa: S102
        await namespace["main"]()
        gc.collect()

    run(wrapped)
    assert capsys.readouterr().out == "1\n2\n42\n12.566370614359172\n"
    assert set(cluster["api"].sandboxes) == before  # deleted on exit
    assert not [m for m in unclosed if "Unclosed" in m], unclosed


# -- one implementation: the sync and async clients share everything but I/O ----------------------

def test_both_clients_share_the_parsing_and_the_plans(cluster: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    # the same objects, not copies: requests, answers, streams, errors, results, the plan runner
    for name in ("gateway_request", "read_answer", "answer_error", "unreachable", "stream_broken", "Events", "Runner", "Call"):
        assert getattr(aio, name) is getattr(_core, name) is getattr(sync_connection, name, getattr(_core, name)), name
    assert issubclass(Sandbox, _core.SandboxBase) and issubclass(AsyncSandbox, _core.SandboxBase)
    # neither transport reads JSON itself
    for module in ("aio.py", "connection.py", "sandbox.py"):
        source = (ROOT / "sdk" / "llmsafespace" / module).read_text(encoding="utf-8")
        assert not re.search(r"^import json|json\.loads", source, re.M), module
    # and both go through it at run time: every event of both clients' streams is parsed by _core.Events
    fed: list[str] = []
    real_feed = _core.Events.feed

    def feed(self: _core.Events, chunk: bytes) -> list[_core.Event]:
        events = real_feed(self, chunk)
        fed.extend(e["type"] for e in events)
        return events

    monkeypatch.setattr(_core.Events, "feed", feed)
    with Sandbox.create(runtime="python", connection=cluster["alice"]) as sandbox:
        assert sandbox.exec(["echo", "sync"]).stdout == "sync\n"
        sync_events, fed[:] = list(fed), []

        async def main() -> None:
            async with alice(cluster) as conn:
                twin = AsyncSandbox(sandbox.name, sandbox.namespace, conn, dict(sandbox.obj))
                assert (await twin.exec(["echo", "async"])).stdout == "async\n"

        run(main)
    assert sync_events == fed == ["start", "stdout", "exit"]


def test_a_plan_runs_without_any_io() -> None:
    """The wait logic is a plan: it asks for steps and is given their outcomes, whoever does the I/O."""
    sb = _core.SandboxBase("s", NS, None, {"metadata": {"name": "s", "namespace": NS, "resourceVersion": "7"}, "status": {}})
    plan = _core.wait_plan(sb, 30)
    runner = _core.Runner(plan)
    step = runner.step
    assert isinstance(step, _core.Watch) and (step.namespace, step.name, step.version) == (NS, "s", "7") and step.seconds <= 31
    with runner:  # the watch's answer: the sandbox is Creating
        runner.reply = {"type": "MODIFIED", "object": {"metadata": {"name": "s", "resourceVersion": "8"}, "status": {
            "phase": "Creating", "conditions": [{"type": "Ready", "status": "False", "reason": "PodPending", "message": "no room"}]}}}
    assert isinstance(runner.step, _core.Watch) and runner.step.version == "8"  # the next change, from the new version
    with pytest.raises(NotReady) as failed:
        with runner:  # then it failed: the plan raises with its reason instead of asking for more
            runner.reply = {"type": "MODIFIED", "object": {"metadata": {"name": "s", "resourceVersion": "9"}, "status": {
                "phase": "Failed", "conditions": [{"type": "Ready", "status": "False", "reason": "ImagePullBackOff",
                                                   "message": "no such image"}]}}}
    assert failed.value.reason == "ImagePullBackOff" and "no such image" in str(failed.value) and sb.phase == "Failed"


def test_lines_are_parsed_however_the_stream_is_cut() -> None:
    whole = b'{"type": "start", "id": "e1"}\n{"type": "stdout", "data": "a\\n"}\n{"type": "exit", "exit_code": 0}\n'
    for size in (1, 2, 7, len(whole)):
        events = _core.Events("exit")
        got = [e for i in range(0, len(whole), size) for e in events.feed(whole[i:i + size])] + list(events.finish())
        assert [e["type"] for e in got] == ["start", "stdout", "exit"], size
    truncated = _core.Events("exit")
    truncated.feed(whole[:40])
    with pytest.raises(SandboxError, match="without its 'exit' line"):
        list(truncated.finish())
    with pytest.raises(SandboxError, match="the runtime went away"):
        _core.Events("exit").feed(b'{"type": "error", "error": {"code": "x", "message": "the runtime went away"}}\n')


@pytest.fixture()
def silent_api() -> Iterator[dict[str, Any]]:
    """An API server whose watches answer at once and then say nothing (as a real one does)."""
    opened, release = threading.Event(), threading.Event()

    def app(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "application/json")])

        def body() -> Iterator[bytes]:
            opened.set()
            yield b"\n"
            release.wait(60)

        return body()

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    configuration = k8s_client.Configuration()
    configuration.host = f"http://127.0.0.1:{server.server_port}"
    configuration.api_key = {"authorization": "t"}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    try:
        yield {"connection": Connection("http://127.0.0.1:9", configuration=configuration), "opened": opened}
    finally:
        release.set()
        server.shutdown()


def test_a_cancelled_wait_ends_its_watch_at_once(silent_api: dict[str, Any]) -> None:
    """The watch runs in a worker thread; cancelling the task that waits shuts its socket down
    instead of leaving the thread blocked until the watch would end (60 s here)."""
    conn = silent_api["connection"]
    ended: list[float] = []
    real = conn.next_change

    def next_change(*args: Any) -> Any:
        try:
            return real(*args)
        finally:
            ended.append(time.monotonic())

    conn.next_change = next_change
    obj = {"metadata": {"name": "s", "namespace": NS, "resourceVersion": "1"}, "status": {"phase": "Creating"}}

    async def main() -> float:
        sandbox = AsyncSandbox("s", NS, AsyncConnection(connection=conn), obj)
        task = asyncio.ensure_future(sandbox.wait_ready(60))
        await asyncio.to_thread(silent_api["opened"].wait, 30)
        await asyncio.sleep(0.2)
        cancelled = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return cancelled

    cancelled = run(main)
    for _ in range(100):
        if ended:
            break
        time.sleep(0.1)
    assert ended and ended[0] - cancelled < 10, (ended, cancelled)
