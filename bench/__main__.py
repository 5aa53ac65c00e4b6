"""`python -m bench [--quick] [--json FILE]`: run every section and print one table.

1. In-process latency of sandbox_sync.sync (realistic and minimal requests) and of
   warmpool_sync.sync at 10 / 100 / 1,000 / 5,000 warm pods and sandboxes.
2. The floors: what parsing the request and serialising the response cost with orjson through
   hooks/server/jsonio.py (the server's own JSON library and options: the honest floor, the targets'
   base) and with the stdlib json module (for comparison), interleaved with the hook's calls.
3. HTTP through gunicorn on loopback (wrk, else a bounded http.client load generator):
   /sandbox/sync against /bench/echo with the same body.
4. Peak RSS after the 5,000-object WarmPool run.
Then the targets, each MET / NOT MET."""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from typing import Any, Callable

from bench import loadgen, payloads, write_results
from hooks.server import jsonio
from hooks import sandbox_sync, warmpool_sync
from tests.factory import NOW

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TARGET_SANDBOX_P99_MS = 1.0
TARGET_WARMPOOL_5000_MS = 100.0
# hook / orjson floor, medians: every case, and the running Sandbox (the most frequent call)
TARGET_FLOOR_RATIO = 3.0
TARGET_RUNNING_FLOOR_RATIO = 2.0
# The largest valid Sandbox (schema maxima, 200 runtimes, > 1 MB): a tenth of Metacontroller's
# 10 s webhook timeout, so even a slow node answers it long before Metacontroller gives up.
TARGET_WORST_CASE_MS = 1000.0
TARGET_HTTP_SHARE = 0.70
REALISTIC = "running (all children observed)"


def percentile(sorted_ns: list[int], q: float) -> float:
    """Nearest-rank percentile of sorted samples, in milliseconds."""
    if not sorted_ns:
        return float("nan")
    index = min(len(sorted_ns) - 1, max(0, int(round(q / 100.0 * len(sorted_ns) + 0.5)) - 1))
    return sorted_ns[index] / 1e6


