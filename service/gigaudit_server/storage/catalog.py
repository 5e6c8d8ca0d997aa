"""Resource records (models, datasets, concept sets, concept graphs) in Redis, with their references; torch-free.

A resource is the hash ``keys.resource(collection, id)`` holding its record as JSON; ``keys.collection`` orders the
ids by creation time for paging. Three kinds of reference keep deletes safe:

- **children** (``keys.children``): the concept sets and graphs made from a model, a dataset or a concept set.
  Children are created in one transaction that watches their parents, so a child is never created under a parent
  that is being deleted, and a parent with children is not deleted unless the delete is forced (then the caller
  deletes the children first).
- **users** (``keys.usage``): the jobs that read a resource; an unfinished one blocks its deletion.
- **blob references** (``keys.blob_refs``): how many records and in-flight uploads need an uploaded artifact.
  An upload pins the sha256 it announced before it stores anything; the record it registers takes the pin over; a
  delete that drops the last reference marks the artifact as being deleted (``keys.blob_deleting``) in the same
  transaction, so that a concurrent upload of the same bytes waits until the file is gone and stores it again.
"""
from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterable, Mapping

import redis

from gigaudit_server import keys

COLLECTIONS = ("models", "datasets", "conceptSets", "conceptGraphs")
MAX_PAGE_SIZE = 1000
DELETING_TTL_S = 60
PIN_WAIT_S = 10.0
_UNFINISHED = ("QUEUED", "RUNNING")
LAYERS_CACHE_TTL_S = 24 * 3600.0
ARCHITECTURE_FIELDS = ("family", "source", "weights_format", "description")  # published per architecture


class AlreadyExists(Exception):
    """A resource with this id exists already (``args[0]`` is ``collection/id``)."""


class InUse(Exception):
    """A resource still has children or unfinished users: ``children`` and ``users`` name them."""

    def __init__(self, name: str, children: list[str], users: list[str]):
        super().__init__(name)
        self.children, self.users = children, users


