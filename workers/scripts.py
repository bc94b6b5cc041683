"""Server-side Lua scripts: each makes one state change of a task atomic in one round trip.

redis-py's Script objects run them with EVALSHA and load them again when a restarted server
has forgotten them (NOSCRIPT), also inside pipelines.
"""

_FINAL = "local final = {done=true, failed=true, cancelled=true, dead=true}\n"

# Every script that makes a record final also PUBLISHes its new status on a channel named as
# the record's key: a producer waiting for the task (Client.wait) subscribes to it and learns
# at once, instead of polling. Nobody subscribed costs the server next to nothing.

# Runs one task's step of a batch script: a key of the wrong type fails that task's reply
# ({'error', text}), not the whole batch. A record of the wrong type fails at the step's first
# command, a read, so that step writes nothing.
_GUARDED = """
local function guarded(fn, ...)
  local ok, res = pcall(fn, ...)
  if ok then return res end
  if type(res) == 'table' then res = res['err'] or 'script error' end
  return {'error', tostring(res)}
end
"""

# The start of RETRY (KEYS record, cancel flag, stream; ARGV group, entry id): a record that is
# gone or already final is left as it is, the message acknowledged.
_SETTLED = _FINAL + """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('XACK', KEYS[3], ARGV[1], ARGV[2])
  return {'missing'}
end
local status = redis.call('HGET', KEYS[1], 'status')
if final[status] then
  redis.call('XACK', KEYS[3], ARGV[1], ARGV[2])
  return {'final', status}
end
"""

# The begin step of one task, shared by BEGIN_MANY and READ_BEGIN. ARGV[1..5]: group, consumer,
# now, log line prefix, max log chars. The task is marked running unless it is final,
# cancelled or gone: {'run', runs} | {'missing'} | {'final', status} | {'cancelled'}.
_BEGIN = _FINAL + _GUARDED + """
local group, consumer, now = ARGV[1], ARGV[2], ARGV[3]
local function begin(rec, flag, stream, entry)
  local status = redis.call('HGET', rec, 'status')
  if not status and redis.call('EXISTS', rec) == 0 then return {'missing'} end
  if final[status] then
    redis.call('XACK', stream, group, entry)
    return {'final', status}
  end
  if redis.call('DEL', flag) == 1 then
    local msg = redis.call('HGET', rec, 'progress_msg') or ''
    redis.call('HSET', rec, 'status', 'cancelled', 'progress', '-1', 'finished_at', now,
               'progress_msg', string.sub(msg .. ARGV[4] .. ' Task cancelled before start.\\n',
                                          -tonumber(ARGV[5])))
    redis.call('XACK', stream, group, entry)
    redis.call('PUBLISH', rec, 'cancelled')
    return {'cancelled'}
  end
  local n = redis.call('HINCRBY', rec, 'retry_count', 1)
  redis.call('HSET', rec, 'status', 'running', 'begin_at', now, 'consumer', consumer)
  return {'run', n}
end
"""

# Begins a batch of tasks in one call. KEYS: record, cancel flag and stream of each task.
# ARGV: as _BEGIN, then the entry id of each task. One reply per task.
BEGIN_MANY = _BEGIN + """
local out = {}
for i = 6, #ARGV do
  local k = (i - 6) * 3
  out[#out + 1] = guarded(begin, KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], ARGV[i])
end
return out
"""

# The vetting of READ_BEGIN and BEGIN_DELIVERED (ARGV[11] the byte limit, ARGV[12..] the task
# types): the task id of a message the begin step may take as it is, else nil.
_VET = """
local max_bytes = tonumber(ARGV[11])
local types = {}
for i = 12, #ARGV do types[ARGV[i]] = true end
local function vetted(flat)
  local raw = nil
  for i = 1, #flat, 2 do if flat[i] == 'message' then raw = flat[i + 1] end end
  if not raw or #raw > max_bytes then return nil end
  local ok, task = pcall(cjson.decode, raw)
  if not ok or type(task) ~= 'table' then return nil end
  local id, kind = task['id'], task['task_type']
  if type(id) ~= 'string' or #id > 128 or not string.match(id, '^[%w_.:%-]+$') then return nil end
  if type(kind) ~= 'string' or not types[kind] then return nil end
  return id
end
"""

