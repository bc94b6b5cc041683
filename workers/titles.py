"""Process titles (`ps`, `top`) that say role, slot, load and queues, without harming environ.

setproctitle makes room for a long title by moving the environment away and writing over the
original argv and environ block, so /proc/PID/environ then shows the title instead of the
variables (py-setproctitle #166). With SPT_NOENV it writes over argv only; the title must then
fit the space the original command line took, so it is cut here at a word boundary rather than
in the middle of a word by setproctitle.
"""

from __future__ import annotations

import os

from setproctitle import setproctitle

_capacity: int | None = None
_prepared = False


def prepare() -> None:
    """Measure the command line and keep the environment intact; once, before any title."""
    global _capacity, _prepared
    if _prepared:
        return
    _prepared = True
    try:
        with open("/proc/self/cmdline", "rb") as fh:
            _capacity = max(len(fh.read()) - 1, 0)
    except OSError:
        _capacity = None
    os.environ["SPT_NOENV"] = "1"
    setproctitle("taskexec")
    # setproctitle read the variable on that first call; children need not inherit it.
    os.environ.pop("SPT_NOENV", None)


def fit(title: str, capacity: int | None) -> str:
    """The title, cut after the last whole word (or comma-separated name) that fits."""
    if capacity is None or len(title) <= capacity:
        return title
    cut = title[:capacity]
    boundary = max(cut.rfind(" "), cut.rfind(","))
    return cut[:boundary] if boundary > 0 else cut


def set_title(title: str) -> None:
    prepare()
    setproctitle(fit(title, _capacity))


def supervisor_title(host_id: str) -> str:
    return f"taskexec: supervisor {host_id}"


def worker_title(slot: int, busy: int, threads: int, queues: tuple[str, ...] | list[str],
                 draining: bool = False) -> str:
    title = f"taskexec: worker {slot} [{busy}/{threads}] {','.join(queues)}"
    return title + " (draining)" if draining else title
