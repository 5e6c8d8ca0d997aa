"""Resource metadata (models, datasets, concept sets, concept graphs) in Redis, torch-free.

A resource is a Redis hash ``keys.resource(collection, id)`` holding its record as JSON and the request id that
created it; ``keys.collection(collection)`` orders the ids by creation time for paging. Creation is atomic
(``HSETNX``), and a retried create with the same request id returns the original record instead of failing
(AIP-155). ``keys.usage`` holds the operations that use a resource, so deletion can be refused while one runs.
"""
from __future__ import annotations

import base64
import json
import time

import redis

from gigaudit_server import keys

COLLECTIONS = ("models", "datasets", "conceptSets", "conceptGraphs")
MAX_PAGE_SIZE = 1000


class AlreadyExists(Exception):
    """A resource with this id exists and was created by another request."""


class Catalog:
    def __init__(self, client: redis.Redis):
        self.redis = client

    def create(self, collection: str, resource_id: str, record: dict, *, request_id: str = "") -> tuple[dict, bool]:
        """Store a new record; returns ``(record, created)``.

        When the id is taken by a record created with the same non-empty ``request_id``, that record is returned with
        ``created=False``; otherwise :class:`AlreadyExists`.
        """
        key = self._key(collection, resource_id)
        record = {**record, "create_time": record.get("create_time", time.time())}
        pipe = self.redis.pipeline()
        pipe.hsetnx(key, "record", json.dumps(record))
        pipe.hsetnx(key, "request_id", request_id)
        created, _ = pipe.execute()
        if created:
            self.redis.zadd(keys.collection(collection), {resource_id: record["create_time"]})
            return record, True
        existing, existing_request = self.redis.hmget(key, "record", "request_id")
        if request_id and _text(existing_request) == request_id:
            return json.loads(existing), False
        raise AlreadyExists(f"{collection}/{resource_id}")

    def get(self, collection: str, resource_id: str) -> dict:
        """The record; ``KeyError`` when absent."""
        raw = self.redis.hget(self._key(collection, resource_id), "record")
        if raw is None:
            raise KeyError(f"{collection}/{resource_id}")
        return json.loads(raw)

    def update(self, collection: str, resource_id: str, **fields) -> dict:
        """Merge ``fields`` into an existing record (atomic against concurrent updates); returns the new record."""
        return self.modify(collection, resource_id, lambda record: {**record, **fields})

    def modify(self, collection: str, resource_id: str, change) -> dict:
        """Replace an existing record by ``change(record)``, atomically against concurrent writers (``change`` is
        retried on a conflict, so any side effect must be idempotent); returns the new record."""
        key = self._key(collection, resource_id)
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.hget(key, "record")
                    if raw is None:
                        raise KeyError(f"{collection}/{resource_id}")
                    record = change(json.loads(raw))
                    pipe.multi()
                    pipe.hset(key, "record", json.dumps(record))
                    pipe.execute()
                    return record
                except redis.WatchError:
                    continue

    def list(self, collection: str, *, page_size: int = 0, page_token: str = "") -> tuple[list[dict], str]:
        """One page of records in creation order and the token of the next page ("" at the end)."""
        if page_size < 0 or page_size > MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 0 and {MAX_PAGE_SIZE}, not {page_size}")
        size = page_size or 50
        start = decode_page_token(page_token, collection)
        ids = [_text(i) for i in self.redis.zrange(keys.collection(collection), start, start + size)]
        records = [r for r in (self._record(collection, i) for i in ids[:size]) if r is not None]
        return records, encode_page_token(start + size, collection) if len(ids) > size else ""

    def delete(self, collection: str, resource_id: str) -> None:
        """Remove a record; ``KeyError`` when absent."""
        pipe = self.redis.pipeline()
        pipe.delete(self._key(collection, resource_id))
        pipe.zrem(keys.collection(collection), resource_id)
        pipe.delete(keys.usage(collection, resource_id))
        if not pipe.execute()[0]:
            raise KeyError(f"{collection}/{resource_id}")

    # ------------------------------------------------------------------ usage by operations
    def add_user(self, collection: str, resource_id: str, job_id: str) -> None:
        self.redis.sadd(keys.usage(collection, resource_id), job_id)

    def users(self, collection: str, resource_id: str) -> set[str]:
        return {_text(j) for j in self.redis.smembers(keys.usage(collection, resource_id))}

    def remove_users(self, collection: str, resource_id: str, job_ids) -> None:
        if job_ids:
            self.redis.srem(keys.usage(collection, resource_id), *job_ids)

    # ------------------------------------------------------------------ architectures published by workers
    def publish_architectures(self, names) -> None:
        """Called by workers (which import torch) so that the torch-free API can list and check architectures."""
        if names:
            self.redis.sadd(keys.architectures(), *names)

    def architectures(self) -> list[str]:
        return sorted(_text(n) for n in self.redis.smembers(keys.architectures()))

    # ------------------------------------------------------------------ helpers
    def _key(self, collection: str, resource_id: str) -> str:
        if collection not in COLLECTIONS:
            raise ValueError(f"unknown collection {collection!r}; valid: {', '.join(COLLECTIONS)}")
        return keys.resource(collection, resource_id)

    def _record(self, collection: str, resource_id: str) -> dict | None:
        try:
            return self.get(collection, resource_id)
        except KeyError:
            return None


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def encode_page_token(offset: int, scope: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset, "s": scope}).encode()).decode()


def decode_page_token(token: str, scope: str) -> int:
    """The offset in a page token; ``ValueError`` for a malformed token or one from another listing."""
    if not token:
        return 0
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        offset, token_scope = int(data["o"]), data["s"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"malformed page_token {token!r}") from exc
    if token_scope != scope or offset < 0:
        raise ValueError(f"page_token {token!r} does not belong to this listing")
    return offset