# Reads up to ARGV[6] new messages across the streams in KEYS, highest priority first (so a
# worker never takes more than it has free slots), and begins each one it can vet, in the
# same call. ARGV: as _BEGIN, then count, the record key's text before and after the id, the
# cancel flag's likewise, queue.max_message_bytes and the registered task types. A message it
# cannot vet (no JSON object, a bad id, an unknown type, too large) gets {'check'}: the worker
# parses it and says why in the dead-letter stream. The record and cancel keys are built here,
# not passed in KEYS: fine on a single Redis, the only kind taskexec supports. A broken stream
# (wrong type, no group) is reported and skipped instead of failing the read of the others.
# When nothing was read, the last entry id of each sound stream is returned for the wake-up.
READ_BEGIN = _BEGIN + """
local left = tonumber(ARGV[6])
""" + _VET + """
local out, last = {}, {}
for _, key in ipairs(KEYS) do
  if left > 0 then
    local ok, res = pcall(redis.call, 'XREADGROUP', 'GROUP', group, consumer,
                          'COUNT', left, 'STREAMS', key, '>')
    if not ok then
      out[#out + 1] = {key, 'error', res['err'] or tostring(res)}
    elseif res then
      local entries = {}
      for _, e in ipairs(res[1][2]) do
        local id = vetted(e[2])
        local reply = {'check'}
        if id then
          reply = guarded(begin, ARGV[7] .. id .. ARGV[8], ARGV[9] .. id .. ARGV[10], key, e[1])
        end
        entries[#entries + 1] = {e[1], e[2], reply}
      end
      left = left - #entries
      out[#out + 1] = {key, 'entries', entries}
    end
  end
end
if left == tonumber(ARGV[6]) then
  for _, key in ipairs(KEYS) do
    local ok, res = pcall(redis.call, 'XREVRANGE', key, '+', '-', 'COUNT', 1)
    if ok then
      if res[1] then last[#last + 1] = {key, res[1][1]} else last[#last + 1] = {key, '0-0'} end
    end
  end
end
return {out, last}
"""

# Sent right behind a blocking XREADGROUP on the same connection, so Redis runs it as soon as
# that read is served: it begins what the read delivered, and a task woken from an idle wait
# costs one round trip, not two. It cannot see that read's reply, so it looks in this
# consumer's pending entries (up to ARGV[6] per stream in KEYS) for the ones delivered once
# and not begun: the read's. Entries begun by a task thread's own read (READ_BEGIN) meanwhile
# are running and left alone; an entry taken over was delivered more than once. ARGV and reply
# as READ_BEGIN, without the last ids; begin_at is Redis's clock, since the worker's `now`
# was taken before the wait.
BEGIN_DELIVERED = _BEGIN + _VET + """
local t = redis.call('TIME')
now = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
local function fresh(rec, flag, stream, entry)
  if redis.call('HGET', rec, 'status') == 'running' then return nil end
  return begin(rec, flag, stream, entry)
end
local out = {}
for _, key in ipairs(KEYS) do
  local ok, rows = pcall(redis.call, 'XPENDING', key, group, '-', '+', ARGV[6], consumer)
  if not ok then
    out[#out + 1] = {key, 'error', rows['err'] or tostring(rows)}
  else
    local entries = {}
    for _, row in ipairs(rows) do
      local e = nil
      if tonumber(row[4]) == 1 then e = redis.call('XRANGE', key, row[1], row[1])[1] end
      if e then
        local id = vetted(e[2])
        local reply = {'check'}
        if id then
          reply = guarded(fresh, ARGV[7] .. id .. ARGV[8], ARGV[9] .. id .. ARGV[10], key, e[1])
        end
        if reply then entries[#entries + 1] = {e[1], e[2], reply} end
      end
    end
    out[#out + 1] = {key, 'entries', entries}
  end
end
return {out, {}}
"""

