"""Waiting for a task's final status: told by the server as it is written, not found by polling.

Every script that makes a record final PUBLISHes the new status on a channel named as the
record's key (workers/scripts.py). A waiter subscribes to that channel on a connection of its
own, and only then reads the record: a status that became final before the subscription is in
that read, one that becomes final after it arrives as a message. The record is read again at
least every RECHECK_S all the same, so a message that never comes (the record was wiped, the
server restarted, a script of an older version wrote the status) costs at most that long.
Under RESP3 (redis-py's default) the confirmations and messages are push replies, read with
`push_request`; under RESP2 they are plain arrays, which the same reads return.
"""

from __future__ import annotations

from typing import Any

import redis

# A wait with no message reads the record again this often.
RECHECK_S = 1.0


class Subscription:
    """One channel, subscribed on a connection taken from `pool`, which gets it back
    unsubscribed (or closed, if it broke) on close()."""

    def __init__(self, pool: redis.ConnectionPool, channel: str) -> None:
        self.pool = pool
        self.conn: Any = pool.get_connection()
        self.ok = True
        try:
            self.conn.send_command("SUBSCRIBE", channel)
            reply = self.conn.read_response(push_request=True)
            if not isinstance(reply, list) or _text(reply[0]) != "subscribe":
                raise redis.ResponseError(f"unexpected reply to SUBSCRIBE {channel}: {reply!r}")
        except BaseException:
            self.ok = False
            self.close()
            raise

    def wait(self, timeout_s: float) -> bool:
        """Block until a message comes (True) or timeout_s passes (False). A connection that
        breaks makes it False at once, and `ok` False: the caller polls from then on."""
        if not self.ok:
            return False
        try:
            if self.conn.can_read(timeout=timeout_s):
                self.conn.read_response(push_request=True)
                return True
        except (redis.RedisError, OSError):
            self.ok = False
        return False

    def close(self) -> None:
        if self.ok:
            try:
                # No health check: a PING on a subscribed connection gets a pub/sub reply.
                self.conn.send_command("UNSUBSCRIBE", check_health=False)
                while True:  # messages published meanwhile come before the confirmation
                    reply = self.conn.read_response(push_request=True)
                    if (isinstance(reply, list) and _text(reply[0]) == "unsubscribe"
                            and reply[2] == 0):
                        break
            except (redis.RedisError, OSError):
                self.ok = False
        if not self.ok:
            self.conn.disconnect()
        self.pool.release(self.conn)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
