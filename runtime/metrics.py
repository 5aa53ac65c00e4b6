"""Prometheus text exposition, by hand (the runtime stays on the standard library)."""
from __future__ import annotations

import threading
from collections import defaultdict

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.executions: dict[tuple[str, str], int] = defaultdict(int)  # (kind, outcome)
        self.failures: dict[str, int] = defaultdict(int)  # reason
        self.auth_refused: dict[str, int] = defaultdict(int)  # check
        self.requests: dict[str, int] = defaultdict(int)  # status code
        self.hist: dict[str, list[int]] = {}  # kind -> bucket counts (+Inf last)
        self.hist_sum: dict[str, float] = defaultdict(float)
        self.running = 0
        self.sessions = 0

    def execution(self, kind: str, outcome: str, seconds: float) -> None:
        with self._lock:
            self.executions[(kind, outcome)] += 1
            counts = self.hist.setdefault(kind, [0] * (len(BUCKETS) + 1))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    counts[i] += 1
            counts[-1] += 1
            self.hist_sum[kind] += seconds

    def count(self, table: dict[str, int], key: str) -> None:
        with self._lock:
            table[key] += 1

    def add_running(self, delta: int) -> None:
        with self._lock:
            self.running += delta

    def render(self) -> str:
        with self._lock:
            out = ["# HELP llmss_runtime_executions_total Executions (exec) and session runs finished, by outcome.",
                   "# TYPE llmss_runtime_executions_total counter"]
            out += [f'llmss_runtime_executions_total{{kind="{k}",outcome="{o}"}} {n}' for (k, o), n in sorted(self.executions.items())]
            out += ["# HELP llmss_runtime_execution_duration_seconds Wall time of executions and session runs.",
                    "# TYPE llmss_runtime_execution_duration_seconds histogram"]
            for kind, counts in sorted(self.hist.items()):
                for bound, n in zip(BUCKETS, counts):
                    out.append(f'llmss_runtime_execution_duration_seconds_bucket{{kind="{kind}",le="{bound}"}} {n}')
                out.append(f'llmss_runtime_execution_duration_seconds_bucket{{kind="{kind}",le="+Inf"}} {counts[-1]}')
                out.append(f'llmss_runtime_execution_duration_seconds_sum{{kind="{kind}"}} {self.hist_sum[kind]:.6f}')
                out.append(f'llmss_runtime_execution_duration_seconds_count{{kind="{kind}"}} {counts[-1]}')
            out += ["# HELP llmss_runtime_failures_total Executions that could not run or were cut short by the runtime.",
                    "# TYPE llmss_runtime_failures_total counter"]
            out += [f'llmss_runtime_failures_total{{reason="{r}"}} {n}' for r, n in sorted(self.failures.items())]
            out += ["# HELP llmss_runtime_auth_refused_total Calls refused by the signature check, by failed check.",
                    "# TYPE llmss_runtime_auth_refused_total counter"]
            out += [f'llmss_runtime_auth_refused_total{{check="{c}"}} {n}' for c, n in sorted(self.auth_refused.items())]
            out += ["# HELP llmss_runtime_http_responses_total HTTP responses, by status code.",
                    "# TYPE llmss_runtime_http_responses_total counter"]
            out += [f'llmss_runtime_http_responses_total{{code="{c}"}} {n}' for c, n in sorted(self.requests.items())]
            out += ["# HELP llmss_runtime_running_executions Executions and session runs running now.",
                    "# TYPE llmss_runtime_running_executions gauge", f"llmss_runtime_running_executions {self.running}",
                    "# HELP llmss_runtime_sessions Python sessions open now.",
                    "# TYPE llmss_runtime_sessions gauge", f"llmss_runtime_sessions {self.sessions}"]
            return "\n".join(out) + "\n"
