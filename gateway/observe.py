"""Metrics (Prometheus) and structured logs (one JSON object per line) of the gateway.

Labels take a bounded set of values: the operation (gateway/operations.py), the HTTP status, the
error code. No label names a sandbox, namespace or user. Log lines carry who (username), where
(namespace, sandbox), what (operation), the outcome and the timing, never a token, a request
body, code, a file's content or a file path's query."""
from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, Mapping, Optional

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import multiprocess

LOGGER = "llmsafespace.gateway"
PREFIX = "llmsafespace_gateway"
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def multiprocess_dir() -> Optional[str]:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    def __init__(self) -> None:
        # One registry per app; in gunicorn's multiprocess mode the values live in files and the
        # scrape collects them from there.
        r = self.registry = CollectorRegistry()
        self.requests = Counter(f"{PREFIX}_requests_total", "Calls answered, by operation, HTTP status and error code ('' when none).",
                                ["operation", "status", "code"], registry=r)
        self.latency = Histogram(f"{PREFIX}_response_start_seconds",
                                 "Time from a call's arrival to its response headers (authn, authz, lookup, resume wait, runtime's first answer).",
                                 ["operation"], buckets=BUCKETS, registry=r)
        self.reviews = Counter(f"{PREFIX}_auth_reviews_total", "Authentication and authorisation decisions, by review kind and whether the cache answered.",
                               ["review", "cache"], registry=r)
        self.activity = Counter(f"{PREFIX}_activity_writes_total", "Writes of llmsafespace.dev/last-activity, by result (written, conflict, error).",
                                ["result"], registry=r)
        self.resumes = Counter(f"{PREFIX}_resumes_total", "Suspended sandboxes resumed on demand, by result.", ["result"], registry=r)
        self.upstream = Counter(f"{PREFIX}_runtime_errors_total", "Calls the runtime could not answer, by kind (connect, read, rejected_signature).",
                                ["kind"], registry=r)

    def render(self) -> bytes:
        directory = multiprocess_dir()
        if directory:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=directory)
            return generate_latest(registry)
        return generate_latest(self.registry)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + "Z",
                                "level": record.levelname.lower(), "logger": record.name}
        fields = getattr(record, "fields", None)
        line.update(fields if isinstance(fields, Mapping) else {"msg": record.getMessage()[:1024]})
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)[-8192:]
        return orjson.dumps(line, default=str).decode()


def configure_logging(env: Mapping[str, str], stream: Any = None) -> logging.Logger:
    logger = logging.getLogger(LOGGER)
    level = (env.get("LOG_LEVEL") or "INFO").strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {level!r}")
    logger.setLevel(level)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    return logger
