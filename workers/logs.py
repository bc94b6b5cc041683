"""Logging set-up for every taskexec process: text or JSON lines, to stderr or a folder."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import orjson

TEXT_FORMAT = "%(asctime)s %(levelname)s %(processName)s[%(process)d] %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": self.formatTime(record), "level": record.levelname, "pid": record.process,
            "process": record.processName, "logger": record.name, "message": record.getMessage(),
        }
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        return orjson.dumps(out).decode()


def setup_logging(settings: Any, role: str, level: str | None = None) -> None:
    """Configure the root logger for this process; called again in each forked worker."""
    import multiprocessing.process as mp

    mp.current_process().name = role
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if settings.logging.dir:
        folder = Path(settings.logging.dir)
        folder.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(folder / "taskexec.log")
    else:
        handler = logging.StreamHandler(sys.stderr)
    if settings.logging.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel((level or settings.logging.level).upper())
    for noisy in ("redis", "urllib3"):
        logging.getLogger(noisy).setLevel(max(root.level, logging.WARNING))
