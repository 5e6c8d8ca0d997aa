"""Resources settle against the operation that creates them (torch-free).

A model (while a worker validates its weights), a concept set or a concept graph is recorded CREATING when its
operation is submitted. It settles once the job finished: ACTIVE with the job's result; a concept set or graph whose
job failed becomes FAILED, a model whose validation failed is removed (nothing stays registered after a refusal).
Settling runs when the worker finished the job (``Worker(on_finished=…)``) and again on every read, so no process
has to stay up for it. A concept set's on-demand exemplar renderings settle the same way: their PNGs are merged
into the set's bundle.

Every function takes ``plane``: any object with ``catalog``, ``queue`` and ``store`` attributes.
"""
from __future__ import annotations

import functools
import json
import logging

from gigaudit_server.queue.jobs import Job, JobState
from gigaudit_server.storage import exemplars

log = logging.getLogger(__name__)
# what an ``inspect_dataset`` job found, copied into the dataset's record
DATASET_RESULT = ("format", "n_images", "class_names", "image_sizes", "sha256", "size_bytes", "image_bytes")


def model(plane, model_id: str) -> dict:
    """The model's record, settled; ``KeyError`` when absent (or removed because its validation failed)."""
    return _settle_checked(plane, "models", model_id, lambda result: {
        "layers": result["layers"], "default_layers": result["default_layers"],
        **{key: result[key] for key in ("preprocessing", "family") if key in result}})


def dataset(plane, dataset_id: str) -> dict:
    """The dataset's record, settled against its ``inspect_dataset`` job (registered by URI): ACTIVE with what the
    worker found, or removed when the inspection failed (``KeyError``, as when absent)."""
    return _settle_checked(plane, "datasets", dataset_id,
                           lambda result: {key: result[key] for key in DATASET_RESULT if key in result})


def _settle_checked(plane, collection: str, resource_id: str, found) -> dict:
    """A record a worker checks before it is ACTIVE (a model's weights, a dataset read in place): ACTIVE with
    ``found(result)`` once its job succeeded, removed (``KeyError``) once it failed, as it is while it runs."""
    record = plane.catalog.get(collection, resource_id)
    if record.get("state", "ACTIVE") != "CREATING":
        return record
    job = _job(plane, record.get("operation"))
    if job is None or not job.finished:
        return record
    if job.state is JobState.SUCCEEDED:
        return plane.catalog.update(collection, resource_id, state="ACTIVE", **found(job.result))
    remove_uploaded(plane, collection, resource_id)
    raise KeyError(f"{collection}/{resource_id}")


def concept_set(plane, model_id: str, set_id: str) -> dict:
    """The concept set's record, settled against its operation and its finished exemplar renderings; ``KeyError``
    when absent."""
    record = plane.catalog.get("conceptSets", f"{model_id}/{set_id}")
    record = _settle(plane, "conceptSets", f"{model_id}/{set_id}", record, _concept_set_result)
    return _settle_renderings(plane, f"{model_id}/{set_id}", record)


def concept_graph(plane, model_id: str, graph_id: str) -> dict:
    """The concept graph's record, settled against its operation; ``KeyError`` when absent."""
    record = plane.catalog.get("conceptGraphs", f"{model_id}/{graph_id}")
    return _settle(plane, "conceptGraphs", f"{model_id}/{graph_id}", record, _concept_graph_result)


def settle_job(plane, job: Job) -> None:
    """Settle every resource a finished job creates (called by the worker; a missing record is skipped)."""
    params = job.params
    targets = []
    if job.kind == "validate_model":
        targets.append((model, (params.get("model_id") or "",)))
    if job.kind == "inspect_dataset":
        targets.append((dataset, (params.get("dataset_id") or "",)))
    for key, settle in (("concept_set", concept_set), ("concept_graph", concept_graph)):
        if params.get(key):
            targets.append((settle, _ids(params[key])))
    for settle, ids in targets:
        try:
            settle(plane, *ids)
        except KeyError:
            pass


def remove_uploaded(plane, collection: str, resource_id: str) -> None:
    """Delete a model or dataset record and, when no other record or upload needs it, its artifact."""
    try:
        record = plane.catalog.get(collection, resource_id)
    except KeyError:
        return
    blob = artifact_of(collection, record)
    record = plane.catalog.delete(collection, resource_id, blob=blob)
    if record["blob_unreferenced"]:
        delete_artifact(plane, *blob)