# Ends a batch of runs in one call. KEYS: record, cancel flag and stream of each run. ARGV:
# group, now, max log chars, result ttl, then five per run: entry id, status, result, error,
# log line. Each final status is written and its message acknowledged together; a record
# already final or gone is left as it is (a wiped record is never recreated), and a task
# cancelled while it ran ends cancelled whatever its handler returned. One reply per run:
# {status} | {'missing'} | {'final', status}.
FINISH_MANY = _FINAL + _GUARDED + """
local group, now, keep, ttl = ARGV[1], ARGV[2], -tonumber(ARGV[3]), tonumber(ARGV[4])
local function finish(rec, flag, stream, entry, new, result, err, line)
  local cur = redis.call('HMGET', rec, 'status', 'begin_at', 'progress_msg')
  if not cur[1] and redis.call('EXISTS', rec) == 0 then
    redis.call('XACK', stream, group, entry)
    return {'missing'}
  end
  if final[cur[1]] then
    redis.call('XACK', stream, group, entry)
    return {'final', cur[1]}
  end
  if redis.call('DEL', flag) == 1 and new == 'done' then
    new = 'cancelled'
    result = ''
    line = string.gsub(line, ' Task done.*', ' Task cancelled.')
  end
  local progress = '1'
  if new ~= 'done' then progress = '-1' end
  local begin = tonumber(cur[2] or '')
  local duration = ''
  if begin then duration = string.format('%.3f', tonumber(now) - begin) end
  redis.call('HSET', rec, 'status', new, 'progress', progress, 'result', result, 'error', err,
             'finished_at', now, 'process_duration', duration,
             'progress_msg', string.sub((cur[3] or '') .. line .. '\\n', keep))
  redis.call('XACK', stream, group, entry)
  if ttl > 0 then redis.call('EXPIRE', rec, ttl) end
  redis.call('PUBLISH', rec, new)
  return {new}
end
local out = {}
for i = 5, #ARGV, 5 do
  local k = (i - 5) / 5 * 3
  out[#out + 1] = guarded(finish, KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], ARGV[i], ARGV[i + 1],
                          ARGV[i + 2], ARGV[i + 3], ARGV[i + 4])
end
return out
"""

# KEYS: record, cancel flag. ARGV: progress, log line (may be empty), max log chars.
# Progress never moves backwards; the reply tells the handler to stop when it should.
PROGRESS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 'missing' end
if redis.call('EXISTS', KEYS[2]) == 1 then return 'cancelled' end
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'running' then return status end
local value = tonumber(ARGV[1])
if value then
  local cur = tonumber(redis.call('HGET', KEYS[1], 'progress') or '0') or 0
  if value > cur then redis.call('HSET', KEYS[1], 'progress', ARGV[1]) end
end
if ARGV[2] ~= '' then
  local msg = redis.call('HGET', KEYS[1], 'progress_msg') or ''
  redis.call('HSET', KEYS[1], 'progress_msg',
             string.sub(msg .. ARGV[2] .. '\\n', -tonumber(ARGV[3])))
end
return 'ok'
"""

# KEYS: record, cancel flag, stream. ARGV: rerun (0/1), message JSON, then field/value pairs.
# The record and the message are written together or not at all; an id whose earlier run is
# not final is refused, and a stale cancel flag never cancels a re-run.
SUBMIT = _FINAL + """
if redis.call('EXISTS', KEYS[1]) == 1 then
  local status = redis.call('HGET', KEYS[1], 'status')
  if not final[status] or ARGV[1] ~= '1' then return {'exists', status or ''} end
  redis.call('DEL', KEYS[1])
