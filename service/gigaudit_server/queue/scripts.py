"""The job system's atomic state transitions, as Redis Lua scripts.

Every write a worker makes to a job is fenced by the job's ``attempt`` counter: the write happens only while the job
is RUNNING under the same attempt, so a worker that lost its job (its heartbeat expired and another worker claimed
the job) can never overwrite progress or results. Each script names the keys it touches in ``KEYS``; the stream
entry of a job is acknowledged (and deleted) in the same script that records the job's new state.

Job hash fields used here: state, attempt, failures, worker, heartbeat (key of the owner's heartbeat), entry (stream
entry id of the current delivery), cancel_requested, shards, shards_done, stage, done, total, result, error, updated.
"""
from __future__ import annotations

_COMMON = """
local function is_finished(state)
  return state == 'SUCCEEDED' or state == 'FAILED' or state == 'CANCELLED'
end
local function drop_entry(stream, group, entry)
  if entry and entry ~= '' then
    redis.call('XACK', stream, group, entry)
    redis.call('XDEL', stream, entry)
  end
end
-- end an attempt; a finished job keeps the name of the worker that finished it
local function release(job, state, now)
  redis.call('HSET', job, 'state', state, 'heartbeat', '', 'entry', '', 'updated', now)
  if state == 'QUEUED' then redis.call('HSET', job, 'worker', '') end
end
-- a shard that failed for good fails its parent (the siblings are cancelled by the caller)
local function fail_parent(job, parent, error, now, parent_channel)
  if parent ~= job and not is_finished(redis.call('HGET', parent, 'state')) then
    redis.call('HSET', parent, 'state', 'FAILED', 'error', error, 'updated', now)
    redis.call('PUBLISH', parent_channel, 'FAILED')
    return 1
  end
  return 0
end
local function fail(job, parent, dead, error, now, job_id, dead_letter, parent_channel)
  release(job, 'FAILED', now)
  redis.call('HSET', job, 'error', error)
  if dead_letter then
    redis.call('XADD', dead, '*', 'job', job_id, 'kind', redis.call('HGET', job, 'kind'),
               'attempt', redis.call('HGET', job, 'attempt'), 'error', error)
  end
  return fail_parent(job, parent, error, now, parent_channel)
end
"""

# KEYS: job, stream, dead letters, my heartbeat, previous owner's heartbeat, parent (or job)
# ARGV: me, entry, group, now, max_attempts, previous owner ('' for a fresh delivery, else a reclaim), job channel,
#       parent channel, job id
# -> {status, attempt, parent_failed}; status: claimed | moved | alive | missing | finished | busy | cancelled | dead
CLAIM = _COMMON + """
local job, stream, dead, my_hb, prev_hb, parent = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local me, entry, group, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local max_attempts, prev_owner, channel, parent_channel, job_id = tonumber(ARGV[5]), ARGV[6], ARGV[7], ARGV[8], ARGV[9]
if prev_owner ~= '' then
  -- reclaim: only an entry still owned by the consumer we checked, and only while its heartbeat is gone (or it
  -- is our own: a worker between jobs runs nothing, so its pending deliveries are orphans of an earlier life)
  local pending = redis.call('XPENDING', stream, group, entry, entry, 1)
  if #pending == 0 or pending[1][2] ~= prev_owner then return {'moved', 0, 0} end
  if prev_owner ~= me and redis.call('EXISTS', prev_hb) == 1 then return {'alive', 0, 0} end
  redis.call('XCLAIM', stream, group, me, 0, entry)
end
local state = redis.call('HGET', job, 'state')
if not state then drop_entry(stream, group, entry); return {'missing', 0, 0} end
if is_finished(state) then drop_entry(stream, group, entry); return {'finished', 0, 0} end
if state == 'RUNNING' then
  local hb = redis.call('HGET', job, 'heartbeat')
  if hb and hb ~= '' and hb ~= my_hb and redis.call('EXISTS', hb) == 1 then
    drop_entry(stream, group, entry); return {'busy', 0, 0}  -- a duplicate delivery of a job that runs elsewhere
  end
  if (redis.call('HGET', job, 'worker') or '') ~= '' then
    redis.call('HINCRBY', job, 'failures', 1)  -- its worker died
  end
end
if redis.call('HGET', job, 'cancel_requested') == '1' then
  release(job, 'CANCELLED', now)
  redis.call('PUBLISH', channel, 'CANCELLED')
  drop_entry(stream, group, entry)
  return {'cancelled', 0, 0}
end
local failures = tonumber(redis.call('HGET', job, 'failures') or '0')
if failures >= max_attempts then
  local error = cjson.encode({code = 'INTERNAL',
    message = 'the worker running the job stopped responding ' .. failures .. ' times'})
  local parent_failed = fail(job, parent, dead, error, now, job_id, true, parent_channel)
  redis.call('PUBLISH', channel, 'FAILED')
  drop_entry(stream, group, entry)
  return {'dead', 0, parent_failed}
end
local attempt = redis.call('HINCRBY', job, 'attempt', 1)
redis.call('HSET', job, 'state', 'RUNNING', 'worker', me, 'heartbeat', my_hb, 'entry', entry, 'updated', now)
redis.call('PUBLISH', channel, 'RUNNING')
if parent ~= job and redis.call('HGET', parent, 'state') == 'QUEUED' then
  redis.call('HSET', parent, 'state', 'RUNNING', 'updated', now)
  redis.call('PUBLISH', parent_channel, 'RUNNING')
end
return {'claimed', attempt, 0}
"""

