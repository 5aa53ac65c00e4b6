"""`bench/run runtime [--quick] [-n N] [--json FILE]`: what running code through the reference
runtime (runtime/) costs over running it directly.

The runtime is started as a process on 127.0.0.1 as the runtime tests start it (tests/runtime_util.py:
uid 1000 when we are root, only temporary writable paths, a test key of our own); every call is a
signed request (Ed25519, a fresh token each time, as the gateway sends) on one kept-alive
connection, read to the stream's last event. Cases, each against its floor measured in the same
run, interleaved one call of each per iteration (bench.__main__.measure):

- exec `true`: POST /v1/exec {"cmd": ["true"]} against subprocess.run(["true"]);
- exec Python print(1): POST /v1/exec {"code": "print(1)"} against subprocess.run([python, "-c",
  "print(1)"]) with the runtime's own interpreter;
- session print(1): POST /v1/sessions/{id}/run {"code": "print(1)"} in one live session, against
  the same subprocess.run floor (what an agent would otherwise pay per snippet);
- GET /health: the HTTP round trip alone (unsigned, no process), for scale.

Every call's outcome is checked (exit code 0, stdout "1\\n", the session's `done` ok): a case that
did not do what its name says stops the benchmark instead of timing an error. p50/p99 in ms and
the ratio of each to its floor's; the overhead (p50 minus the floor's p50) per call."""
from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Callable, Optional

from bench import write_results
from conformance.client import Client, joined
from conformance.launch import Launched, launch, log_tail

DEFAULT_N = 500
QUICK_N = 20
CODE = "print(1)"


class CaseError(RuntimeError):
    """A benchmark call did not do what its case's name says."""


def start_runtime() -> tuple[Launched, str]:
    """The runtime on loopback and the interpreter it runs (its `code` executions use it too)."""
    from tests.runtime_util import _interpreter, source_path
    python = _interpreter()
    if python is None:
        raise SystemExit("bench runtime: no Python with cryptography that uid 1000 can run "
                         "(tools/install_tools.py --only runtime-python installs python3-cryptography as root)")
    launched = launch([python, "-m", "runtime"], env={"PYTHONPATH": source_path()})
    if launched.exited is not None:
        tail = log_tail(launched)
        launched.stop()
        raise SystemExit(f"bench runtime: the runtime did not start ({launched.exited}):\n{tail}")
    return launched, python


def _exit(events: list[dict[str, Any]], what: str) -> dict[str, Any]:
    if not events or events[-1].get("type") != "exit":
        raise CaseError(f"{what}: the stream did not end with an exit event: {events[-3:]}")
    return events[-1]


def exec_true(client: Client) -> Callable[[], list[dict[str, Any]]]:
    def call() -> list[dict[str, Any]]:
        events = client.exec({"cmd": ["true"]})
        end = _exit(events, "exec true")
        if end.get("exit_code") != 0 or joined(events, "stdout") or joined(events, "stderr"):
            raise CaseError(f"exec true: {events}")
        return events
    return call


def exec_print(client: Client) -> Callable[[], list[dict[str, Any]]]:
    def call() -> list[dict[str, Any]]:
        events = client.exec({"code": CODE})
        end = _exit(events, "exec print(1)")
        if end.get("exit_code") != 0 or joined(events, "stdout") != "1\n":
            raise CaseError(f"exec print(1): {events}")
        return events
    return call


def session_print(client: Client, sid: str) -> Callable[[], list[dict[str, Any]]]:
    path = f"/v1/sessions/{sid}/run"

    def call() -> list[dict[str, Any]]:
        events = list(client.stream(path, {"code": CODE}))
        if not events or events[-1].get("type") != "done" or events[-1].get("status") != "ok" \
                or joined(events, "stdout") != "1\n":
            raise CaseError(f"session print(1): {events}")
        return events
    return call


def health(client: Client) -> Callable[[], Any]:
    def call() -> Any:
        r = client.request("GET", "/health")
        if r.status != 200:
            raise CaseError(f"GET /health answered {r.status}")
        return r
    return call


def floor_true() -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(["true"], capture_output=True)
    if proc.returncode != 0:
        raise CaseError(f"subprocess.run(['true']): {proc}")
    return proc


