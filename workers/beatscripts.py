"""Lua scripts of the heartbeat: a worker's own beat, and its supervisor's beat on its behalf.

Both score with the server's clock (hosts with skewed clocks judge liveness alike) and bound the
history twice, by age (`heartbeat.retention_s`) and by count (retention / interval + 1), so a
burst of beats can never grow a zset past its budget.
"""

from __future__ import annotations


def max_entries(retention_s: float, interval_s: float) -> int:
    """The most heartbeats one consumer's zset may hold."""
    return int(retention_s / interval_s + 1e-9) + 1


# Appends one heartbeat, trims by age and by count, registers in the registry (every beat, so a
# live executor removed by a peer comes back). A registry or heartbeat key of the wrong type is
# reported with its actual type instead of failing the script.
# KEYS: heartbeat zset, registry. ARGV: heartbeat JSON, retention s, consumer, most entries.
# Returns {server time, problem key or '', its type or ''}.
_TRIM = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(tonumber(ARGV[4]) + 1))
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])))
"""

_REGISTER = """
local registered, failure = pcall(redis.call, 'SADD', KEYS[2], ARGV[3])
if not registered then
  local kind = redis.call('TYPE', KEYS[2])['ok']
  if kind == 'set' or kind == 'none' then return redis.error_reply(_why(failure)) end
  return {tostring(now), KEYS[2], kind}
end
"""

# A write that failed on a key of the right type failed for another reason (READONLY on a demoted
# primary, OOM): the script fails with that error, so the caller sees an outage, not a bad key.
_WHY = """
local function _why(failure)
  local text = tostring(failure)
  if type(failure) == 'table' and failure['err'] then text = failure['err'] end
  -- Redis 6 wraps the error of a pcall: '=[C]: -1: -READONLY You can't ...'.
  return string.match(text, '%-(%u%u+ .*)$') or text
end
"""

BEAT = _WHY + """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local added, failure = pcall(redis.call, 'ZADD', KEYS[1], now, ARGV[1])
if not added then
  local kind = redis.call('TYPE', KEYS[1])['ok']
  if kind == 'zset' or kind == 'none' then return redis.error_reply(_why(failure)) end
  return {tostring(now), KEYS[1], kind}
end
""" + _TRIM + _REGISTER + """
return {tostring(now), '', ''}
"""

# The supervisor's beat for a worker process that lives but whose own beats stopped (a task
# holding the GIL stops every thread of its process). Only when the last beat is older than
# ARGV[1] s, and never for a consumer without history (one that left cleanly, or not yet
# booted): the copy of its last heartbeat gets a new `now` and `written_by`. Its leases are
# renewed too: every entry that consumer still owns gets its idle time reset (JUSTID: the
# delivery count stays), checked and done in one step, so an entry already taken over by another
# consumer is never taken back.
# KEYS: heartbeat zset, registry, the consumer's streams... ARGV: stale s, retention s,
# consumer, most entries, group, writer, now text.
# Returns {'gone'|'fresh'|'beat', renewed entries, problem key or '', its type or '', score of
# the last heartbeat (the one written now for 'beat')}.
PROXY_BEAT = """
local ok, last = pcall(redis.call, 'ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if not ok or not last[1] then return {'gone', 0, '', '', ''} end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if now - tonumber(last[2]) < tonumber(ARGV[1]) then return {'fresh', 0, '', '', last[2]} end
local decoded, hb = pcall(cjson.decode, last[1])
if not decoded or type(hb) ~= 'table' then hb = {name = ARGV[3]} end
hb['now'] = ARGV[7]
hb['written_by'] = ARGV[6]
redis.call('ZADD', KEYS[1], now, cjson.encode(hb))
""" + _TRIM + """
local renewed = 0
for i = 3, #KEYS do
  local found, pending = pcall(redis.call, 'XPENDING', KEYS[i], ARGV[5], '-', '+', 1000, ARGV[3])
  if found and #pending > 0 then
    local ids = {}
    for j, entry in ipairs(pending) do ids[#ids + 1] = entry[1] end
    renewed = renewed + #ids
    ids[#ids + 1] = 'JUSTID'  -- last: unpack() expands fully only as the final argument
    redis.call('XCLAIM', KEYS[i], ARGV[5], ARGV[3], 0, unpack(ids))
  end
end
local registered = pcall(redis.call, 'SADD', KEYS[2], ARGV[3])
if not registered then
  return {'beat', renewed, KEYS[2], redis.call('TYPE', KEYS[2])['ok'], tostring(now)}
end
return {'beat', renewed, '', '', tostring(now)}
"""