def measure(fns: dict[str, Callable[[], Any]], min_iters: int, max_iters: int, budget_s: float) -> dict[str, dict[str, Any]]:
    """Time each of fns one call at a time, interleaved (one call of each per iteration, so a
    change in the shared machine's load falls on all of them alike): at least min_iters
    iterations, at most max_iters, stopping once budget_s is spent (after min_iters). A few
    warm-up calls first."""
    for _ in range(min(5, max(1, min_iters // 10))):
        for fn in fns.values():
            fn()
    samples: dict[str, list[int]] = {key: [] for key in fns}
    clock = time.perf_counter_ns
    deadline = clock() + int(budget_s * 1e9)
    iters = 0
    while iters < max_iters:
        for key, fn in fns.items():
            t0 = clock()
            fn()
            samples[key].append(clock() - t0)
        iters += 1
        if iters >= min_iters and clock() >= deadline:
            break
    out = {}
    for key, times in samples.items():
        times.sort()
        out[key] = {"iters": len(times), "median_ms": percentile(times, 50), "p99_ms": percentile(times, 99),
                    "max_ms": times[-1] / 1e6}
    return out


def floor_fns(request: dict[str, Any], response: dict[str, Any]) -> dict[str, Callable[[], Any]]:
    """What any JSON hook server must do at least: parse the request, serialise the response.
    `orjson`: the server's own functions (hooks/server/jsonio.py: orjson, sorted keys), the floor the
    targets are set against; `stdlib`: json.loads + json.dumps, for comparison."""
    raw = jsonio.dumps(request)
    text = raw.decode()
    loads, dumps = json.loads, json.dumps

    def orjson_floor() -> Any:
        jsonio.loads(raw)
        return jsonio.dumps(response)

    def stdlib_floor() -> Any:
        loads(text)
        return dumps(response)
    return {"orjson": orjson_floor, "stdlib": stdlib_floor}


def hook_case(label: str, hook: Callable[..., dict[str, Any]], request: dict[str, Any], iters: tuple[int, int],
              budget_s: float) -> dict[str, Any]:
    before = copy.deepcopy(request)
    response = hook(request, NOW)
    if request != before:
        raise SystemExit(f"bench: the hook changed its request ({label}): not a pure function")
    timings = measure({"hook": lambda: hook(request, NOW), **floor_fns(request, response)}, iters[0], iters[1], budget_s)
    timing, orjson_floor, stdlib_floor = timings["hook"], timings["orjson"], timings["stdlib"]
    return {
        "case": label,
        "request_bytes": len(json.dumps(request, separators=(",", ":"))),
        "response_bytes": len(json.dumps(response, separators=(",", ":"))),
        "children_in": sum(len(v) for v in request.get("children", {}).values()),
        "children_out": len(response.get("children", [])),
        **timing,
        "orjson_floor_median_ms": orjson_floor["median_ms"],
        "orjson_floor_p99_ms": orjson_floor["p99_ms"],
        "orjson_floor_ratio": timing["median_ms"] / orjson_floor["median_ms"],
        "floor_median_ms": stdlib_floor["median_ms"],
        "floor_p99_ms": stdlib_floor["p99_ms"],
        "floor_ratio": timing["median_ms"] / stdlib_floor["median_ms"],
    }


def run(quick: bool, http_seconds: float) -> dict[str, Any]:
    results: dict[str, Any] = {"quick": quick, "machine": machine()}
    sandbox_iters = (200, 400) if quick else (3000, 20000)
    sandbox_budget = 0.3 if quick else 3.0
    results["sandbox"] = [hook_case(label, sandbox_sync.sync, build(), sandbox_iters, sandbox_budget)
                          for label, build in payloads.SANDBOX_CASES.items()]

    results["worst_case"] = hook_case("worst case (schema maxima)", sandbox_sync.sync, payloads.sandbox_worst_case(),
                                      (3, 10) if quick else (10, 40), 0.5 if quick else 3.0)

    sizes = (10, 100) if quick else (10, 100, 1000, 5000)
    pools = []
    for n in sizes:
        request = payloads.warm_pool_request(n)
        iters = (20, 200) if quick else ((1000, 5000) if n <= 100 else (200, 1000) if n <= 1000 else (40, 200))
        row = hook_case(f"WarmPool N={n}", warmpool_sync.sync, request, iters, 0.3 if quick else 3.0)
        row["n"] = n
        pools.append(row)
        del request
    for prev, row in zip(pools, pools[1:]):
        # growth of the median per 10x objects: 10 = linear, < 10 better, > 10 worse
        row["growth_per_10x"] = (row["median_ms"] / prev["median_ms"]) ** (1.0 / _log10(row["n"] / prev["n"]))
    results["warmpool"] = pools
    results["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    results["peak_rss_after"] = f"WarmPool N={sizes[-1]}"

    if http_seconds > 0:
        body = json.dumps(payloads.sandbox_running(), separators=(",", ":")).encode()
        results["http"] = loadgen.compare(ROOT, body, http_seconds, connections=8, rounds=1 if quick else 2)
    else:
        results["http"] = None
    results["targets"] = targets(results)
    return results


def _log10(x: float) -> float:
    return math.log10(x)


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    realistic = next(row for row in r["sandbox"] if row["case"] == REALISTIC)
    worst_p99 = max(r["sandbox"], key=lambda row: row["p99_ms"])
    out = [
        {"target": f"Sandbox sync in-process p99 < {TARGET_SANDBOX_P99_MS:g} ms (worst case: {worst_p99['case']})",
         "value": f"{worst_p99['p99_ms']:.3f} ms", "met": worst_p99["p99_ms"] < TARGET_SANDBOX_P99_MS},
    ]
    big = r["warmpool"][-1]
    if big["n"] >= 5000:
        out.append({"target": f"WarmPool sync at 5,000 < {TARGET_WARMPOOL_5000_MS:g} ms (median; p99 shown)",
                    "value": f"{big['median_ms']:.1f} ms (p99 {big['p99_ms']:.1f})", "met": big["median_ms"] < TARGET_WARMPOOL_5000_MS})
    else:
        out.append({"target": f"WarmPool sync at 5,000 < {TARGET_WARMPOOL_5000_MS:g} ms", "value": f"not run (--quick, N={big['n']})", "met": None})
    worst_case = r["worst_case"]
    out.append({"target": f"worst-case Sandbox sync < {TARGET_WORST_CASE_MS:g} ms (median; p99 shown; webhook timeout 10 s)",
                "value": f"{worst_case['median_ms']:.1f} ms (p99 {worst_case['p99_ms']:.1f}, {worst_case['request_bytes'] / 1e6:.1f} MB)",
                "met": worst_case["median_ms"] < TARGET_WORST_CASE_MS})
    out.append({"target": f"hook / orjson floor <= {TARGET_RUNNING_FLOOR_RATIO:g} for the running Sandbox (medians)",
                "value": f"{realistic['orjson_floor_ratio']:.2f}", "met": realistic["orjson_floor_ratio"] <= TARGET_RUNNING_FLOOR_RATIO})
    worst = max(r["sandbox"] + r["warmpool"], key=lambda row: row["orjson_floor_ratio"])
    out.append({"target": f"hook / orjson floor <= {TARGET_FLOOR_RATIO:g} for every case (medians; worst: {_label(worst)})",
                "value": f"{worst['orjson_floor_ratio']:.2f}", "met": worst["orjson_floor_ratio"] <= TARGET_FLOOR_RATIO})
    h = r.get("http")
    if h and h.get("sync") and h.get("echo"):
        share = h["sync"]["rps"] / h["echo"]["rps"] if h["echo"]["rps"] else 0.0
        out.append({"target": f"HTTP Sandbox sync >= {TARGET_HTTP_SHARE:.0%} of echo req/s",
                    "value": f"{share:.0%}", "met": share >= TARGET_HTTP_SHARE})
    else:
        out.append({"target": f"HTTP Sandbox sync >= {TARGET_HTTP_SHARE:.0%} of echo req/s", "value": "not run", "met": None})
    return out


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        revision = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        revision = ""
    return {"cpus": os.cpu_count(), "cpu_model": model, "revision": revision, "python": platform.python_version(),
            "implementation": platform.python_implementation()}


def _label(row: dict[str, Any]) -> str:
    return row["case"] if row["case"].startswith("WarmPool") else f"Sandbox {row['case']}"


def table(r: dict[str, Any]) -> str:
    lines: list[str] = []
    m = r["machine"]
    lines.append(f"LLMSafeSpace hook benchmark{' (--quick)' if r['quick'] else ''}: {m['cpus']} CPUs, {m['cpu_model'] or 'unknown CPU'}, "
                 f"{m['implementation']} {m['python']}, tree {m['revision'] or 'unknown'}")
    lines.append("")
    lines.append("## 1+2. In-process latency (ms) and the JSON floors: parse(request) + serialise(response) with orjson "
                 "(hooks/server/jsonio.py, the server's) and with stdlib json")
    head = (f"| {'case':<40} | {'req KB':>6} | {'children in/out':>15} | {'iters':>5} | {'median':>8} | {'p99':>8} "
            f"| {'orjson floor':>12} | {'hook/orjson':>11} | {'json floor':>10} | {'hook/json':>9} | {'growth/10x':>10} |")
    lines.append(head)
    lines.append("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for row in r["sandbox"] + r["warmpool"] + [r["worst_case"]]:
        growth = f"{row['growth_per_10x']:.1f}x" if "growth_per_10x" in row else ""
        lines.append(f"| {_label(row):<40} | {row['request_bytes'] / 1024:>6.1f} | {row['children_in']:>7}/{row['children_out']:<7} | {row['iters']:>5} "
                     f"| {row['median_ms']:>8.3f} | {row['p99_ms']:>8.3f} | {row['orjson_floor_median_ms']:>12.3f} | {row['orjson_floor_ratio']:>11.2f} "
                     f"| {row['floor_median_ms']:>10.3f} | {row['floor_ratio']:>9.2f} | {growth:>10} |")
    lines.append(f"hook/orjson: hook median / orjson floor median (targets: <= {TARGET_RUNNING_FLOOR_RATIO:g} running Sandbox, "
                 f"<= {TARGET_FLOOR_RATIO:g} every case); hook/json: the same against stdlib json")
    lines.append("growth/10x: the median's growth per tenfold objects (10x = linear; 5,000 vs 1,000 normalised to a tenfold step)")
    lines.append("")
    lines.append("## 3. HTTP (gunicorn -w 2 threaded hook workers, hooks/server/gunicorn_conf.py, loopback, same realistic Sandbox body)")
    h = r.get("http")
    if not h:
        lines.append("not run (--quick without --http-seconds, or --http-seconds 0)")
    elif h.get("error"):
        lines.append(f"failed: {h['error']}")
    else:
        lines.append(f"load generator: {h['tool']}, {h['connections']} connections, {h['rounds']} alternating rounds x {h['seconds']:g} s per route, "
                     f"body {h['body_bytes'] / 1024:.1f} KB; 1-min load average before: {h['loadavg_before']:.2f}")
        lines.append(f"| {'route':<14} | {'req/s':>8} | {'p50 ms':>7} | {'p99 ms':>7} | {'requests':>8} | {'errors':>7} | {'worker CPU ms/req':>17} | {'req/s per round':<18} |")
        lines.append(f"|{'-' * 16}|{'-' * 10}|{'-' * 9}|{'-' * 9}|{'-' * 10}|{'-' * 9}|{'-' * 19}|{'-' * 20}|")
        for route in ("sync", "echo"):
            x = h[route]
            path = "/sandbox/sync" if route == "sync" else "/bench/echo"
            lines.append(f"| {path:<14} | {x['rps']:>8.0f} | {x['p50_ms']:>7.2f} | {x['p99_ms']:>7.2f} | {x['requests']:>8} | {x['errors']:>7} | {x['worker_cpu_ms_per_req']:>17.3f} | {', '.join(map(str, x['rounds_rps'])):<18} |")
        ratio = h["sync"]["rps"] / h["echo"]["rps"] if h["echo"]["rps"] else 0.0
        cpu_ratio = h["echo"]["worker_cpu_ms_per_req"] / h["sync"]["worker_cpu_ms_per_req"] if h["sync"]["worker_cpu_ms_per_req"] else 0.0
        lines.append(f"sync/echo throughput ratio: {ratio:.2f} (by worker CPU per request, echo/sync: {cpu_ratio:.2f})")
    lines.append("")
    lines.append("## 4. Memory")
    lines.append(f"peak RSS of the benchmark process after {r['peak_rss_after']}: {r['peak_rss_mib']:.1f} MiB (ru_maxrss)")
    lines.append("")
    lines.append("## Targets")
    for t in r["targets"]:
        verdict = "MET" if t["met"] else "NOT MET" if t["met"] is False else "SKIPPED"
        lines.append(f"- {verdict:<7} {t['target']}: {t['value']}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if argv[:1] == ["e2e"]:  # the end-to-end benchmark on a real control plane (bench/e2e.py)
        from bench import e2e
        return e2e.main(argv[1:])
    if argv[:1] == ["runtime"]:  # execution overhead of the in-sandbox runtime (bench/runtime.py)
        from bench import runtime
        return runtime.main(argv[1:])
    parser = argparse.ArgumentParser(prog="bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few iterations, 1 s HTTP runs: a smoke test")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--http-seconds", type=float, default=None, help="seconds per HTTP route (default 5, --quick 1; 0 skips)")
    args = parser.parse_args(argv)
    http_seconds = args.http_seconds if args.http_seconds is not None else (1.0 if args.quick else 5.0)
    results = run(args.quick, http_seconds)
    print(table(results))
    if args.json:
        write_results(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
