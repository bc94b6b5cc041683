"""The handler registry: task types map only to the names registered in configuration."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

Handler = Callable[[dict, Any], "dict | None"]


class HandlerLoadError(ImportError):
    """A registered handler could not be imported; the message names it."""


def load_handlers(registered: Mapping[str, str]) -> dict[str, Handler]:
    """Import every registered `module:function`; nothing from a message is ever imported."""
    handlers: dict[str, Handler] = {}
    for name, target in sorted(registered.items()):
        module_name, _, func_name = target.partition(":")
        try:
            fn = getattr(importlib.import_module(module_name), func_name)
        except Exception as exc:
            raise HandlerLoadError(
                f"handler {name!r} ({target}) cannot be loaded: {type(exc).__name__}: {exc}"
            ) from exc
        if not callable(fn):
            raise HandlerLoadError(f"handler {name!r} ({target}) is not callable")
        handlers[name] = fn
    return handlers
