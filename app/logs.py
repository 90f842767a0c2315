"""Logging set-up for the server: text for people, or JSON lines for log pipelines."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from typing import Any

import websockets

# Attributes every LogRecord has; anything else on a record came in through ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",
}


class RedactKeys(logging.Filter):
    """Keys never reach a log line. Uvicorn logs a WebSocket's path with its query string, where a
    browser puts its key (its name perhaps percent-encoded): every query string in a log line is
    dropped. And any bearer credential, however it got into a message, is blanked."""

    QUERY = re.compile(r"\?[^\s\"']*")
    BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',;]+")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self.QUERY.sub("?[redacted]", message) if "?" in message else message
        redacted = self.BEARER.sub(r"\1[redacted]", redacted)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


class NoProtocolTrace(logging.Filter):
    """Drops the WebSocket library's debug trace, which uvicorn routes into its own logger at
    ``--log-level debug``: it writes every handshake header (keys among them) and every frame's
    payload (clients' inputs), and neither may be logged. Its warnings and errors still pass."""

    LIBRARY = os.path.dirname(websockets.__file__) + os.sep

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG or not record.pathname.startswith(self.LIBRARY)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(
            {k: v for k, v in vars(record).items() if k not in _STANDARD and v is not None}
        )
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def log_config(level: str, form: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for uvicorn's ``log_config``: one handler on stderr for the
    server's own loggers and uvicorn's; uvicorn's access log is off (ours leaves query strings out)."""
    formatter = (
        {"()": JsonFormatter}
        if form == "json"
        else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    )
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "main",
        "stream": "ext://sys.stderr",
        "filters": ["trace", "redact"],
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"trace": {"()": NoProtocolTrace}, "redact": {"()": RedactKeys}},
        "formatters": {"main": formatter},
        "handlers": {"main": handler},
        # Every other library's lines too (TensorFlow's start-up output among them, at debug), in
        # the same format: in JSON mode every line is JSON.
        "root": {"handlers": ["main"], "level": "DEBUG" if level == "debug" else "WARNING"},
        "loggers": {
            "app": {"handlers": ["main"], "level": level.upper(), "propagate": False},
            "uvicorn": {"handlers": ["main"], "level": level.upper(), "propagate": False},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }
