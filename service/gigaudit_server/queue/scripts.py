"""The job system's atomic state transitions, as Redis Lua scripts.

Every write a worker makes to a job is fenced by the job's ``attempt`` counter: the write happens only while the job
is RUNNING under the same attempt, so a worker that lost its job (its heartbeat expired and another worker claimed
the job) can never overwrite progress, checkpoints or results. Each script names the keys it touches in ``KEYS``;
the stream entry of a job is acknowledged (and deleted) in the same script that records the job's new state.

A job that reaches a final state gets a TTL (``finished_ttl_ms``; ``dead_ttl_ms`` when it is dead-lettered, so that
it can be retried for as long as its dead letter lives). Dead letters are trimmed to ``dead_ttl_ms`` on every add.

Job hash fields used here: state, attempt, failures, worker, heartbeat (key of the owner's heartbeat), entry (stream
entry id of the current delivery), cancel_requested, shards, shards_done, stage, done, total, result, error,
checkpoint, dead_entry (id of its dead letter), updated, history, history_key.

Stage history: ``history`` is a JSON list of events ``{stage, time, worker, attempt[, error]}``, oldest first and at
most ``HISTORY_MAX`` long (the oldest are dropped). A claim appends ``claimed``; a progress report appends its stage
when the stage or the attempt changed (``history_key`` = "attempt:stage" of the last event); an attempt that ends in
an error (a retry, a failure, a worker that stopped responding) sets ``error`` (``{code, message}``) on its last event.
"""
from __future__ import annotations

HISTORY_MAX = 100

_HISTORY = """
local function add_event(job, stage, now, attempt)
  local raw = redis.call('HGET', job, 'history')
  local history = {}
  if raw and raw ~= '' then history = cjson.decode(raw) end
  history[#history + 1] = {stage = stage, time = tonumber(now), worker = redis.call('HGET', job, 'worker') or '',
                           attempt = tonumber(attempt)}
  while #history > HISTORY_MAX do table.remove(history, 1) end
  redis.call('HSET', job, 'history', cjson.encode(history), 'history_key', attempt .. ':' .. stage)
end
-- set the error (JSON {code, message}) of the last event of attempt; nothing when it has none
local function fail_event(job, attempt, error)
  local raw = redis.call('HGET', job, 'history')
  if not raw or raw == '' then return end
  local history = cjson.decode(raw)
  local last = history[#history]
  if last and tostring(last.attempt) == tostring(attempt) then
    local ok, decoded = pcall(cjson.decode, error)
    if not ok then decoded = {code = 'INTERNAL', message = error} end
    last.error = decoded
    redis.call('HSET', job, 'history', cjson.encode(history))
  end
end
""".replace("HISTORY_MAX", str(HISTORY_MAX))

_COMMON = _HISTORY + """
local function is_finished(state)
  return state == 'SUCCEEDED' or state == 'FAILED' or state == 'CANCELLED'
end
local function drop_entry(stream, group, entry)
  if entry and entry ~= '' then
    redis.call('XACK', stream, group, entry)
    redis.call('XDEL', stream, entry)
  end
end
local function expire(key, ttl_ms)
  if tonumber(ttl_ms) > 0 then redis.call('PEXPIRE', key, ttl_ms) end
end
-- end an attempt; a finished job keeps the name of the worker that finished it, and expires after ttl_ms (a shard
-- lives as long as its parent: it takes a finished parent's TTL, the caller copies it onto the shards later)
local function release(job, state, now, ttl_ms, parent)
  redis.call('HSET', job, 'state', state, 'heartbeat', '', 'entry', '', 'updated', now)
  if state == 'QUEUED' then redis.call('HSET', job, 'worker', '') end
  if is_finished(state) then
    if parent == job then
      expire(job, ttl_ms)
    elseif redis.call('PTTL', parent) > 0 then
      redis.call('PEXPIRE', job, redis.call('PTTL', parent))
    end
  end
end
-- a shard that failed for good fails its parent (the siblings are cancelled by the caller)
local function fail_parent(job, parent, error, now, parent_channel, ttl_ms)
  if parent ~= job and not is_finished(redis.call('HGET', parent, 'state')) then
    redis.call('HSET', parent, 'state', 'FAILED', 'error', error, 'updated', now)
    expire(parent, ttl_ms)
    redis.call('PUBLISH', parent_channel, 'FAILED')
    return 1
  end
  return 0
end
-- fail a job; a dead letter names the job a client knows (a shard's parent) and keeps both for dead_ttl_ms
local function fail(job, parent, dead, error, now, job_id, parent_id, dead_letter, parent_channel, finished_ttl,
                    dead_ttl)
  local ttl = finished_ttl
  if dead_letter then ttl = dead_ttl end
  local parent_failed = fail_parent(job, parent, error, now, parent_channel, ttl)
  fail_event(job, redis.call('HGET', job, 'attempt'), error)
  release(job, 'FAILED', now, ttl, parent)
  redis.call('HSET', job, 'error', error)
  if dead_letter then
    local shard = ''
    if parent ~= job then shard = redis.call('HGET', job, 'shard_index') end
    local old = redis.call('HGET', parent, 'dead_entry')
    if old and old ~= '' then redis.call('XDEL', dead, old) end
    local minid = string.format('%d', math.floor(tonumber(now) * 1000 - tonumber(dead_ttl)))
    local entry = redis.call('XADD', dead, 'MINID', '~', minid, '*', 'job', parent_id, 'shard', shard,
      'kind', redis.call('HGET', job, 'kind'), 'attempt', redis.call('HGET', job, 'attempt'),
      'failures', redis.call('HGET', job, 'failures'), 'worker', redis.call('HGET', job, 'worker') or '',
      'owner', redis.call('HGET', job, 'owner') or '', 'error', error)
    redis.call('HSET', parent, 'dead_entry', entry)
  end
  return parent_failed
end
"""

# KEYS: job, stream, dead letters, my heartbeat, previous owner's heartbeat, parent (or job), previous owner's
#       suspicion key
# ARGV: me, entry, group, now, max_attempts, previous owner ('' for a fresh delivery, else a reclaim), job channel,
#       parent channel, job id, parent id, grace_ms, finished_ttl_ms, dead_ttl_ms
# -> {status, attempt, parent_failed}; status: claimed | moved | alive | suspect | missing | finished | busy |
#    cancelled | dead
# A reclaim takes a delivery only once the owner's heartbeat has been missing for grace_ms (Redis time): after an
# outage longer than the heartbeat TTL every heartbeat has lapsed, and live workers need a moment to beat again.
CLAIM = _COMMON + """
local job, stream, dead, my_hb, prev_hb, parent, suspect = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6],
  KEYS[7]
local me, entry, group, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local max_attempts, prev_owner, channel, parent_channel, job_id = tonumber(ARGV[5]), ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local parent_id, grace_ms, finished_ttl, dead_ttl = ARGV[10], tonumber(ARGV[11]), ARGV[12], ARGV[13]
if prev_owner ~= '' then
  -- reclaim: only an entry still owned by the consumer we checked, and only while its heartbeat is gone (or it
  -- is our own: a worker between jobs runs nothing, so its pending deliveries are orphans of an earlier life)
  local pending = redis.call('XPENDING', stream, group, entry, entry, 1)
  if #pending == 0 or pending[1][2] ~= prev_owner then return {'moved', 0, 0} end
  if prev_owner ~= me then
    if redis.call('EXISTS', prev_hb) == 1 then return {'alive', 0, 0} end
    if grace_ms > 0 then
      local t = redis.call('TIME')
      local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
      local since = redis.call('GET', suspect)
      if not since then
        redis.call('SET', suspect, string.format('%d', now_ms), 'PX', math.max(60000, 10 * grace_ms))
        return {'suspect', 0, 0}
      end
      if now_ms - tonumber(since) < grace_ms then return {'suspect', 0, 0} end
    end
  end
  redis.call('XCLAIM', stream, group, me, 0, entry)
end
local state = redis.call('HGET', job, 'state')
if not state then drop_entry(stream, group, entry); return {'missing', 0, 0} end
if is_finished(state) then drop_entry(stream, group, entry); return {'finished', 0, 0} end
if state == 'RUNNING' then
  local hb = redis.call('HGET', job, 'heartbeat')
  -- a fresh delivery of a job that a worker claimed is a duplicate (e.g. a retried shard's old entry): its own
  -- delivery is in that worker's pending list, where a reclaim finds it should the worker die
  if prev_owner == '' and hb and hb ~= '' then drop_entry(stream, group, entry); return {'busy', 0, 0} end
  if hb and hb ~= '' and hb ~= my_hb and redis.call('EXISTS', hb) == 1 then
    drop_entry(stream, group, entry); return {'busy', 0, 0}  -- a duplicate delivery of a job that runs elsewhere
  end
  if (redis.call('HGET', job, 'worker') or '') ~= '' then
    redis.call('HINCRBY', job, 'failures', 1)  -- its worker died
    fail_event(job, redis.call('HGET', job, 'attempt'), cjson.encode({code = 'UNAVAILABLE',
      message = 'worker ' .. redis.call('HGET', job, 'worker') .. ' stopped responding'}))
  end
end
if redis.call('HGET', job, 'cancel_requested') == '1' then
  release(job, 'CANCELLED', now, finished_ttl, parent)
  redis.call('PUBLISH', channel, 'CANCELLED')
  drop_entry(stream, group, entry)
  return {'cancelled', 0, 0}
end
local failures = tonumber(redis.call('HGET', job, 'failures') or '0')
if failures >= max_attempts then
  local error = cjson.encode({code = 'INTERNAL',
    message = 'the worker running the job stopped responding ' .. failures .. ' times'})
  local parent_failed = fail(job, parent, dead, error, now, job_id, parent_id, true, parent_channel, finished_ttl,
                             dead_ttl)
  redis.call('PUBLISH', channel, 'FAILED')
  drop_entry(stream, group, entry)
  return {'dead', 0, parent_failed}
end
local attempt = redis.call('HINCRBY', job, 'attempt', 1)
redis.call('HSET', job, 'state', 'RUNNING', 'worker', me, 'heartbeat', my_hb, 'entry', entry, 'updated', now)
add_event(job, 'claimed', now, attempt)
redis.call('PUBLISH', channel, 'RUNNING')
if parent ~= job and redis.call('HGET', parent, 'state') == 'QUEUED' then
  redis.call('HSET', parent, 'state', 'RUNNING', 'updated', now)
  redis.call('PUBLISH', parent_channel, 'RUNNING')
end
return {'claimed', attempt, 0}
"""