def artifact_of(collection: str, record: dict) -> tuple[str, str] | None:
    """``(kind, sha256)`` of the stored artifact a model or dataset record references; ``None`` for a dataset read
    in place (registered by URI: nothing of it is stored) and for other collections."""
    if collection not in UPLOADED or (collection == "datasets" and record.get("in_place")):
        return None
    kind, field = UPLOADED[collection]
    return kind, record[field]


def delete_artifact(plane, kind: str, sha: str) -> None:
    """Remove an artifact the catalog marked unreferenced, then let uploads of the same bytes go on."""
    try:
        plane.store.delete(kind, sha)
    except KeyError:
        pass
    finally:
        plane.catalog.blob_deleted(kind, sha)


# collection: (artifact kind in the store, record field holding its sha256)
UPLOADED = {"models": ("weights", "weights_sha256"), "datasets": ("datasets", "sha256")}


def add_render_operation(plane, model_id: str, set_id: str, job_id: str) -> dict:
    """Record a ``render_exemplars`` job of a concept set (atomically; adding it twice changes nothing)."""
    def add(record):
        return {**record, "render_operations": sorted({*record.get("render_operations", []), job_id})}
    return plane.catalog.modify("conceptSets", f"{model_id}/{set_id}", add)


@functools.lru_cache(maxsize=8)
def load_graph(store, sha: str) -> dict:
    """A stored graph dict (docs/graph-format.md; read-only); the last few are kept parsed."""
    return json.loads(store.read("graphs", sha))


# ---------------------------------------------------------------------------------------------- internals
def _job(plane, job_id: str | None) -> Job | None:
    if not job_id:
        return None
    try:
        return plane.queue.get(job_id)
    except KeyError:
        return None


def _ids(name: str) -> tuple[str, str]:
    _, model_id, _, child_id = name.split("/")
    return model_id, child_id


def _concept_set_result(plane, result: dict) -> dict:
    stats = result.get("layers") or {
        layer: {k: v for k, v in values.items() if k in ("relative_error", "l0", "n_concepts")}
        for layer, values in (result.get("evidence") or {}).get("reconstruction", {}).items()}
    settled = {"concept_set_sha": result["concept_set_sha"], "exemplars_sha": result.get("exemplars_sha"),
               "layer_stats": stats, "rendered_concepts": result.get("rendered_concepts") or {}}
    if result.get("options"):  # the options gig used, its defaults included
        settled["used_options"] = result["options"]
    return settled


def _concept_graph_result(plane, result: dict) -> dict:
    graph = load_graph(plane.store, result["graph_sha"])
    return {"graph_sha": result["graph_sha"], "layers": graph["layers"], "classes": graph.get("classes", []),
            "image_count": graph["n_images"], "params": graph.get("params", {}),
            "evidence": result.get("evidence") or graph.get("evidence", {}),
            "node_count": len(graph["nodes"]), "edge_count": len(graph["edges"])}


def _settle(plane, collection: str, resource_id: str, record: dict, from_result) -> dict:
    if record["state"] != "CREATING" or not record.get("operation"):
        return record
    job = _job(plane, record["operation"])
    if job is None:  # expired (TTL) before anything read it
        return plane.catalog.update(collection, resource_id, state="FAILED", error={
            "code": "ABORTED", "message": "its operation expired before its result was recorded"})
    if job.state is JobState.SUCCEEDED:
        return plane.catalog.update(collection, resource_id, state="ACTIVE", **from_result(plane, job.result))
    if job.state in (JobState.FAILED, JobState.CANCELLED):
        return plane.catalog.update(collection, resource_id, state="FAILED", error=job.error or {
            "code": "CANCELLED", "message": "its operation was cancelled"})
    return record


def _settle_renderings(plane, resource_id: str, record: dict) -> dict:
    """Merge the PNGs of the concept set's finished ``render_exemplars`` jobs into its bundle, and forget them."""
    finished = {}
    for job_id in record.get("render_operations", []):
        job = _job(plane, job_id)
        if job is None:  # gone before it was read: nothing to merge
            finished[job_id] = None
        elif job.finished:
            finished[job_id] = job.result.get("exemplars_sha") if job.state is JobState.SUCCEEDED else None
    if not finished:
        return record

    def merge(current):
        pending = current.get("render_operations", [])
        bundle = plane.store.read("exemplars", current["exemplars_sha"])
        for job_id in pending:
            if finished.get(job_id):
                bundle = exemplars.merge_bundles(bundle, plane.store.read("exemplars", finished[job_id]))
        return {**current, "exemplars_sha": plane.store.put_bytes("exemplars", bundle),
                "rendered_concepts": exemplars.rendered_concepts(bundle),
                "render_operations": [j for j in pending if j not in finished]}
    return plane.catalog.modify("conceptSets", resource_id, merge)
