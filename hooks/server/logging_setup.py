"""Structured logs: one JSON object per line on stderr, for the `llmsafespace` loggers.

The HTTP layer writes one line per hook call on `llmsafespace.hooks` (see hooks/server/app.py); request
bodies are never logged. The level comes from LOG_LEVEL (default INFO): successful calls log at
INFO, refused requests (4xx) at WARNING, hook failures (5xx) at ERROR with the traceback."""
from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from typing import IO, Any, Optional

import orjson

ROOT_LOGGER = "llmsafespace"
HOOK_LOGGER = "llmsafespace.hooks"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_HANDLER_MARK = "_llmsafespace_json"
# A log line's string fields are cut at this many characters (a 1 MB object name in a refused
# request must not become a 1 MB line), tracebacks at MAX_TRACEBACK_CHARS keeping their end.
MAX_FIELD_CHARS = 1024
MAX_TRACEBACK_CHARS = 16 * 1024


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", ...}`: the record's `fields` (passed as `extra={"fields": {...}}`)
    or its message, plus `traceback` when the record carries an exception."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + ".%03dZ" % int((record.created - seconds) * 1000),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            line.update((key, truncate(value) if isinstance(value, str) else value) for key, value in fields.items())
        else:
            line["msg"] = truncate(record.getMessage())
        if record.exc_info:
            trace = self.formatException(record.exc_info)
            if len(trace) > MAX_TRACEBACK_CHARS:  # the end names the failing line and the error
                trace = f"[truncated {len(trace)} characters]..." + trace[-MAX_TRACEBACK_CHARS:]
            line["traceback"] = trace
        return orjson.dumps(line, default=str).decode()


def truncate(text: str, limit: int = MAX_FIELD_CHARS) -> str:
    """`text`, or its first `limit` characters and a marker giving the original length."""
    return text if len(text) <= limit else f"{text[:limit]}...[truncated {len(text)} characters]"


def level_from_env(env: Mapping[str, str]) -> int:
    raw = (env.get("LOG_LEVEL") or "INFO").strip().upper()
    if raw not in LEVELS:
        raise ValueError(f"LOG_LEVEL must be one of {', '.join(LEVELS)}, got {raw!r}")
    return getattr(logging, raw)


def configure(env: Mapping[str, str], stream: Optional[IO[str]] = None) -> logging.Logger:
    """Install the JSON handler on the `llmsafespace` logger (once per process; a later call
    updates the level and the stream: `stream`, else the current sys.stderr). Lines do not propagate to the root logger,
    so a root handler configured elsewhere cannot print them twice in another format."""
    logger = logging.getLogger(ROOT_LOGGER)
    logger.setLevel(level_from_env(env))
    logger.propagate = False
    handler = next((h for h in logger.handlers if getattr(h, _HANDLER_MARK, False)), None)
    if handler is None:
        handler = logging.StreamHandler(stream or sys.stderr)
        setattr(handler, _HANDLER_MARK, True)
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
    else:
        try:
            handler.setStream(stream or sys.stderr)  # type: ignore[attr-defined]
        except ValueError:  # the previous stream was closed (a test's StringIO)
            handler.stream = stream or sys.stderr  # type: ignore[attr-defined]
    return logging.getLogger(HOOK_LOGGER)
