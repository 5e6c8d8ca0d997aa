"""Per-client limits, as a gRPC server interceptor: unfinished operations per client → RESOURCE_EXHAUSTED.

A client is the authenticated principal (:mod:`gigaudit_server.api.auth`) or, without authentication, the peer's
address. Before a call that starts an operation, a Lua script counts the client's unfinished jobs in Redis and
reserves a slot atomically, so several API replicas share one count; the slot then holds the operation's job id,
and is freed when the job finishes. A retried request (a known request id) starts nothing new and is let through. (Upload sizes and images per dataset are checked by the servicers.)
"""
from __future__ import annotations

import time
import uuid

import grpc
import redis

from gigaudit_server import keys
from gigaudit_server.api import auth, errors, interceptors

STARTS_OPERATION = frozenset({
    "/gigaudit.v1.AuditService/ExtractConcepts", "/gigaudit.v1.AuditService/BuildConceptGraph",
    "/gigaudit.v1.AuditService/Audit", "/gigaudit.v1.ProbeService/SubmitProbe"})
RESERVATION_TTL_S = 60.0
RESERVED = "reserved:"

# KEYS[1]: the client's set; KEYS[2]: the call's request-id key. ARGV: job key prefix, limit, reservation member,
# now, reservation ttl. Returns -2 for a retried request (it starts nothing new), -1 after reserving, else the
# number of unfinished operations that fill the quota.
_RESERVE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return -2 end
local members = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local active = 0
for i = 1, #members, 2 do
  local member, added = members[i], tonumber(members[i + 1])
  local live
  if string.sub(member, 1, #'reserved:') == 'reserved:' then
    live = tonumber(ARGV[4]) - added < tonumber(ARGV[5])
  else
    local state = redis.call('HGET', ARGV[1] .. member, 'state')
    live = state == 'QUEUED' or state == 'RUNNING'
  end
  if live then active = active + 1 else redis.call('ZREM', KEYS[1], member) end
end
if active >= tonumber(ARGV[2]) then return active end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
return -1
"""


def client_of(context: grpc.ServicerContext) -> str:
    """The principal's name, or the peer's host (``ipv4:10.0.0.7:5312`` → ``ipv4:10.0.0.7``)."""
    principal = auth.current_principal()
    if principal is not None:
        return f"user:{principal.name}"
    peer = context.peer()
    return peer.rpartition(":")[0] if peer.startswith(("ipv4:", "ipv6:")) else peer


class LimitsInterceptor(grpc.ServerInterceptor):
    """Refuses an operation-starting call while its client has ``max_jobs`` unfinished operations."""

    def __init__(self, client: redis.Redis, max_jobs: int):
        if max_jobs < 1:
            raise ValueError(f"max_jobs must be at least 1, got {max_jobs}")
        self.redis, self.max_jobs = client, max_jobs
        self._reserve = client.register_script(_RESERVE)

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler_call_details.method not in STARTS_OPERATION:
            return handler

        def around(behavior):
            def limited(request, context):
                client = client_of(context)
                slot, key = RESERVED + uuid.uuid4().hex, keys.client_jobs(client)
                retry_key = keys.request(auth.caller().name, handler_call_details.method,
                                         request.request_id or slot)
                active = self._reserve(keys=[key, retry_key], args=[keys.job(""), self.max_jobs, slot, time.time(),
                                                                    RESERVATION_TTL_S])
                if active == -2:
                    return behavior(request, context)
                if active >= 0:
                    interceptors.abort(context, errors.resource_exhausted(
                        client, f"{active} unfinished operations, the limit per client is {self.max_jobs}; "
                        "wait for one to finish or cancel one"))
                try:
                    operation = behavior(request, context)
                except BaseException:
                    self.redis.zrem(key, slot)
                    raise
                with self.redis.pipeline() as pipe:
                    pipe.zrem(key, slot)
                    pipe.zadd(key, {operation.name.rpartition("/")[2]: time.time()})
                    pipe.execute()
                return operation
            return limited
        return interceptors.wrap(handler, around)
