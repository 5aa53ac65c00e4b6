"""The runtime benchmark (bench/runtime.py) times what its names say: each call really ran through
the runtime with a signed request and did its job (`true` exited 0, print(1) printed 1, the session
cell ended ok), its floors really ran the same command, and a call that did something else stops
the benchmark instead of being timed."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from bench import runtime as rb
from conformance.client import Client, joined
from conformance.launch import Launched
from tests.runtime_util import ROOT, interpreter


@pytest.fixture(scope="module")
def started() -> Iterator[tuple[Launched, str]]:
    interpreter()  # skips, in one line, where no Python for the runtime can be had
    launched, python = rb.start_runtime()
    yield launched, python
    launched.stop()


def test_each_case_does_what_its_name_says(started: tuple[Launched, str]) -> None:
    launched, python = started
    c = launched.client
    events = rb.exec_true(c)()
    assert events[0]["type"] == "start" and events[-1]["type"] == "exit" and events[-1]["exit_code"] == 0
    events = rb.exec_print(c)()
    assert joined(events, "stdout") == "1\n" and events[-1]["exit_code"] == 0
    sid = c.call("POST", "/v1/sessions", {"language": "python"}).json()["id"]
    c.call("POST", f"/v1/sessions/{sid}/run", {"code": "n = 41"})
    events = rb.session_print(c, sid)()
    assert joined(events, "stdout") == "1\n" and events[-1] == {**events[-1], "type": "done", "status": "ok"}
    # the same session each call: its state is still there
    assert [e["data"] for e in c.stream(f"/v1/sessions/{sid}/run", {"code": "n + 1"}) if e["type"] == "result"] == ["42"]
    assert rb.floor_true().returncode == 0
    assert rb.floor_print(python)().stdout == b"1\n"
    assert python == interpreter()  # the print(1) floor runs the interpreter the runtime runs code with


def test_an_unsigned_or_failing_call_stops_the_benchmark(started: tuple[Launched, str]) -> None:
    launched, _ = started
    unsigned = Client(launched.client.base, None, launched.client.pod_uid)
    with pytest.raises(rb.CaseError, match="exec true"):
        rb.exec_true(unsigned)()  # a 401 is not a timed exec
    other_pod = Client(launched.client.base, launched.client.key, "another-pod-uid")
    with pytest.raises(rb.CaseError, match="print"):
        rb.exec_print(other_pod)()
    with pytest.raises(rb.CaseError, match="session"):
        rb.session_print(launched.client, "0" * 32)()  # no such session
    with pytest.raises(rb.CaseError):
        rb.floor_print("/bin/false")()


def test_quick_run_prints_figures_and_ratios_against_its_floors(tmp_path: Path) -> None:
    out = tmp_path / "runtime.json"
    interpreter()
    proc = subprocess.run([sys.executable, "-m", "bench", "runtime", "-n", "5", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads(out.read_text())
    rows = {row["key"]: row for row in r["rows"]}
    assert set(rows) == {c.key for c in rb.CASES} and all(row["n"] == 5 for row in rows.values())
    for key, floor in (("exec_true", "floor_true"), ("exec_print", "floor_print"), ("session_print", "floor_print")):
        row = rows[key]
        assert row["floor"] == floor and row["p50_ms"] > 0 and rows[floor]["p50_ms"] > 0
        assert row["p50_ratio"] == pytest.approx(row["p50_ms"] / rows[floor]["p50_ms"])
        assert row["p99_ratio"] == pytest.approx(row["p99_ms"] / rows[floor]["p99_ms"])
        line = next(l for l in proc.stdout.splitlines() if l.startswith(f"| {next(c.label for c in rb.CASES if c.key == key)} "))
        assert f"{row['p50_ratio']:.2f}" in line, line
    assert rb.DEFAULT_N >= 200  # the figures in docs/benchmark.md come from at least 200 calls per case