# KEYS: job, parent (or job); ARGV: attempt, stage, done, total ('' = unknown), now, job channel, parent channel
# -> 1 when a cancel was requested, 0 otherwise, -1 when the attempt is stale (the write is refused)
PROGRESS = _HISTORY + """
local job, parent = KEYS[1], KEYS[2]
if redis.call('HGET', job, 'attempt') ~= ARGV[1] or redis.call('HGET', job, 'state') ~= 'RUNNING' then
  return -1
end
if redis.call('HGET', job, 'history_key') ~= ARGV[1] .. ':' .. ARGV[2] then add_event(job, ARGV[2], ARGV[5], ARGV[1]) end
redis.call('HSET', job, 'stage', ARGV[2], 'done', ARGV[3], 'total', ARGV[4], 'updated', ARGV[5])
redis.call('PUBLISH', ARGV[6], 'progress')
if parent ~= job then
  redis.call('HSET', parent, 'updated', ARGV[5])
  redis.call('PUBLISH', ARGV[7], 'progress')
end
if redis.call('HGET', job, 'cancel_requested') == '1' then return 1 end
return 0
"""

# KEYS: job; ARGV: attempt, checkpoint (JSON) -> 1 when recorded, -1 when the attempt is stale
CHECKPOINT = """
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'state') ~= 'RUNNING' then
  return -1
end
redis.call('HSET', KEYS[1], 'checkpoint', ARGV[2])
return 1
"""

