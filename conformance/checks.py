"""The rules of docs/runtime-contract.md, each a check that returns None (kept) or the reason it
is broken."""
from __future__ import annotations

import json
import signal
import time
from dataclasses import dataclass
from typing import Callable, Optional

from .client import Client, joined


@dataclass
class Target:
    client: Client
    writable: tuple[str, ...]  # the writable paths the runtime was given
    launched: object = None  # conformance.launch.Launched when we started it
    grace: float = 10.0


def _exec(t: Target, obj: dict) -> list[dict]:
    return t.client.exec(obj)


def _exit(events: list[dict]) -> dict:
    return events[-1] if events and events[-1].get("type") == "exit" else {}


def probes(t: Target) -> Optional[str]:
    h = t.client.request("GET", "/health")
    if h.status != 200 or h.json().get("status") != "ok":
        return f"GET /health answered {h.status} {h.body[:100]!r}, not 200 {{\"status\":\"ok\"}}"
    r = t.client.request("GET", "/ready")
    if r.status != 200 or r.json().get("status") != "ready":
        return f"GET /ready answered {r.status} {r.body[:100]!r} on an idle runtime, not 200 {{\"status\":\"ready\"}}"
    m = t.client.request("GET", "/metrics")
    if m.status != 200 or b"# TYPE" not in m.body:
        return f"GET /metrics answered {m.status}, not Prometheus text"
    return None


def _refused(t: Target, label: str, **kw) -> Optional[str]:
    r = t.client.call("POST", "/v1/exec", {"cmd": ["true"]}, **kw)
    if r.status != 401 or r.error_code != "unauthenticated":
        return f"a call {label} was answered {r.status} ({r.body[:120]!r}), not 401 unauthenticated"
    return None


def signatures(t: Target) -> Optional[str]:
    checks = [("without a signature", {"sign": False}), ("for another pod (aud)", {"aud": "another-pod-uid"}),
              ("with an expired token", {"iat": int(time.time()) - 120, "exp": int(time.time()) - 60}),
              ("for another method", {"m": "GET"}), ("for another path", {"p": "/v1/sessions"}),
              ("for another body", {"b": "0" * 64}), ("valid for more than 60 s", {"exp": int(time.time()) + 3600})]
    for label, kw in checks:
        found = _refused(t, label, **kw)
        if found:
            return found
    jti = "ab" * 16
    first = t.client.call("POST", "/v1/exec", {"cmd": ["true"]}, jti=jti)
    if first.status != 200:
        return f"a correctly signed call was answered {first.status} ({first.body[:160]!r})"
    return _refused(t, "replaying a token already used (same jti)", jti=jti)


def non_root(t: Target) -> Optional[str]:
    events = _exec(t, {"cmd": ["id", "-u"]})
    uid = joined(events, "stdout").strip()
    if _exit(events).get("exit_code") != 0 or not uid.isdigit():
        return f"could not run `id -u`: {events[-1:]}"
    return "the runtime runs as uid 0 (root)" if uid == "0" else None


def read_only_root(t: Target) -> Optional[str]:
    script = "for d in / /etc /usr /var /opt; do if touch \"$d/.llmss-conformance-$$\" 2>/dev/null; then " \
             "rm -f \"$d/.llmss-conformance-$$\"; echo \"$d\"; fi; done"
    events = _exec(t, {"cmd": script})
    writable = joined(events, "stdout").split()
    return f"paths outside the writable paths are writable: {writable}" if writable else None


def writable_paths(t: Target) -> Optional[str]:
    for path in t.writable:
        events = _exec(t, {"cmd": ["sh", "-c", 'echo x > "$1/.llmss-w" && rm "$1/.llmss-w"', "sh", path]})
        if _exit(events).get("exit_code") != 0:
            return f"the writable path {path} is not writable: {joined(events, 'stderr')[:200]}"
    events = _exec(t, {"cmd": "echo $HOME; echo $TMPDIR"})
    home_tmp = joined(events, "stdout").split()
    if len(home_tmp) != 2 or not all(any(p == w or p.startswith(w + "/") for w in t.writable) for p in home_tmp):
        return f"HOME and TMPDIR of executions must be inside the writable paths; got {home_tmp}"
    return None


def exec_streams(t: Target) -> Optional[str]:
    start = time.monotonic()
    arrivals = []
    for event in t.client.stream("/v1/exec", {"cmd": "echo first; sleep 2; echo second"}):
        arrivals.append((time.monotonic() - start, event))
    kinds = [e.get("type") for _, e in arrivals]
    if not kinds or kinds[0] != "start" or kinds[-1] != "exit":
        return f"the stream must begin with start and end with exit; got {kinds}"
    first = next((at for at, e in arrivals if e.get("type") == "stdout" and "first" in e.get("data", "")), None)
    end = arrivals[-1][0]
    if first is None or end - first < 1.0:
        return f"output is not streamed: 'first' arrived {first}s, the end {end:.2f}s after the start"
    if _exit([e for _, e in arrivals]).get("exit_code") != 0:
        return f"a command that succeeded reported {arrivals[-1][1]}"
    return None


