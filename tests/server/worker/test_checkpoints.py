"""Long jobs resume from their checkpoint: a gig worker process killed mid-graph (SIGKILL), and its Redis killed
and restarted mid-graph (append-only file, so the keys survive the restart). Counted: the batches computed again.
Both give the graph of an uninterrupted run, byte for byte."""
from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis
from gig_worker_process import BATCH, logged_build_graph  # noqa: E402
from private_redis import PrivateRedis  # noqa: E402

import gig
from gig.synthetic import ASSETS, parts_archive
from gigaudit_server import keys
from gigaudit_server.queue.jobs import JobQueue, JobState
from gigaudit_server.storage.datasets.archives import inspect_archive
from gigaudit_server.storage.artifacts import ArtifactStore
from gigaudit_server.worker.loop import Worker
from gigaudit_server.worker.tasks import Tasks

N_IMAGES, TTL = 40, 1.0
SCRIPT = Path(__file__).with_name("gig_worker_process.py")
LAYERS = ["features.2", "features.3"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    store = ArtifactStore(f"file://{root}/store")
    info = json.loads((ASSETS / "partsnet.json").read_text())
    model = {"name": "demo", "architecture": "partsnet", "num_classes": len(info["classes"]),
             "class_names": info["classes"], "input_size": info["size"], "mean": [0.5] * 3, "std": [0.25] * 3,
             "weights_sha256": store.put_bytes("weights", (ASSETS / "partsnet.safetensors").read_bytes())}
    archive = parts_archive(N_IMAGES, size=32, seed=5)
    described = inspect_archive(io.BytesIO(archive))
    dataset = {"name": "parts", "sha256": store.put_bytes("datasets", archive), "format": "tar",
               "n_images": described.n_images, "class_names": described.class_names}
    tasks = Tasks(store, "cpu", batch_size=BATCH)
    with tasks._dataset({"model": model, "dataset": dataset}) as data:
        concepts = gig.extract_concepts(tasks.models.get(model), data, LAYERS, n_concepts=5, method="kmeans",
                                        pfvs_per_image=2, seed=1)
    params = {"model": model, "dataset": dataset, "concept_set_sha": store.put_bytes("concepts", concepts.to_bytes()),
              "layers": LAYERS, "steps": 4, "top_t": 2}
    return {"store": store, "tasks": tasks, "params": params}


@pytest.fixture
def uninterrupted(world, redis_client):
    """The graph sha of the job run from start to end by one in-process worker."""
    queue = JobQueue(redis_client)
    job = queue.submit("build_graph", world["params"])
    Worker(queue, world["tasks"].handlers(), checkpoint_s=0).run_one(block_ms=500)
    done = queue.get(job.id)
    assert done.state is JobState.SUCCEEDED, done.error
    return done.result["graph_sha"]


def spawn(url: str, world, name: str, log: Path, delay: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(SCRIPT), url, world["store"].url, name, str(TTL), str(log),
                             str(delay)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def starts(log: Path) -> list[int]:
    return [int(line) for line in log.read_text().split()] if log.exists() else []


def wait_until(predicate, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            if value := predicate():
                return value
        except redis.ConnectionError:
            pass
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_worker_killed_mid_graph_is_resumed_from_its_checkpoint(world, redis_client, redis_url, uninterrupted,
                                                                   tmp_path, monkeypatch):
    queue = JobQueue(redis_client, heartbeat_ttl=TTL)
    job = queue.submit("build_graph", world["params"])
    victim = spawn(redis_url, world, "victim", tmp_path / "victim.log", delay=0.3)
    try:
        wait_until(lambda: (queue.get(job.id).checkpoint or {}).get("images", 0) >= 3 * BATCH)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    finally:
        if victim.poll() is None:
            victim.kill()
    saved = queue.get(job.id).checkpoint["images"]
    monkeypatch.setattr(gig, "build_graph", logged_build_graph(str(tmp_path / "rescuer.log"), 0.0))
    rescuer = Worker(queue, world["tasks"].handlers(), name="rescuer", checkpoint_s=0)
    wait_until(lambda: rescuer.run_one(block_ms=200), timeout=30)
    done = queue.get(job.id)
    assert done.state is JobState.SUCCEEDED and (done.worker, done.attempt, done.failures) == ("rescuer", 2, 1)
    victim_starts, rescuer_starts = starts(tmp_path / "victim.log"), starts(tmp_path / "rescuer.log")
    assert rescuer_starts == list(range(saved, N_IMAGES, BATCH))  # from the checkpoint on, nothing before
    recomputed = sorted(set(victim_starts) & set(rescuer_starts))
    print(f"killed after {len(victim_starts)} batches, checkpoint at image {saved}: {len(rescuer_starts)} batches "
          f"resumed, {len(recomputed)} recomputed of {N_IMAGES // BATCH}")
    assert len(recomputed) <= 1  # a checkpoint after every batch: at most the batch it was killed in
    assert done.result["graph_sha"] == uninterrupted  # the same graph, byte for byte


@pytest.mark.slow
def test_a_redis_restart_mid_graph_neither_restarts_nor_fails_the_job(world, tmp_path, uninterrupted, monkeypatch):
    server = PrivateRedis(tmp_path)
    server.start()
    prefix = f"checkpoints-{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr(keys, "PREFIX", prefix)
    monkeypatch.setenv("GIGAUDIT_KEY_PREFIX", prefix)
    queue = JobQueue(redis.Redis.from_url(server.url, decode_responses=True), heartbeat_ttl=TTL)
    job = queue.submit("build_graph", world["params"])
    log = tmp_path / "worker.log"
    worker = spawn(server.url, world, "survivor", log, delay=0.2)
    try:
        wait_until(lambda: (queue.get(job.id).checkpoint or {}).get("images", 0) >= 2 * BATCH)
        server.crash()
        time.sleep(2 * TTL)  # every heartbeat lapses meanwhile
        server.start()
        done = wait_until(lambda: (j := queue.get(job.id)).finished and j)
        assert worker.poll() is None
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=20)
        server.close()
    assert done.state is JobState.SUCCEEDED and (done.attempt, done.failures) == (1, 0), done.error
    computed = starts(log)
    print(f"Redis restarted mid-graph: {len(computed)} batches computed for {N_IMAGES // BATCH}")
    assert computed == list(range(0, N_IMAGES, BATCH))  # every batch once: nothing recomputed
    assert done.result["graph_sha"] == uninterrupted


@pytest.mark.slow
def test_a_resumed_audit_skips_extraction_and_the_graphed_batches(world, redis_client, monkeypatch):
    params = {**{k: v for k, v in world["params"].items() if k != "concept_set_sha"}, "n_concepts": 5,
              "clustering": "kmeans", "pfvs_per_image": 2, "seed": 1, "metrics": ["reconstruction"],
              "evaluation_images": 8, "concept_set": "audit"}
    queue = JobQueue(redis_client)
    tasks = world["tasks"]
    whole = queue.submit("audit", params)
    Worker(queue, tasks.handlers(), checkpoint_s=0).run_one(block_ms=500)
    reference = queue.get(whole.id).result

    job = queue.submit("audit", params)
    stop, calls = threading.Event(), {"extract": 0, "graph": []}
    stopping = Worker(queue, tasks.handlers(), checkpoint_s=0)
    real_progress = type(stopping.queue).report_progress

    def report(self, job_, stage, done, total):  # stop the worker in the third graph batch (units: images × pairs)
        if stage == "graph" and done > 2 * BATCH * len(LAYERS):
            stop.set()
        return real_progress(self, job_, stage, done, total)

    monkeypatch.setattr(JobQueue, "report_progress", report)
    stopping.stop_event = stop
    stopping.run_one(block_ms=500)
    handed_back = queue.get(job.id)
    assert handed_back.state is JobState.QUEUED and handed_back.checkpoint["images"] == 2 * BATCH
    monkeypatch.setattr(JobQueue, "report_progress", real_progress)
    real_extract, real_graph = gig.extract_concepts, gig.build_graph
    monkeypatch.setattr(gig, "extract_concepts",
                        lambda *a, **k: calls.__setitem__("extract", 1) or real_extract(*a, **k))
    monkeypatch.setattr(gig, "build_graph", lambda *a, **k: calls["graph"].append(k["start_index"]) or
                        real_graph(*a, **k))
    Worker(queue, tasks.handlers(), checkpoint_s=0).run_one(block_ms=500)
    done = queue.get(job.id)
    assert done.state is JobState.SUCCEEDED and done.attempt == 2, done.error
    assert calls["extract"] == 0 and calls["graph"] == list(range(2 * BATCH, N_IMAGES, BATCH))
    for key in ("concept_set_sha", "graph_sha", "evidence", "exemplars_sha"):
        assert done.result[key] == reference[key], key
