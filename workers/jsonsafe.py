"""Encode handler results as JSON, turning the common non-JSON types into text."""

from __future__ import annotations

import decimal
from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


class UnencodableResult(TypeError):
    """A result that has no faithful JSON form; the message names what failed."""


def _default(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(f"bytes of length {len(value)} (decode them to text first)")
    raise TypeError(f"object of type {type(value).__qualname__}")


def dumps(value: Any) -> str:
    """JSON text of a handler result; UnencodableResult says why it cannot be stored."""
    if value is None:
        return ""
    try:
        return orjson.dumps(value, default=_default, option=_OPTIONS).decode()
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise UnencodableResult(f"result cannot be encoded as JSON: {exc}") from None


def text(value: Any, limit: int = 2000) -> str:
    """Any value as bounded text, for progress and error messages."""
    try:
        s = value if isinstance(value, str) else str(value)
    except Exception:  # a broken __str__ must not take the worker down
        s = f"<unprintable {type(value).__qualname__}>"
    return s if len(s) <= limit else s[:limit] + "..."
