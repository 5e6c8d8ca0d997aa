"""Request ids (AIP-155), scoped per caller and method and bound to a fingerprint of the request.

A method that creates something calls :meth:`Idempotency.once` around its work. The first call with a request id
reserves the key ``keys.request(caller, method, request_id)`` (``SET NX`` with the fingerprint and no result yet),
does the work and records its result (an operation or resource name). A retry with the same request gets that
result back and does nothing; the same id with another request is ALREADY_EXISTS, naming the conflict. A retry that
arrives while the first call still works waits for it (a few seconds), then is ABORTED. Work that fails frees the
id, so a corrected retry may reuse it; so does a result that was deleted since (``replay`` raises :class:`Gone`):
the retry then runs anew. Keys expire after ``ttl_s`` (default 24 h).
"""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable

import grpc
import redis

from gigaudit_server import keys
from gigaudit_server.api import errors

MAX_REQUEST_ID = 128
PENDING_WAIT_S = 5.0


def fingerprint(message, *, ignore: tuple[str, ...] = ("request_id",), extra: dict | None = None) -> str:
    """sha256 of a request message (deterministic wire bytes) without the fields ``ignore``, plus ``extra``."""
    copy = type(message)()
    copy.CopyFrom(message)
    for name in ignore:
        if name in copy.DESCRIPTOR.fields_by_name:
            copy.ClearField(name)
    digest = hashlib.sha256(copy.SerializeToString(deterministic=True))
    if extra:
        digest.update(json.dumps(extra, sort_keys=True).encode())
    return digest.hexdigest()


class Gone(Exception):
    """Raised by a ``replay``: what the first call made was deleted since, so the request may run again."""


class Idempotency:
    def __init__(self, client: redis.Redis, ttl_s: float):
        self.redis, self.ttl_ms = client, max(1, int(ttl_s * 1000))

    def once(self, caller: str, method: str, request_id: str, request_fingerprint: str,
             work: Callable[[], str], replay: Callable[[str], object]):
        """``replay(work())`` the first time; ``replay(result)`` for a retry of the same request. Without a
        ``request_id``, simply ``replay(work())``."""
        if not request_id:
            return replay(work())
        if len(request_id) > MAX_REQUEST_ID:
            raise errors.invalid_argument({"request_id": f"at most {MAX_REQUEST_ID} characters"})
        key = keys.request(caller, method, request_id)
        mine = json.dumps({"fingerprint": request_fingerprint, "result": None})
        deadline = time.monotonic() + PENDING_WAIT_S
        while not self.redis.set(key, mine, nx=True, px=self.ttl_ms):
            stored = self.redis.get(key)
            if stored is None:  # expired or freed meanwhile: try again
                continue
            stored = json.loads(stored)
            if stored["fingerprint"] != request_fingerprint:
                raise errors.already_exists("request", request_id, description=(
                    f"request_id {request_id!r} was used for a different {method.rpartition('/')[2]} request; "
                    "use a new request_id for a new request"))
            if stored["result"] is not None:
                try:
                    return replay(stored["result"])
                except Gone:
                    self.redis.delete(key)
                    continue
            if time.monotonic() > deadline:
                raise errors.ApiError(grpc.StatusCode.ABORTED, f"a request with request_id {request_id!r} is still "
                                      "being processed; retry later")
            time.sleep(0.05)
        try:
            result = work()
        except BaseException:
            self.redis.delete(key)
            raise
        self.redis.set(key, json.dumps({"fingerprint": request_fingerprint, "result": result}), xx=True,
                       keepttl=True)
        return replay(result)

    def forget(self, caller: str, method: str, request_id: str) -> None:
        """Free a request id (its result was deleted)."""
        if request_id:
            self.redis.delete(keys.request(caller, method, request_id))
