"""Exit codes shared by every taskexec command and process (DESIGN §5)."""

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    NOT_FOUND = 3
    TIMED_OUT = 4
    REDIS_UNAVAILABLE = 5
    BOOT_FAILED = 6
