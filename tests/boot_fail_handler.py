"""A handler module that cannot be imported in a worker (its parent is the supervisor), so
workers fail to boot while the supervisor itself is fine (S15)."""

from __future__ import annotations

import os

import psutil

if " ".join(psutil.Process(os.getppid()).cmdline()).startswith("taskexec: supervisor"):
    raise RuntimeError("boot_fail_handler refuses to load in a worker")


def run(task: dict, ctx: object) -> None:
    return None
