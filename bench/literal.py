"""What is left of a hook call when its decisions cost nothing (docs/benchmark.md, "Third look").

For the small cases, times beside the hook and its orjson floor a function that returns the hook's
own response as a Python literal (the cost of building those dicts and lists), timed like the
benchmark (interleaved, one call each per round), and counts the Python calls per sync.
Run: .venv/bin/python -m bench.literal"""
from __future__ import annotations

import cProfile
import pstats
from typing import Any, Callable

from bench import payloads
from bench.__main__ import floor_fns, measure
from hooks import sandbox_sync, warmpool_sync
from tests.factory import NOW

CASES: list[tuple[str, Callable[..., dict[str, Any]], Callable[[], dict[str, Any]]]] = [
    ("Sandbox new", sandbox_sync.sync, payloads.sandbox_new),
    ("Sandbox warm pod bound", sandbox_sync.sync, payloads.sandbox_warm_bound),
    ("Sandbox running", sandbox_sync.sync, payloads.sandbox_running),
    ("WarmPool N=10", warmpool_sync.sync, lambda: payloads.warm_pool_request(10)),
]


def literal_of(response: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    """A function returning a fresh `response` built by the interpreter from a literal."""
    scope: dict[str, Any] = {}
    exec("def literal():\n    return " + repr(response), scope)  # noqa: S102 - our own repr, built here
    literal: Callable[[], dict[str, Any]] = scope["literal"]
    assert literal() == response
    return literal


def calls_per_sync(hook: Callable[..., dict[str, Any]], request: dict[str, Any], n: int = 200) -> float:
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(n):
        hook(request, NOW)
    profile.disable()
    return pstats.Stats(profile).total_calls / n  # type: ignore[attr-defined]


def main() -> None:
    print("| case | hook us | orjson floor us | hook / floor | literal response us | literal / floor | Python calls per sync |")
    print("|---|---|---|---|---|---|---|")
    for label, hook, make in CASES:
        request = make()
        response = hook(request, NOW)
        timings = measure({"hook": lambda: hook(request, NOW), **floor_fns(request, response), "literal": literal_of(response)},
                          3000, 20000, 3.0)
        hook_us, floor_us, literal_us = (timings[k]["median_ms"] * 1000 for k in ("hook", "orjson", "literal"))
        print(f"| {label} | {hook_us:.0f} | {floor_us:.0f} | {hook_us / floor_us:.2f} | {literal_us:.0f} | "
              f"{literal_us / floor_us:.2f} | {calls_per_sync(hook, request):,.0f} |")


if __name__ == "__main__":
    main()
