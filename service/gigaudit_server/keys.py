"""Every Redis key gigaudit uses is built here, under one prefix."""
from __future__ import annotations

import os

# Configurable so that tests (and several deployments on one Redis) can keep their keys apart.
PREFIX = os.environ.get("GIGAUDIT_KEY_PREFIX", "gigaudit")


def _key(*parts: str) -> str:
    return ":".join((PREFIX, *parts))


# --- jobs (gigaudit_server.queue.jobs) ---------------------------------------------------------------
def job(job_id: str) -> str:
    """Hash: state, progress, attempt, worker, params, result, error."""
    return _key("job", job_id)


def job_index() -> str:
    """Sorted set of job ids by creation time."""
    return _key("jobs")


def stream() -> str:
    """Stream of job deliveries, read by the worker consumer group."""
    return _key("stream")


def consumer_group() -> str:
    return "workers"


def dead_letters() -> str:
    """Stream of jobs that failed for good (too many failed deliveries, a hung handler); trimmed to its TTL."""
    return _key("dead")


def heartbeat(worker: str) -> str:
    """String with a TTL, refreshed by a live worker."""
    return _key("worker", worker, "alive")


def worker_info(worker: str) -> str:
    """Hash {device, operation, started, beat}: what a live worker runs (``operation``: the job id, empty when idle;
    ``started``, ``beat``: Unix times); written with its heartbeat, expiring with it (``gigaudit status``)."""
    return _key("worker", worker, "info")


def workers() -> str:
    """Sorted set of the workers that beat, by time of their last beat (pruned of dead ones by the status view)."""
    return _key("workers")


def suspect(worker: str) -> str:
    """String: when (Redis time, ms) a reclaimer first found the worker's heartbeat missing; a live worker's next
    beat deletes it (``JobQueue.reclaim_grace``)."""
    return _key("worker", worker, "suspect")


def job_events(job_id: str) -> str:
    """Pub/sub channel announcing every change of a job (wakes up ``JobQueue.watch``)."""
    return _key("job", job_id, "events")


def request(caller: str, method: str, request_id: str) -> str:
    """String (JSON, with a TTL): what a caller's request id already did for one method (AIP-155; api.idempotency)."""
    return _key("request", caller, method, request_id)


# --- resources (gigaudit_server catalog) -------------------------------------------------------
def resource(collection: str, resource_id: str) -> str:
    """Hash of one resource's metadata, e.g. ``resource("models", "resnet")``."""
    return _key(collection, resource_id)


def collection(name: str) -> str:
    """Sorted set of the ids in a collection by creation time."""
    return _key(name, "index")


def children(collection_name: str, resource_id: str) -> str:
    """Set of the resources made from a resource (``conceptSets/m/s``, ``conceptGraphs/m/g``): deletion is refused
    while it is not empty, unless forced."""
    return _key(collection_name, resource_id, "children")


def blob_refs(kind: str) -> str:
    """Hash sha256 → number of records and in-flight uploads that need the artifact (storage.catalog)."""
    return _key("blobs", kind, "refs")


def blob_deleting(kind: str, sha: str) -> str:
    """String with a TTL while an unreferenced artifact is being deleted: uploads of the same bytes wait for it."""
    return _key("blobs", kind, sha, "deleting")


def usage(collection_name: str, resource_id: str) -> str:
    """Set of job ids that use a resource (deleting it is refused while not empty)."""
    return _key(collection_name, resource_id, "users")


def architectures() -> str:
    """Set of the architecture names that workers can build (published by workers, read by the torch-free API)."""
    return _key("architectures")


def architecture_descriptions() -> str:
    """Hash: architecture name → one-line description (published by workers)."""
    return _key("architectures", "descriptions")


def architecture_details() -> str:
    """Hash: architecture name → JSON ``{family, source, weights_format, description}`` (published by workers)."""
    return _key("architectures", "details")


def architecture_layers(architecture: str, num_classes: int) -> str:
    """String (JSON, with a TTL): the layer listing of an architecture with ``num_classes`` outputs."""
    return _key("architectures", "layers", architecture, str(num_classes))


# --- limits (gigaudit_server.api.limits) -----------------------------------------------------------
def client_jobs(client: str) -> str:
    """Sorted set of a client's possibly unfinished job ids (and short-lived reservations) by time added."""
    return _key("client", client, "jobs")