# KEYS: job, parent (or job); ARGV: attempt, stage, done, total ('' = unknown), now, job channel, parent channel
# -> 1 when a cancel was requested, 0 otherwise, -1 when the attempt is stale (the write is refused)
PROGRESS = """
local job, parent = KEYS[1], KEYS[2]
if redis.call('HGET', job, 'attempt') ~= ARGV[1] or redis.call('HGET', job, 'state') ~= 'RUNNING' then
  return -1
end
redis.call('HSET', job, 'stage', ARGV[2], 'done', ARGV[3], 'total', ARGV[4], 'updated', ARGV[5])
redis.call('PUBLISH', ARGV[6], 'progress')
if parent ~= job then
  redis.call('HSET', parent, 'updated', ARGV[5])
  redis.call('PUBLISH', ARGV[7], 'progress')
end
if redis.call('HGET', job, 'cancel_requested') == '1' then return 1 end
return 0
"""

# KEYS: job, stream, dead letters, parent (or job)
# ARGV: attempt, outcome, payload (result or error JSON), now, group, max_attempts, job channel, parent channel,
#       job id, parent id
# outcome: succeeded | retry (an error; queued again unless max_attempts failures) | failed (no retry) |
#          cancelled | handback (queued again, not counted as a failure)
# -> {status, parent_failed}; status: stale | SUCCEEDED | QUEUED | FAILED | CANCELLED
SETTLE = _COMMON + """
local job, stream, dead, parent = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local attempt, outcome, payload, now, group = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local max_attempts, channel, parent_channel, job_id, parent_id = tonumber(ARGV[6]), ARGV[7], ARGV[8], ARGV[9], ARGV[10]
if redis.call('HGET', job, 'attempt') ~= attempt or redis.call('HGET', job, 'state') ~= 'RUNNING' then
  return {'stale', 0}
end
drop_entry(stream, group, redis.call('HGET', job, 'entry'))
local status, parent_failed = outcome, 0
if outcome == 'succeeded' then
  status = 'SUCCEEDED'
  release(job, status, now)
  redis.call('HSET', job, 'result', payload, 'error', '')
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
    release(job, status, now)
    redis.call('HSET', job, 'error', payload)
    redis.call('XADD', stream, '*', 'job', job_id)
  else
    status = 'FAILED'
    parent_failed = fail(job, parent, dead, payload, now, job_id, true, parent_channel)
  end
elseif outcome == 'failed' then
  status = 'FAILED'
  parent_failed = fail(job, parent, dead, payload, now, job_id, false, parent_channel)
elseif outcome == 'cancelled' then
  status = 'CANCELLED'
  release(job, status, now)
elseif outcome == 'handback' then
  status = 'QUEUED'
  release(job, status, now)
  redis.call('XADD', stream, '*', 'job', job_id)
else
  return redis.error_reply('unknown outcome ' .. outcome)
end
redis.call('PUBLISH', channel, status)
return {status, parent_failed}
"""

# KEYS: job; ARGV: now, job channel -> the job's state after the request ('' when the job does not exist).
# A job nobody runs (queued, or a parent whose shards run) is cancelled at once; a running one at its next batch.
CANCEL = """
local job = KEYS[1]
local state = redis.call('HGET', job, 'state')
if not state then return '' end
if state == 'SUCCEEDED' or state == 'FAILED' or state == 'CANCELLED' then return state end
redis.call('HSET', job, 'cancel_requested', '1', 'updated', ARGV[1])
if state == 'QUEUED' or (redis.call('HGET', job, 'worker') or '') == '' then
  state = 'CANCELLED'
  redis.call('HSET', job, 'state', state)
end
redis.call('PUBLISH', ARGV[2], 'cancel')
return state
"""
