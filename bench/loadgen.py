"""Section 3: gunicorn on loopback, loaded by wrk (or a bounded http.client generator).

The server is the production configuration (hooks/server/gunicorn_conf.py, sync workers, -w 2) with
LLMSS_BENCH_ECHO=1, which adds /bench/echo: the same HTTP layer (auth, parse, metrics, log line,
serialise) around an identity hook. Comparing /sandbox/sync with /bench/echo on the same body
isolates what the hook itself costs under load. The server always goes away (process group)."""
from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from typing import Any, Optional

from tests.procs import die_with_parent

SYNC_PATH = "/sandbox/sync"
ECHO_PATH = "/bench/echo"

LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("{body}", "rb")
wrk.body = f:read("*all")
f:close()
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: str, port: int, log_path: str) -> subprocess.Popen:
    env = dict(os.environ)
    env["LLMSS_BENCH_ECHO"] = "1"
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # gunicorn_conf.py makes a private one and removes it
    env.pop("METRICS_PORT", None)
    gunicorn = os.path.join(root, ".venv", "bin", "gunicorn")
    log = open(log_path, "wb")
    try:
        return subprocess.Popen(
            [gunicorn, "--config", os.path.join(root, "hooks", "server", "gunicorn_conf.py"), "-b", f"127.0.0.1:{port}", "-w", "2", "hooks.server.app:app"],
            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=die_with_parent,
        )
    finally:
        log.close()


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=5)


def wait_ready(proc: subprocess.Popen, port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with code {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                conn.close()
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("gunicorn did not answer /healthz in time")


def check(port: int, path: str, body: bytes) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"POST {path} answered {response.status}: {data[:300]!r}")


# ---------------------------------------------------------------------------------------------
# wrk


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def worker_pids(master: int) -> list[int]:
    try:
        with open(f"/proc/{master}/task/{master}/children", encoding="ascii") as handle:
            return [int(x) for x in handle.read().split()]
    except OSError:
        return []


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes (Linux /proc), in seconds; 0 where unreadable."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def run_wrk(wrk: str, port: int, path: str, lua_path: str, seconds: float, connections: int) -> dict[str, Any]:
    cmd = [wrk, "-t1", f"-c{connections}", f"-d{max(1, int(round(seconds)))}s", "--latency", "-s", lua_path,
           f"http://127.0.0.1:{port}{path}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    pct = {m.group(1): _ms(m.group(2), m.group(3)) for m in re.finditer(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)}
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(non2xx.group(1)) if non2xx else 0
    if socket_errors:
        errors += sum(int(x) for x in socket_errors.groups())
    return {"rps": rps, "p50_ms": pct.get("50", float("nan")), "p99_ms": pct.get("99", float("nan")), "requests": requests, "errors": errors}


# ---------------------------------------------------------------------------------------------
# Fallback: a bounded http.client load generator (threads; each closes when the server does)


def run_python(port: int, path: str, body: bytes, seconds: float, connections: int) -> dict[str, Any]:
    latencies: list[list[float]] = [[] for _ in range(connections)]
    errors = [0] * connections
    stop_at = time.perf_counter() + seconds
    headers = {"Content-Type": "application/json"}

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        own = latencies[i]
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at:
                break
            try:
                conn.request("POST", path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    errors[i] += 1
                if response.will_close:
                    conn.close()
            except (OSError, http.client.HTTPException):
                errors[i] += 1
                conn.close()
            own.append(time.perf_counter() - t0)
        conn.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(connections)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 15)
    elapsed = time.perf_counter() - start
    samples = sorted(x for own in latencies for x in own)
    n = len(samples)

    def pct(q: float) -> float:
        return samples[min(n - 1, int(q / 100 * n))] * 1e3 if n else float("nan")
    return {"rps": n / elapsed if elapsed else 0.0, "p50_ms": pct(50), "p99_ms": pct(99), "requests": n, "errors": sum(errors)}


def compare(root: str, body: bytes, seconds: float, connections: int = 8, rounds: int = 2) -> dict[str, Any]:
    """Load /bench/echo and /sandbox/sync alternately (`rounds` times each, `seconds` per run) with
    the same body, after a short warm-up. Alternating spreads any background load of the machine
    over both routes; the totals are requests over time summed across rounds, the latencies the
    median of the rounds' percentiles."""
    wrk = shutil.which("wrk")
    result: dict[str, Any] = {"tool": "wrk " + _wrk_version(wrk) if wrk else "python http.client threads (wrk not found)",
                              "connections": connections, "seconds": seconds, "rounds": rounds, "body_bytes": len(body),
                              "loadavg_before": os.getloadavg()[0]}
    port = free_port()
    runs: dict[str, list[dict[str, Any]]] = {"echo": [], "sync": []}
    with tempfile.TemporaryDirectory(prefix="llmss-bench-") as tmp:
        body_path = os.path.join(tmp, "body.json")
        with open(body_path, "wb") as handle:
            handle.write(body)
        lua_path = os.path.join(tmp, "post.lua")
        with open(lua_path, "w", encoding="utf-8") as handle:
            handle.write(LUA.format(body=body_path))
        proc = start_server(root, port, os.path.join(tmp, "gunicorn.log"))
        try:
            wait_ready(proc, port)
            for path in (SYNC_PATH, ECHO_PATH):
                for _ in range(50):  # warm-up: imports, caches, first-request costs in both workers
                    check(port, path, body)
            workers = worker_pids(proc.pid)
            for _ in range(rounds):
                for route, path in (("echo", ECHO_PATH), ("sync", SYNC_PATH)):
                    cpu_before = cpu_seconds(workers)
                    if wrk:
                        done = run_wrk(wrk, port, path, lua_path, seconds, connections)
                    else:
                        done = run_python(port, path, body, seconds, connections)
                    done["worker_cpu_s"] = cpu_seconds(workers) - cpu_before
                    runs[route].append(done)
            for route, done in runs.items():
                total_time = sum(r["requests"] / r["rps"] for r in done if r["rps"])
                result[route] = {
                    "rps": sum(r["requests"] for r in done) / total_time if total_time else 0.0,
                    "p50_ms": statistics.median(r["p50_ms"] for r in done),
                    "p99_ms": statistics.median(r["p99_ms"] for r in done),
                    "requests": sum(r["requests"] for r in done),
                    "errors": sum(r["errors"] for r in done),
                    "rounds_rps": [round(r["rps"]) for r in done],
                    # worker CPU per request: what a route costs, independent of how busy the machine was
                    "worker_cpu_ms_per_req": 1e3 * sum(r["worker_cpu_s"] for r in done) / max(1, sum(r["requests"] for r in done)),
                }
        except Exception as exc:  # reported in the table; the server still goes away
            result["error"] = f"{type(exc).__name__}: {exc}; server log: {_tail(os.path.join(tmp, 'gunicorn.log'))}"
        finally:
            stop_server(proc)
    return result


def _wrk_version(wrk: Optional[str]) -> str:
    if not wrk:
        return ""
    try:
        out = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=5)
        m = re.search(r"wrk (\S+)", out.stdout + out.stderr)
        return m.group(1) if m else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def _tail(path: str, size: int = 600) -> str:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
        return data[-size:].decode("utf-8", "replace")
    except OSError:
        return ""
