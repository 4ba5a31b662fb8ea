"""How the orchestrator's own log lines look: text or JSON, each with its time and level.

`config()` is a `logging.config.dictConfig` document for our loggers, uvicorn's and httpx's,
with one handler on stderr (stdout is for machine-readable output). Lines per request (uvicorn's
access log, httpx's "HTTP Request: ...") are kept only at debug: with health checks every few
seconds per device they would bury the state changes a person needs to see. This module only
formats; what is worth a line, and at which level, is decided where the state changes.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from .settings import LogSettings

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")

# Loggers that write a line per request or per connection: silent unless debugging.
PER_REQUEST = ("uvicorn.access", "httpx")
# Loggers whose debug output is a protocol trace, too much even for --log-level debug.
TRACES = ("httpcore", "watchdog", "asyncio", "git")


def timestamp(created: float) -> str:
    """ISO 8601 in UTC with milliseconds, as `2026-11-28T04:17:24.512Z`."""
    moment = datetime.fromtimestamp(created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class TextFormatter(logging.Formatter):
    """`<time> <LEVEL> <logger>: <message>`, then the traceback, if any."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return timestamp(record.created)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: `time`, `level`, `logger`, `message` (and `exception`)."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, ensure_ascii=False)


def config(settings: LogSettings) -> dict[str, Any]:
    """The dictConfig document for `settings` (a level of `LEVELS`, a format of `FORMATS`)."""
    level = settings.level.upper()
    debugging = settings.level == "debug"
    loggers: dict[str, Any] = {
        # uvicorn's own loggers carry handlers of their own by default: ours instead.
        name: {"level": level, "handlers": [], "propagate": True}
        for name in ("uvicorn", "uvicorn.error")
    }
    for name in PER_REQUEST:
        loggers[name] = {"level": "DEBUG" if debugging else "WARNING", "propagate": True}
    for name in TRACES:
        loggers[name] = {"level": "INFO" if debugging else "WARNING", "propagate": True}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"text": {"()": TextFormatter}, "json": {"()": JsonFormatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": settings.format,
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": loggers,
    }


def uvicorn_options(settings: LogSettings) -> dict[str, Any]:
    """What `uvicorn.Config` needs so that it logs as `config()` says."""
    return {
        "log_config": config(settings),
        "log_level": settings.level,
        "access_log": settings.level == "debug",
    }
