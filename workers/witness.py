"""Whether this consumer may judge others dead by the age of their heartbeats.

A heartbeat's age says a consumer is dead only if it could have beaten and did not. After Redis
was frozen, paused, restarted or unreachable, every consumer's last heartbeat is old, the living
ones too, and the first one to look would take over messages whose tasks are still running.
So a consumer judges only when its own heartbeats reached Redis without a break over the whole
`heartbeat.timeout_s` before now (by the server's clock): then any other live consumer had the
same chance to beat. Right after such a break nobody is judged for one timeout, in which the
living beat again; the dead stay old and are taken over then.
"""

from __future__ import annotations

import redis

# KEYS: own heartbeat zset. ARGV: window s, largest gap s.
# Returns {1 or 0, the largest gap found (s, as text)}: 1 when the beats cover the window.
UNBROKEN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local window, gap = tonumber(ARGV[1]), tonumber(ARGV[2])
local from = now - window
local scores = redis.call('ZRANGEBYSCORE', KEYS[1], from - gap, '+inf', 'WITHSCORES')
local last, widest = nil, 0
for i = 2, #scores, 2 do
  local s = tonumber(scores[i])
  local step = s - (last or from)
  if step > widest then widest = step end
  last = s
end
if last == nil then return {0, tostring(window)} end
if now - last > widest then widest = now - last end
if widest > gap then return {0, tostring(widest)} end
return {1, tostring(widest)}
"""


class Witness:
    """Asks Redis whether this consumer's own heartbeats have been unbroken for a timeout."""

    def __init__(self, client: redis.Redis, heartbeat_key: str, timeout_s: float) -> None:
        self.heartbeat_key = heartbeat_key
        self.window_s = float(timeout_s)
        # Beats come every heartbeat.interval_s, which is below the timeout; a gap above half
        # the timeout means this consumer (or Redis) stalled.
        self.max_gap_s = self.window_s / 2
        self.widest_gap_s = 0.0
        self._script = client.register_script(UNBROKEN)

    def reliable(self) -> bool:
        """True when heartbeats of others may be judged now; False after a break of our own."""
        ok, widest = self._script(keys=[self.heartbeat_key],
                                  args=[self.window_s, self.max_gap_s])
        self.widest_gap_s = float(widest)
        return bool(int(ok))