class Catalog:
    def __init__(self, client: redis.Redis):
        self.redis = client

    # ------------------------------------------------------------------ records
    def create(self, collection: str, resource_id: str, record: dict, *, parents: Iterable[tuple[str, str]] = ()
               ) -> dict:
        """Store a new record; ``AlreadyExists`` when the id is taken, ``KeyError`` when a parent is missing."""
        return self.create_many([(collection, resource_id, record, list(parents))])[0]

    def create_many(self, items: list[tuple[str, str, dict, list[tuple[str, str]]]]) -> list[dict]:
        """Create records ``(collection, id, record, parents)`` at once, each registered as a child of its parents
        (``(collection, id)``; a parent may be an earlier item), in one transaction that fails when a parent is
        missing (``KeyError``) or an id is taken (``AlreadyExists``)."""
        if not items:
            return []
        now = time.time()
        records = [{**record, "create_time": record.get("create_time", now),
                    **({"parents": [list(p) for p in parents]} if parents else {})}
                   for _, _, record, parents in items]
        made = {(c, i) for c, i, _, _ in items}
        parents = sorted({tuple(p) for _, _, _, ps in items for p in ps} - made)
        item_keys = [self._key(c, i) for c, i, _, _ in items]
        parent_keys = [self._key(c, i) for c, i in parents]
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(*item_keys, *parent_keys)
                    for (collection, resource_id, _, _), key in zip(items, item_keys):
                        if pipe.exists(key):
                            raise AlreadyExists(f"{collection}/{resource_id}")
                    for (collection, resource_id), key in zip(parents, parent_keys):
                        if not pipe.exists(key):
                            raise KeyError(f"{collection}/{resource_id}")
                    pipe.multi()
                    for (collection, resource_id, _, item_parents), key, record in zip(items, item_keys, records):
                        pipe.hset(key, "record", json.dumps(record))
                        pipe.zadd(keys.collection(collection), {resource_id: record["create_time"]})
                        for parent in item_parents:
                            pipe.sadd(keys.children(*parent), f"{collection}/{resource_id}")
                    pipe.execute()
                    return records
                except redis.WatchError:
                    continue

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

    def list(self, collection: str, *, page_size: int = 0, page_token: str = "",
             accept: Callable[[str, dict], bool] | None = None, scope: str = "") -> tuple[list[dict], str]:
        """One page of records in creation order, optionally only those that ``accept(id, record)``, and the token
        of the next page ("" at the end). ``scope`` binds tokens to one filtered listing."""
        if not isinstance(page_size, int) or not 0 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 0 and {MAX_PAGE_SIZE}, not {page_size}")
        size, scope = page_size or 50, f"{collection}?{scope}"
        offset = decode_page_token(page_token, scope)
        index, page = keys.collection(collection), []
        while True:
            ids = [_text(i) for i in self.redis.zrange(index, offset, offset + 4 * size - 1)]
            for position, resource_id in enumerate(ids):
                record = self._record(collection, resource_id)
                if record is None or (accept is not None and not accept(resource_id, record)):
                    continue
                if len(page) == size:
                    return page, encode_page_token(offset + position, scope)
                page.append(record)
            if len(ids) < 4 * size:
                return page, ""
            offset += len(ids)

    def delete(self, collection: str, resource_id: str, *, blob: tuple[str, str] | None = None,
               ignore_users: bool = False) -> dict:
        """Remove a record that has no children and no unfinished users, and drop its reference to ``blob``
        (``(kind, sha)``); returns the record, with ``"blob_unreferenced": True`` when the caller must now delete
        the artifact (then call :meth:`blob_deleted`). ``KeyError`` when absent, :class:`InUse` when referenced."""
        key, name = self._key(collection, resource_id), f"{collection}/{resource_id}"
        children_key, users_key = keys.children(collection, resource_id), keys.usage(collection, resource_id)
        refs = keys.blob_refs(blob[0]) if blob else None
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key, children_key, users_key, *([refs] if refs else []))
                    raw = pipe.hget(key, "record")
                    if raw is None:
                        raise KeyError(name)
                    children = sorted(_text(c) for c in pipe.smembers(children_key)
                                      if pipe.exists(keys.resource(*_text(c).split("/", 1))))
                    users = [] if ignore_users else self._unfinished(pipe, pipe.smembers(users_key))
                    if children or users:
                        raise InUse(name, children, users)
                    remaining = None
                    if blob:
                        remaining = int(pipe.hget(refs, blob[1]) or 0) - 1
                    pipe.multi()
                    pipe.delete(key, children_key, users_key)
                    pipe.zrem(keys.collection(collection), resource_id)
                    for parent in self._parents_of(json.loads(raw)):
                        pipe.srem(keys.children(*parent), name)
                    if blob:
                        if remaining > 0:
                            pipe.hset(refs, blob[1], remaining)
                        else:
                            pipe.hdel(refs, blob[1])
                            pipe.set(keys.blob_deleting(*blob), "1", ex=DELETING_TTL_S)
                    pipe.execute()
                    return {**json.loads(raw), "blob_unreferenced": bool(blob) and remaining <= 0}
                except redis.WatchError:
                    continue

    def children(self, collection: str, resource_id: str) -> list[str]:
        """``collection/id`` of the records made from a resource (that still exist)."""
        found = [_text(c) for c in self.redis.smembers(keys.children(collection, resource_id))]
        return sorted(c for c in found if self.redis.exists(keys.resource(*c.split("/", 1))))

    # ------------------------------------------------------------------ blob references
    def pin_blob(self, kind: str, sha: str) -> None:
        """Count one more holder of an artifact (an upload in flight); waits while the same bytes are being deleted.
        ``TimeoutError`` when the deletion does not finish."""
        deadline = time.monotonic() + PIN_WAIT_S
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(keys.blob_deleting(kind, sha))
                    if pipe.exists(keys.blob_deleting(kind, sha)):
                        pipe.reset()
                        if time.monotonic() > deadline:
                            raise TimeoutError("an earlier copy of these bytes is still being deleted; retry")
                        time.sleep(0.05)
                        continue
                    pipe.multi()
                    pipe.hincrby(keys.blob_refs(kind), sha, 1)
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue

    def unpin_blob(self, kind: str, sha: str) -> bool:
        """Drop one holder (a failed upload); True when none is left and the caller must delete the artifact, then
        call :meth:`blob_deleted`."""
        refs = keys.blob_refs(kind)
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(refs)
                    remaining = int(pipe.hget(refs, sha) or 0) - 1
                    pipe.multi()
                    if remaining > 0:
                        pipe.hset(refs, sha, remaining)
                    else:
                        pipe.hdel(refs, sha)
                        pipe.set(keys.blob_deleting(kind, sha), "1", ex=DELETING_TTL_S)
                    pipe.execute()
                    return remaining <= 0
                except redis.WatchError:
                    continue

    def blob_refs(self, kind: str, sha: str) -> int:
        return int(self.redis.hget(keys.blob_refs(kind), sha) or 0)

    def blob_deleted(self, kind: str, sha: str) -> None:
        """The artifact's file is gone: uploads of the same bytes may go on."""
        self.redis.delete(keys.blob_deleting(kind, sha))

    # ------------------------------------------------------------------ usage by operations
    def add_user(self, collection: str, resource_id: str, job_id: str) -> None:
        self.redis.sadd(keys.usage(collection, resource_id), job_id)

    def users(self, collection: str, resource_id: str) -> list[str]:
        """Ids of the unfinished jobs that use a resource."""
        return self._unfinished(self.redis, self.redis.smembers(keys.usage(collection, resource_id)))

    # ------------------------------------------------------------------ architectures published by workers
    def publish_architectures(self, names) -> None:
        """Called by workers (which import torch) so that the torch-free API can list and check architectures:
        ``names`` is an iterable of names, a mapping ``{name: one-line description}``, or a mapping ``{name: {family,
        source, weights_format, description}}`` (``worker.architectures.architecture_details``)."""
        if names:
            self.redis.sadd(keys.architectures(), *names)
        details = {n: v for n, v in names.items() if isinstance(v, Mapping)} if isinstance(names, Mapping) else {}
        described = {name: (text.get("description", "") if isinstance(text, Mapping) else text)
                     for name, text in names.items()} if isinstance(names, Mapping) else {}
        described = {name: text for name, text in described.items() if text}
        pipe = self.redis.pipeline(transaction=False)
        if described:
            pipe.hset(keys.architecture_descriptions(), mapping=described)
        if details:
            pipe.hset(keys.architecture_details(), mapping={
                name: json.dumps({k: info.get(k, "") for k in ARCHITECTURE_FIELDS}) for name, info in details.items()})
        pipe.execute()

    def architectures(self) -> list[str]:
        return sorted(_text(n) for n in self.redis.smembers(keys.architectures()))

    def architecture_descriptions(self) -> dict[str, str]:
        """``{name: description}`` as workers published them (names without one are absent)."""
        return {_text(k): _text(v) for k, v in self.redis.hgetall(keys.architecture_descriptions()).items()}

    def architecture_details(self) -> dict[str, dict]:
        """``{name: {family, source, weights_format, description}}`` as workers published them (names published
        without details are absent)."""
        return {_text(k): json.loads(v) for k, v in self.redis.hgetall(keys.architecture_details()).items()}

    def architecture_detail(self, name: str) -> dict | None:
        """The published details of one architecture, or None."""
        raw = self.redis.hget(keys.architecture_details(), name)
        return json.loads(raw) if raw else None

    def architecture_layers(self, architecture: str, num_classes: int) -> dict | None:
        """The cached layer listing of an architecture with random weights (a ``list_layers`` job's result)."""
        raw = self.redis.get(keys.architecture_layers(architecture, num_classes))
        return json.loads(raw) if raw else None

    def cache_architecture_layers(self, architecture: str, num_classes: int, listing: dict) -> None:
        """Cache a ``list_layers`` result for ``LAYERS_CACHE_TTL_S`` (a worker upgrade may change it)."""
        self.redis.set(keys.architecture_layers(architecture, num_classes), json.dumps(listing), ex=int(LAYERS_CACHE_TTL_S))

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

    @staticmethod
    def _unfinished(client, job_ids) -> list[str]:
        ids = sorted(_text(j) for j in job_ids)
        states = [_text(client.hget(keys.job(j), "state")) for j in ids]
        return [j for j, state in zip(ids, states) if state in _UNFINISHED]

    @staticmethod
    def _parents_of(record: dict) -> list[tuple[str, str]]:
        """The parents a child record was registered under (see :meth:`create_many`)."""
        return [tuple(p) for p in record.get("parents", [])]


def _text(value) -> str:
    if value is None:
        return ""
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
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:
        raise ValueError(f"malformed page_token {token!r}: pass the next_page_token of a previous page") from exc
    if token_scope != scope or offset < 0:
        raise ValueError(f"page_token {token!r} does not belong to this listing")
    return offset