# KEYS: job, stream, dead letters, parent (or job)
# ARGV: attempt, outcome, payload (result or error JSON), now, group, max_attempts, job channel, parent channel,
#       job id, parent id, finished_ttl_ms, dead_ttl_ms
# outcome: succeeded | retry (an error; queued again unless max_attempts failures) | failed (no retry) |
#          dead (no retry, dead-lettered: a hung handler) | cancelled | handback (queued again, not a failure)
# -> {status, parent_failed}; status: stale | SUCCEEDED | QUEUED | FAILED | CANCELLED
SETTLE = _COMMON + """
local job, stream, dead, parent = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local attempt, outcome, payload, now, group = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local max_attempts, channel, parent_channel, job_id, parent_id = tonumber(ARGV[6]), ARGV[7], ARGV[8], ARGV[9], ARGV[10]
local finished_ttl, dead_ttl = ARGV[11], ARGV[12]
if redis.call('HGET', job, 'attempt') ~= attempt or redis.call('HGET', job, 'state') ~= 'RUNNING' then
  return {'stale', 0}
end
drop_entry(stream, group, redis.call('HGET', job, 'entry'))
local status, parent_failed = outcome, 0
if outcome == 'succeeded' then
  status = 'SUCCEEDED'
  release(job, status, now, finished_ttl, parent)
  redis.call('HSET', job, 'result', payload, 'error', '', 'checkpoint', '')
  if parent ~= job then
    local shards_done = redis.call('HINCRBY', parent, 'shards_done', 1)
    if shards_done == tonumber(redis.call('HGET', parent, 'shards'))
        and not is_finished(redis.call('HGET', parent, 'state')) then
      -- the last shard: queue the reduction exactly once
      redis.call('HSET', parent, 'stage', 'reduce', 'updated', now)
      redis.call('XADD', stream, '*', 'job', parent_id)
      redis.call('PUBLISH', parent_channel, 'reduce')
    end
  end
elseif outcome == 'retry' then
  if redis.call('HINCRBY', job, 'failures', 1) < max_attempts then
    status = 'QUEUED'
    fail_event(job, attempt, payload)
    release(job, status, now, finished_ttl, parent)
    redis.call('HSET', job, 'error', payload)
    redis.call('XADD', stream, '*', 'job', job_id)
  else
    status = 'FAILED'
    parent_failed = fail(job, parent, dead, payload, now, job_id, parent_id, true, parent_channel, finished_ttl,
                         dead_ttl)
  end
elseif outcome == 'failed' or outcome == 'dead' then
  status = 'FAILED'
  parent_failed = fail(job, parent, dead, payload, now, job_id, parent_id, outcome == 'dead', parent_channel,
                       finished_ttl, dead_ttl)
elseif outcome == 'cancelled' then
  status = 'CANCELLED'
  release(job, status, now, finished_ttl, parent)
elseif outcome == 'handback' then
  status = 'QUEUED'
  release(job, status, now, finished_ttl, parent)
  redis.call('XADD', stream, '*', 'job', job_id)
else
  return redis.error_reply('unknown outcome ' .. outcome)
end
redis.call('PUBLISH', channel, status)
return {status, parent_failed}
"""

# KEYS: job; ARGV: now, job channel, finished_ttl_ms (0 for a shard: it expires with its parent) -> the job's state
# after the request ('' when the job does not exist). A job nobody runs (queued, or a parent whose shards run) is
# cancelled at once; a running one at its next batch.
CANCEL = _COMMON + """
local job = KEYS[1]
local state = redis.call('HGET', job, 'state')
if not state then return '' end
if is_finished(state) then return state end
redis.call('HSET', job, 'cancel_requested', '1', 'updated', ARGV[1])
if state == 'QUEUED' or (redis.call('HGET', job, 'worker') or '') == '' then
  state = 'CANCELLED'
  redis.call('HSET', job, 'state', state)
  expire(job, ARGV[3])
end
redis.call('PUBLISH', ARGV[2], 'cancel')
return state
"""

# KEYS: job, stream, dead letters, job index, its shards...; ARGV: now, job channel, job id, shard ids...
# -> retried | missing | expired (a shard is gone) | the state of a job that is not dead-lettered
# Queues a dead-lettered job again with a fresh failure budget (the attempt counter keeps counting: it is the
# fence); a parent runs its unfinished shards again, or straight its reduction when every shard had succeeded.
RETRY = """
local job, stream, dead, index = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now, channel, job_id = ARGV[1], ARGV[2], ARGV[3]
local state = redis.call('HGET', job, 'state')
if not state then return 'missing' end
local entry = redis.call('HGET', job, 'dead_entry') or ''
if state ~= 'FAILED' or entry == '' then return state end
for i = 5, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then return 'expired' end
end
local function reset(key)
  redis.call('HSET', key, 'state', 'QUEUED', 'failures', '0', 'error', '', 'cancel_requested', '0', 'worker', '',
             'heartbeat', '', 'entry', '', 'dead_entry', '', 'updated', now)
  redis.call('PERSIST', key)
end
redis.call('XDEL', dead, entry)
reset(job)
redis.call('ZADD', index, 'NX', redis.call('HGET', job, 'created'), job_id)
local n, done = #KEYS - 4, 0
for i = 1, n do
  local shard = KEYS[4 + i]
  if redis.call('HGET', shard, 'state') == 'SUCCEEDED' then
    done = done + 1
    redis.call('PERSIST', shard)
  else
    reset(shard)
    redis.call('XADD', stream, '*', 'job', ARGV[3 + i])
  end
end
if n == 0 then
  redis.call('XADD', stream, '*', 'job', job_id)
else
  local stage = ''
  if done == n then stage = 'reduce'; redis.call('XADD', stream, '*', 'job', job_id) end
  redis.call('HSET', job, 'shards_done', done, 'stage', stage)
end
redis.call('PUBLISH', channel, 'QUEUED')
return 'retried'
"""
