"""Reading a systemd unit file the way systemd does, for the settings `taskexec doctor` checks."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

_SPAN = re.compile(r"(\d+(?:\.\d+)?)\s*([a-zµ]*)")
_UNITS = {
    "": 1.0, "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0,
    "ms": 1e-3, "msec": 1e-3, "us": 1e-6, "usec": 1e-6, "µs": 1e-6,
    "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
}
INFINITY = float("inf")


@dataclass
class Unit:
    """Settings by section; a setting given several times keeps every value, in order."""

    path: Path
    sections: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def get(self, section: str, key: str, default: str | None = None) -> str | None:
        values = self.sections.get(section, {}).get(key)
        return values[-1] if values else default

    def all(self, section: str, key: str) -> list[str]:
        """Every value of a list setting, split at spaces; an empty assignment resets it."""
        out: list[str] = []
        for value in self.sections.get(section, {}).get(key, []):
            out = [] if not value.strip() else out + value.split()
        return out

    def exec_start(self) -> list[str]:
        raw = self.get("Service", "ExecStart") or ""
        return shlex.split(raw.lstrip("@-:+!"))


def parse(path: Path) -> Unit:
    """Parse a unit file: sections, `Key=Value`, comments, backslash continuations."""
    unit = Unit(path)
    section = ""
    pending = ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            unit.sections.setdefault(section, {})
            continue
        key, sep, value = line.partition("=")
        if sep:
            unit.sections.setdefault(section, {}).setdefault(key.strip(), []).append(
                value.strip())
    return unit


def timespan(value: str | None, default: float | None = None) -> float | None:
    """Seconds of a systemd time span ('45', '1min 30s', '500ms', 'infinity')."""
    if value is None or not value.strip():
        return default
    text = value.strip().lower()
    if text == "infinity":
        return INFINITY
    total = 0.0
    pos = 0
    for m in _SPAN.finditer(text):
        if text[pos:m.start()].strip():
            raise ValueError(f"not a time span: {value!r}")
        if m.group(2) not in _UNITS:
            raise ValueError(f"unknown time unit {m.group(2)!r} in {value!r}")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if text[pos:].strip() or pos == 0:
        raise ValueError(f"not a time span: {value!r}")
    return total