end
redis.call('DEL', KEYS[2])
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
local entry = redis.call('XADD', KEYS[3], '*', 'message', ARGV[2])
redis.call('HSET', KEYS[1], 'entry_id', entry, unpack(fields))
return {'ok', entry}
"""

# KEYS: record, cancel flag. ARGV: cancel ttl, now, log line, max log chars.
CANCEL = _FINAL + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
local status = redis.call('HGET', KEYS[1], 'status')
if final[status] then return {'final', status} end
if status == 'queued' then
  local msg = redis.call('HGET', KEYS[1], 'progress_msg') or ''
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'progress', '-1', 'finished_at', ARGV[2],
             'progress_msg', string.sub(msg .. ARGV[3] .. '\\n', -tonumber(ARGV[4])))
  redis.call('PUBLISH', KEYS[1], 'cancelled')
  return {'cancelled'}
end
redis.call('SET', KEYS[2], 'x', 'EX', ARGV[1])
return {'requested'}
"""

# KEYS: stream, dead stream, record (or the stream again when the id is unknown).
# ARGV: group, entry id, has record (0/1), reason, log line, max log chars, now, then the dead
# entry's field/value pairs.
DEAD_LETTER = _FINAL + """
redis.call('XADD', KEYS[2], 'MAXLEN', '~', '100000', '*', unpack(ARGV, 8))
if ARGV[3] == '1' and redis.call('EXISTS', KEYS[3]) == 1 then
  -- A record of the wrong type is left as it is: the message is dead-lettered all the same.
  local ok, status = pcall(redis.call, 'HGET', KEYS[3], 'status')
  if ok and not final[status] then
    local msg = redis.call('HGET', KEYS[3], 'progress_msg') or ''
    redis.call('HSET', KEYS[3], 'status', 'dead', 'progress', '-1', 'error', ARGV[4],
               'finished_at', ARGV[7],
               'progress_msg', string.sub(msg .. ARGV[5] .. '\\n', -tonumber(ARGV[6])))
    redis.call('PUBLISH', KEYS[3], 'dead')
  end
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# KEYS: heartbeat zset, registry. ARGV: heartbeat JSON, retention seconds, consumer.
# Scored with the server's clock, so hosts with skewed clocks judge liveness alike.
HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])))
local ok, err = pcall(redis.call, 'SADD', KEYS[2], ARGV[3])
if not ok then return {tostring(now), err['err'] or tostring(err)} end
return {tostring(now), ''}
"""

# KEYS: stream. ARGV: group, from consumer, to consumer, min idle ms, entry ids...
# Moves only entries that `from` still owns and that were idle long enough, so two claimers
# racing for one dead consumer never both get an entry, and an entry already taken over is
# never taken back. Entries whose message was deleted from the stream are acknowledged.
CLAIM = """
local ids, counts = {}, {}
for i = 5, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[4], ARGV[i], ARGV[i], 1,
                       ARGV[2])
  if p[1] then
    ids[#ids + 1] = ARGV[i]
    counts[ARGV[i]] = p[1][4]
  end
end
if #ids == 0 then return {{}, {}} end
local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], ARGV[4], unpack(ids))
local out, got, lost = {}, {}, {}
for i, e in ipairs(claimed) do
  if e and e[2] then
    got[e[1]] = true
    out[#out + 1] = {e[1], e[2], counts[e[1]] + 1}
  end
end
for i, id in ipairs(ids) do
  if not got[id] then
    redis.call('XACK', KEYS[1], ARGV[1], id)
    lost[#lost + 1] = id
  end
end
return {out, lost}
"""

# KEYS: stream. ARGV: group, consumer, entry ids... Resets the idle time of the entries this
# consumer still owns (JUSTID: the delivery count stays); returns the ids another consumer
# holds now (taken over), not those this consumer acknowledged meanwhile.
RENEW = """
local owned, gone = {}, {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if p[1] then
    owned[#owned + 1] = ARGV[i]
  elseif redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)[1] then
    gone[#gone + 1] = ARGV[i]  -- another consumer's now; one no longer pending was just acked
  end
end
if #owned > 0 then
  -- unpack() spreads only as the last argument, so JUSTID goes into the table first.
  owned[#owned + 1] = 'JUSTID'
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, unpack(owned))
end
return gone
"""