def floor_print(python: str) -> Callable[[], subprocess.CompletedProcess[bytes]]:
    def call() -> subprocess.CompletedProcess[bytes]:
        proc = subprocess.run([python, "-c", CODE], capture_output=True)
        if proc.returncode != 0 or proc.stdout != b"1\n":
            raise CaseError(f"subprocess.run([{python!r}, '-c', {CODE!r}]): {proc}")
        return proc
    return call


@dataclass
class Case:
    label: str
    key: str
    floor: Optional[str]  # key of the floor it is compared with


CASES = [
    Case("exec `true`", "exec_true", "floor_true"),
    Case("exec Python print(1)", "exec_print", "floor_print"),
    Case("session print(1)", "session_print", "floor_print"),
    Case("GET /health (HTTP round trip only)", "health", None),
    Case("floor: subprocess.run(['true'])", "floor_true", None),
    Case("floor: subprocess.run([python, '-c', 'print(1)'])", "floor_print", None),
]


def run(n: int) -> dict[str, Any]:
    from bench.__main__ import machine, measure
    launched, python = start_runtime()
    client = launched.client
    try:
        created = client.call("POST", "/v1/sessions", {"language": "python"})
        if created.status != 201:
            raise SystemExit(f"bench runtime: POST /v1/sessions answered {created.status} {created.body[:200]!r}")
        sid = created.json()["id"]
        fns: dict[str, Callable[[], Any]] = {
            "exec_true": exec_true(client), "exec_print": exec_print(client), "session_print": session_print(client, sid),
            "health": health(client), "floor_true": floor_true, "floor_print": floor_print(python)}
        timings = measure(fns, n, n, 0.0)
        client.request("DELETE", f"/v1/sessions/{sid}")
    finally:
        launched.stop()
    rows = []
    for case in CASES:
        t = timings[case.key]
        row = {"case": case.label, "key": case.key, "n": t["iters"], "p50_ms": t["median_ms"], "p99_ms": t["p99_ms"],
               "max_ms": t["max_ms"], "floor": case.floor}
        if case.floor:
            f = timings[case.floor]
            row.update({"p50_ratio": t["median_ms"] / f["median_ms"], "p99_ratio": t["p99_ms"] / f["p99_ms"],
                        "overhead_p50_ms": t["median_ms"] - f["median_ms"]})
        rows.append(row)
    return {"machine": machine(), "python": python, "uid": launched.uid, "n": n, "rows": rows}


def table(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [f"LLMSafeSpace runtime execution overhead: {m['cpus']} CPUs, {m['cpu_model'] or 'unknown CPU'}, "
             f"tree {m['revision'] or 'unknown'}; runtime {r['python']} as uid {r['uid']} on 127.0.0.1, "
             f"signed calls on one kept-alive connection, n = {r['n']} per case, interleaved",
             "",
             f"| {'case':<50} | {'n':>4} | {'p50 ms':>7} | {'p99 ms':>7} | {'p50 / floor':>11} | {'p99 / floor':>11} | {'overhead p50 ms':>15} |",
             f"|{'-' * 52}|{'-' * 6}|{'-' * 9}|{'-' * 9}|{'-' * 13}|{'-' * 13}|{'-' * 17}|"]
    for row in r["rows"]:
        ratio = lambda k: f"{row[k]:.2f}" if k in row else ""  # noqa: E731
        over = f"{row['overhead_p50_ms']:+.2f}" if "overhead_p50_ms" in row else ""
        lines.append(f"| {row['case']:<50} | {row['n']:>4} | {row['p50_ms']:>7.2f} | {row['p99_ms']:>7.2f} "
                     f"| {ratio('p50_ratio'):>11} | {ratio('p99_ratio'):>11} | {over:>15} |")
    lines.append("floor: subprocess.run of the same command from this process, in the same run; session print(1) "
                 "is compared with the python -c floor (a new interpreter per snippet is what it saves)")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench runtime", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"n = {QUICK_N}: a smoke test")
    parser.add_argument("-n", type=int, default=None, help=f"calls per case (default {DEFAULT_N})")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    n = args.n if args.n is not None else QUICK_N if args.quick else DEFAULT_N
    if n < 1:
        parser.error("-n must be at least 1")
    results = run(n)
    print(table(results))
    if args.json:
        write_results(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
