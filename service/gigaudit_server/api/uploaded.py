"""Resources made from one uploaded artifact (models: weights, datasets: archives): storing the stream, answering a
retried upload, registering, reading and deleting the record together with its artifact."""
from __future__ import annotations

import contextlib
import re

from gigaudit_server.api import errors
from gigaudit_server.storage.catalog import AlreadyExists

SHA256 = re.compile(r"[0-9a-f]{64}")
# collection: (the resource in messages, the artifact kind in the store, the record field holding its sha256)
KINDS = {"models": ("model", "weights", "weights_sha256"), "datasets": ("dataset", "datasets", "sha256")}


def store(backend, collection: str, chunks, sha256: str | None, size: int | None, max_bytes: int) -> tuple[str, int]:
    """``(sha256, size)`` of the stored chunks; a stream over the limit or off its digest is INVALID_ARGUMENT."""
    try:
        return backend.store.put_stream(KINDS[collection][1], chunks, expected_sha256=sha256, expected_size=size,
                                        max_bytes=max_bytes)
    except ValueError as exc:
        raise errors.invalid_argument({"chunk": str(exc)}, str(exc)) from None


def retried(backend, collection: str, resource_id: str, request_id: str) -> dict | None:
    """The record a retry of the same request created, ``None`` when the id is free; ALREADY_EXISTS when taken."""
    try:
        record = backend.catalog.get(collection, resource_id)
    except KeyError:
        return None
    if request_id and record.get("request_id") == request_id:
        return record
    raise errors.already_exists(KINDS[collection][0], f"{collection}/{resource_id}")


@contextlib.contextmanager
def registering(backend, collection: str, resource_id: str, sha256: str):
    """Around registering a stored artifact: any failure forgets the artifact; a taken id is ALREADY_EXISTS."""
    noun, artifact, _ = KINDS[collection]
    try:
        yield
    except AlreadyExists:
        backend.forget_artifact(artifact, sha256)
        raise errors.already_exists(noun, f"{collection}/{resource_id}") from None
    except BaseException:
        backend.forget_artifact(artifact, sha256)
        raise


def get(backend, collection: str, resource_id: str, name: str) -> dict:
    """The record, or NOT_FOUND naming ``name``."""
    try:
        return backend.catalog.get(collection, resource_id)
    except KeyError:
        raise errors.not_found(KINDS[collection][0], name) from None


def delete(backend, collection: str, resource_id: str, name: str) -> None:
    """Delete a resource that no running operation uses, and its artifact when no other record refers to it."""
    record = get(backend, collection, resource_id, name)
    running = backend.in_use(collection, resource_id)
    if running:
        raise errors.failed_precondition(name, f"in use by running operations: {', '.join(running)}")
    backend.catalog.delete(collection, resource_id)
    _, artifact, field = KINDS[collection]
    backend.forget_artifact(artifact, record[field])