def timeout_kills_group(t: Target) -> Optional[str]:
    events = _exec(t, {"cmd": "sleep 300 & echo $!; wait", "timeout": 1})
    end = _exit(events)
    if not end.get("timed_out"):
        return f"a command past its timeout did not report timed_out: {end}"
    pid = joined(events, "stdout").strip()
    if not pid.isdigit():
        return f"the background child's pid was not printed: {joined(events, 'stdout')!r}"
    time.sleep(0.5)
    check = _exec(t, {"cmd": f"kill -0 {pid} 2>/dev/null && cat /proc/{pid}/stat"})
    stat = joined(check, "stdout").split()
    if _exit(check).get("exit_code") == 0 and not (len(stat) > 2 and stat[2] == "Z"):
        return f"the timed-out command's child (pid {pid}) is still running: the process group was not killed"
    return None


def sessions(t: Target) -> Optional[str]:
    r = t.client.call("POST", "/v1/sessions", {"language": "python"})
    if r.status != 201:
        return f"POST /v1/sessions answered {r.status} {r.body[:160]!r}"
    sid = r.json()["id"]
    try:
        list(t.client.stream(f"/v1/sessions/{sid}/run", {"code": "x = 40"}))
        events = list(t.client.stream(f"/v1/sessions/{sid}/run", {"code": "x + 2"}))
        result = [e.get("data") for e in events if e.get("type") == "result"]
        if result != ["42"] or events[-1].get("status") != "ok":
            return f"a session did not keep its state: x + 2 after x = 40 gave {events}"
    finally:
        t.client.request("DELETE", f"/v1/sessions/{sid}")
    return None


def files(t: Target) -> Optional[str]:
    c, base = t.client, t.writable[-1]
    path = f"{base}/conformance/a.txt"
    r = c.request("PUT", c.file_path(path), b"hello")
    if r.status != 201:
        return f"PUT {path} answered {r.status} {r.body[:160]!r}"
    r = c.request("GET", c.file_path(path))
    if r.status != 200 or r.body != b"hello":
        return f"GET {path} answered {r.status} {r.body[:60]!r}, not the bytes written"
    _exec(t, {"cmd": ["ln", "-sfn", "/etc", f"{base}/conformance/etc-link"]})
    for bad in ("/etc/passwd", f"{base}/../../etc/passwd", f"{base}/conformance/etc-link/passwd", "relative.txt"):
        r = c.request("GET", c.file_path(bad))
        if r.status not in (400, 403, 404) or r.body == b"" or b"root:" in r.body:
            return f"GET {bad} (outside the writable paths) answered {r.status}, not refused"
        r = c.request("PUT", c.file_path(bad), b"x")
        if r.status not in (400, 403):
            return f"PUT {bad} (outside the writable paths) answered {r.status}, not 400/403"
    r = c.request("DELETE", c.file_path(f"{base}/conformance", recursive="true"))
    if r.status != 204:
        return f"DELETE of a directory with recursive=true answered {r.status}"
    return None


def errors_are_json(t: Target) -> Optional[str]:
    r = t.client.request("POST", "/v1/exec", b"{not json")
    try:
        code = r.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return f"malformed JSON was answered {r.status} with a body that is not a JSON error: {r.body[:120]!r}"
    return None if r.status == 400 and code else f"malformed JSON was answered {r.status}, not 400"


def sigterm(t: Target) -> Optional[str]:
    launched = t.launched
    if launched is None:
        return None  # needs the process: only when we started it
    proc = launched.proc  # type: ignore[attr-defined]
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(t.grace)
    except Exception:
        return f"still running {t.grace:g}s after SIGTERM (the grace period): it would be killed"
    return None if code == 0 else f"exited with code {code} after SIGTERM, not 0"


CHECKS: list[tuple[str, Callable[[Target], Optional[str]]]] = [
    ("probes", probes), ("signatures", signatures), ("non-root uid", non_root), ("read-only root", read_only_root),
    ("writable paths", writable_paths), ("exec streaming", exec_streams), ("timeout kills the group", timeout_kills_group),
    ("sessions keep state", sessions), ("files and path escapes", files), ("errors are JSON", errors_are_json),
    ("SIGTERM exit within grace", sigterm),
]


def run_checks(target: Target, only: Optional[set[str]] = None) -> list[tuple[str, Optional[str]]]:
    results = []
    for name, check in CHECKS:
        if only and name not in only:
            continue
        try:
            found = check(target)
        except Exception as exc:  # a runtime that hangs up or answers garbage breaks the rule
            found = f"the check could not complete: {type(exc).__name__}: {exc}"
        results.append((name, found))
    return results
