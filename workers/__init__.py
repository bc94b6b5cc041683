"""taskexec worker side: one worker process, the queue and store access, and the handlers."""

__version__ = "0.1.0"