# KEYS: record, cancel flag, stream, delayed set. ARGV: group, entry id, delay s, message,
# log line, max log chars, error, max attempts. A handler asked to run again later: the
# message waits in the delayed set (scored with server time) and the record is queued again.
RETRY = _SETTLED + """
local msg = redis.call('HGET', KEYS[1], 'progress_msg') or ''
local runs = tonumber(redis.call('HGET', KEYS[1], 'retry_count') or '0') or 0
if redis.call('EXISTS', KEYS[2]) == 1 or runs >= tonumber(ARGV[8]) then
  local new, why = 'cancelled', ' Task cancelled.'
  if redis.call('EXISTS', KEYS[2]) == 0 then
    new, why = 'failed', ' Task failed: retries exhausted (queue.max_attempts ' .. ARGV[8] .. ').'
  end
  local t = redis.call('TIME')
  redis.call('HSET', KEYS[1], 'status', new, 'progress', '-1', 'error', ARGV[7],
             'finished_at', t[1] .. '.' .. string.format('%06d', tonumber(t[2])),
             'progress_msg', string.sub(msg .. string.sub(ARGV[5], 1, 8) .. why .. '\\n',
                                        -tonumber(ARGV[6])))
  redis.call('DEL', KEYS[2])
  redis.call('XACK', KEYS[3], ARGV[1], ARGV[2])
  redis.call('PUBLISH', KEYS[1], new)
  return {new}
end
local t = redis.call('TIME')
local due = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[3])
redis.call('ZADD', KEYS[4], due, cjson.encode({stream = KEYS[3], message = ARGV[4]}))
redis.call('HSET', KEYS[1], 'status', 'queued', 'error', ARGV[7],
           'progress_msg', string.sub(msg .. ARGV[5] .. '\\n', -tonumber(ARGV[6])))
redis.call('XACK', KEYS[3], ARGV[1], ARGV[2])
return {'retry'}
"""

# KEYS: delayed set. ARGV: most to move. Moves due messages back onto their streams.
PROMOTE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for i, item in ipairs(due) do
  local ok, m = pcall(cjson.decode, item)
  if ok and type(m) == 'table' and m['stream'] and m['message'] then
    pcall(redis.call, 'XADD', m['stream'], '*', 'message', m['message'])
  end
  redis.call('ZREM', KEYS[1], item)
end
return #due
"""

# KEYS: lock. ARGV: token, ttl ms. Renews the lock only for the holder of this token.
LOCK_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS: lock. ARGV: token, keep ms. Ends a pass: the lock stays as a rate limit for `keep` ms
# (0: deleted), but only while it is still this holder's.
LOCK_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return redis.call('DEL', KEYS[1])
"""

# KEYS: stream. ARGV: group. Trims acknowledged entries: everything older than both the
# oldest pending entry and the first entry not yet delivered to the group.
TRIM = """
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function less(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as < bs)
end
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
if not ok then return -1 end
local last = nil
for i, g in ipairs(groups) do
  local name, delivered
  for j = 1, #g, 2 do
    if g[j] == 'name' then name = g[j + 1] end
    if g[j] == 'last-delivered-id' then delivered = g[j + 1] end
  end
  if name == ARGV[1] then last = delivered end
end
if not last then return 0 end
local ms, seq = parse(last)
local minid = ms .. '-' .. (seq + 1)
local pend = redis.call('XPENDING', KEYS[1], ARGV[1])
if pend[1] > 0 and less(pend[2], minid) then minid = pend[2] end
return redis.call('XTRIM', KEYS[1], 'MINID', minid)
"""

# KEYS: stream, record. ARGV: group, consumer, entry id, message. Gives back a message this
# consumer read but never began (it came as the worker was told to stop): queued again as a new
# entry at the end of the stream, the old one acknowledged and deleted, so no second copy stays.
GIVE_BACK = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])
if not p[1] then return 0 end
local entry = redis.call('XADD', KEYS[1], '*', 'message', ARGV[4])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
if redis.call('HGET', KEYS[2], 'status') == 'queued' then
  redis.call('HSET', KEYS[2], 'entry_id', entry)
end
return 1
"""
