"""Job handlers on the trained demo PartsNet and a tiny planted-parts dataset, against a real Redis.

The handlers' stored artifacts must equal what the gig core gives when called directly on the same images.
"""
from __future__ import annotations

import inspect
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image

import gig
from gig.concepts import ConceptSet
from gig.preprocessing import Preprocessing
from gig.synthetic import ASSETS, CLASS_NAMES, make_parts_dataset, parts_archive
from gigaudit.report import build_report
from gigaudit_server.queue.jobs import JobCancelled, JobQueue, JobState
from gigaudit_server.storage import exemplars
from gigaudit_server.storage.datasets.archives import inspect_archive
from gigaudit_server.storage.artifacts import ArtifactStore
from gigaudit_server.worker import tasks as tasks_module
from gigaudit_server.worker.images import load_images
from gigaudit_server.worker.loop import Worker
from gigaudit_server.worker.tasks import Tasks, most_relevant, shard_bounds

N_IMAGES, BATCH = 12, 5
EXTRACT = {"n_concepts": 6, "method": "kmeans", "pfvs_per_image": 2, "sampling": "contribution", "lam": 0.05,
           "seed": 3}
GRAPH = {"steps": 4, "top_t": 2, "method": "gausslegendre", "path": "reconstruction"}
LAYERS = ["features.1", "features.2", "features.3"]
# The worker builds a graph one batch at a time (for checkpoints) and merges the batches' graphs: the same sums as
# gig's own loop, but a batch's per-class parts are added to the running sum as one: the last bits may differ.
MERGE_REL = 1e-12


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A store holding the demo weights, a tar of planted-parts images and a concept set; the records."""
    root = tmp_path_factory.mktemp("tasks")
    store = ArtifactStore(f"file://{root}/store")
    weights = store.put_bytes("weights", (ASSETS / "partsnet.safetensors").read_bytes())
    info = json.loads((ASSETS / "partsnet.json").read_text())
    model = {"name": "demo", "architecture": "partsnet", "num_classes": len(info["classes"]),
             "class_names": info["classes"], "input_size": info["size"], "mean": [0.5, 0.5, 0.5],
             "std": [0.25, 0.25, 0.25], "weights_sha256": weights}
    _, labels, _ = make_parts_dataset(N_IMAGES, size=32, seed=11)
    archive = parts_archive(N_IMAGES, size=32, seed=11)
    described = inspect_archive(io.BytesIO(archive))
    dataset = {"name": "parts", "sha256": store.put_bytes("datasets", archive), "format": "tar",
               "n_images": described.n_images, "class_names": described.class_names}
    tasks = Tasks(store, "cpu", batch_size=BATCH, n_exemplars=2, exemplar_concepts=3)
    net = tasks.models.get(model)
    images, dataset_labels, names = load_images(f"{root}/store/datasets/{dataset['sha256'][:2]}/{dataset['sha256']}",
                                                Preprocessing.from_record(model))
    label_of = {f"{CLASS_NAMES[label]}/{i:05d}.png": int(label) for i, label in enumerate(labels)}
    model_labels = torch.tensor([label_of[name] for name in names])
    batches = [(images[i:i + BATCH], model_labels[i:i + BATCH]) for i in range(0, N_IMAGES, BATCH)]
    concepts = gig.extract_concepts(net, batches, LAYERS, **EXTRACT, n_exemplars=2)
    return {"store": store, "tasks": tasks, "model": model, "dataset": dataset, "net": net, "images": images,
            "labels": model_labels, "names": names, "batches": batches, "concepts": concepts,
            "concept_set_sha": store.put_bytes("concepts", concepts.to_bytes())}


@pytest.fixture
def queue(redis_client):
    return JobQueue(redis_client, heartbeat_ttl=2.0)


def claim(queue: JobQueue):
    for _ in range(5):
        ctx = queue.claim_next("test-worker", 200)
        if ctx is not None:
            return ctx
    raise AssertionError("no job was delivered")


def graph_params(world, **extra):
    return {"model": world["model"], "dataset": world["dataset"], "concept_set_sha": world["concept_set_sha"],
            "layers": LAYERS, **GRAPH, **extra}


def assert_graphs_equal(a: dict, b: dict, rel: float = 0.0, abs_tol: float = 0.0):
    """Equal structure and integers; floats equal up to ``rel`` relative (or ``abs_tol`` absolute) tolerance."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        for key in a:
            assert_graphs_equal(a[key], b[key], rel, abs_tol)
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_graphs_equal(x, y, rel, abs_tol)
    elif isinstance(a, float):
        assert math.isclose(a, b, rel_tol=rel, abs_tol=abs_tol), (a, b)
    else:
        assert a == b


def test_shard_bounds_cover_the_dataset_once():
    for n, count in [(12, 2), (10, 3), (2, 4), (0, 2)]:
        bounds = [shard_bounds(n, i, count) for i in range(count)]
        assert [i for a, b in bounds for i in range(a, b)] == list(range(n))


def test_labels_follow_the_model_class_order(world):
    with world["tasks"]._dataset({"model": world["model"], "dataset": world["dataset"]}, 2, 9) as data:
        assert data.names == world["names"][2:9] and torch.equal(data.labels, world["labels"][2:9])
        assert torch.equal(torch.cat([images for images, _ in data]), world["images"][2:9])
    assert sorted(world["dataset"]["class_names"]) == world["dataset"]["class_names"] != CLASS_NAMES
    renamed = {**world["model"], "class_names": [f"class {i}" for i in range(6)]}
    with pytest.raises(ValueError, match="are not classes of the model; its classes are: class 0"):
        with world["tasks"]._dataset({"model": renamed, "dataset": world["dataset"]}):
            pass


def test_validate_model(world, queue):
    queue.submit("validate_model", {"model": world["model"]})
    result = world["tasks"].validate_model(claim(queue))
    assert result["default_layers"] == ["features.0", "features.1", "features.2", "features.3"]
    by_name = {layer["name"]: layer for layer in result["layers"]}
    assert list(by_name) == [name for name, _ in world["net"].named_modules() if name]
    assert by_name["features.3"]["is_cut"] and by_name["features.3.conv"]["type"] == "Conv2d"


def test_validate_model_refuses_weights_of_another_shape(world, queue):
    queue.submit("validate_model", {"model": {**world["model"], "num_classes": 5}})
    with pytest.raises(ValueError, match=r"mis-shaped keys: head\.weight \(weights \[6, 64\]"):
        world["tasks"].validate_model(claim(queue))


def test_extract_concepts_stores_what_gig_gives(world, queue):
    queue.submit("extract_concepts", {"model": world["model"], "dataset": world["dataset"], "layers": LAYERS,
                                      **EXTRACT, "concept_set": "cs"})
    ctx = claim(queue)
    result = world["tasks"].extract_concepts(ctx)
    stored = ConceptSet.from_bytes(world["store"].read("concepts", result["concept_set_sha"]))
    direct = world["concepts"]
    assert list(stored.layers) == LAYERS
    for layer in LAYERS:
        assert torch.equal(stored.vectors(layer), direct.vectors(layer))
        assert stored.layers[layer].exemplars == direct.layers[layer].exemplars
        stats = result["layers"][layer]
        assert stats["n_concepts"] == 6
        assert 0 < stats["relative_error"] < 1 and 0 < stats["l0"] <= 1
    job = queue.get(ctx.job.id)
    assert job.stage and job.done == job.total  # progress went through the job

    # exemplars: PNGs for the 3 concepts of largest frequency x mean coefficient, references for every concept
    bundle = world["store"].read("exemplars", result["exemplars_sha"])
    layer = direct.layers["features.3"]
    score = (layer.frequency * layer.mean_coefficient).tolist()
    rendered = result["rendered_concepts"]["features.3"]
    assert len(rendered) == 3 and min(score[k] for k in rendered) >= max(
        score[k] for k in range(6) if k not in rendered)
    assert result["rendered_concepts"] == exemplars.rendered_concepts(bundle)
    for k in range(6):
        shown = exemplars.read_exemplars(bundle, "features.3", k)
        assert [(e["image"], e["position"]) for e in shown] == [(e.image, e.position) for e in layer.exemplars[k]]
        assert all(e["rendered"] == (k in rendered) for e in shown)
        if shown:
            assert shown[0]["image_name"] == world["names"][shown[0]["image"]]
        for e in shown if k in rendered else []:
            thumbnail, overlay = Image.open(io.BytesIO(e["thumbnail_png"])), Image.open(io.BytesIO(e["ierf_png"]))
            assert max(thumbnail.size) == 96 and overlay.size == (96, 96)
        assert all(e["thumbnail_png"] == e["ierf_png"] == b"" for e in shown if k not in rendered)
    with pytest.raises(ValueError, match="layers: features.1, features.2, features.3"):
        exemplars.read_exemplars(bundle, "features.0", 0)
    with pytest.raises(ValueError, match="out of range"):
        exemplars.read_exemplars(bundle, "features.3", 6)


def test_params_without_options_take_gigs_defaults(world, queue):
    """No option in the params: nothing is restated by the worker, gig's keyword defaults apply."""
    assert tasks_module.EXTRACT_DEFAULTS == {k: inspect.signature(gig.extract_concepts).parameters[k].default
                                             for k in tasks_module.EXTRACT_OPTIONS}
    queue.submit("extract_concepts", {"model": world["model"], "dataset": world["dataset"], "layers": LAYERS[-1:],
                                      "concept_set": "plain"})
    result = world["tasks"].extract_concepts(claim(queue))
    stored = ConceptSet.from_bytes(world["store"].read("concepts", result["concept_set_sha"]))
    direct = gig.extract_concepts(world["net"], world["batches"], LAYERS[-1:], n_exemplars=2)
    assert torch.equal(stored.vectors("features.3"), direct.vectors("features.3"))
    assert (stored.method, stored.lam) == (direct.method, direct.lam)
    defaults = tasks_module.EXTRACT_DEFAULTS
    assert result["options"] == {"method": defaults["method"], "lam": defaults["lam"], "sampling":
                                 defaults["sampling"], "pfvs_per_image": defaults["pfvs_per_image"],
                                 "seed": defaults["seed"]}
    concepts_sha = world["store"].put_bytes("concepts", direct.to_bytes())
    queue.submit("build_graph", {"model": world["model"], "dataset": world["dataset"], "layers": LAYERS[-1:],
                                 "concept_set_sha": concepts_sha})
    stored_graph = json.loads(world["store"].read("graphs", world["tasks"].build_graph(claim(queue))["graph_sha"]))
    direct_graph = gig.build_graph(world["net"], world["batches"], direct, layers=LAYERS[-1:],
                                   class_names=world["model"]["class_names"]).to_dict()
    assert {k: stored_graph["params"][k] for k in tasks_module.GRAPH_OPTIONS} == tasks_module.GRAPH_DEFAULTS
    assert_graphs_equal(stored_graph, json.loads(json.dumps(direct_graph)), rel=MERGE_REL)


def test_params_that_are_set_go_through_unchanged(world, queue):
    """Values the caller set reach gig as they are, zeros included: gig's validation answers, not a default."""
    queue.submit("build_graph", graph_params(world, steps=0))
    Worker(queue, world["tasks"].handlers()).run_one(block_ms=200)
    failed = queue.list(page_size=1)[0][0]
    assert failed.state is JobState.FAILED and failed.error["code"] == "INVALID_ARGUMENT"
    assert "steps" in failed.error["message"]


def test_build_graph_stores_what_gig_gives(world, queue):
    queue.submit("build_graph", graph_params(world))
    ctx = claim(queue)
    result = world["tasks"].build_graph(ctx)
    job = queue.get(ctx.job.id)
    assert (job.stage, job.done, job.total) == ("graph", N_IMAGES * len(LAYERS), N_IMAGES * len(LAYERS))  # × pairs
    stored = json.loads(world["store"].read("graphs", result["graph_sha"]))
    direct = gig.build_graph(world["net"], world["batches"], world["concepts"], layers=LAYERS, **GRAPH,
                             class_names=world["model"]["class_names"]).to_dict()
    assert_graphs_equal(stored, json.loads(json.dumps(direct)), rel=MERGE_REL)
    assert result["n_images"] == N_IMAGES and stored["n_images"] == N_IMAGES
    assert set(result["completeness"]) == {"features.1->features.2", "features.2->features.3", "features.3->logits"}
    assert stored["classes"] == CLASS_NAMES


def test_two_shards_and_reduce_equal_one_pass(world, queue):
    whole = queue.submit("build_graph", graph_params(world))
    sharded = queue.submit("build_graph", graph_params(world), shards=2, reduce_kind="reduce_graph")
    tasks = world["tasks"]
    worker = Worker(queue, tasks.handlers(), tasks.reducers(), name="shard-worker")
    while worker.run_one(block_ms=200):
        pass
    one, two = queue.get(whole.id), queue.get(sharded.id)
    assert one.state is JobState.SUCCEEDED and two.state is JobState.SUCCEEDED, (one.error, two.error)
    assert two.result["n_images"] == N_IMAGES
    partials = [queue.get(f"{sharded.id}.shard{i}").result for i in range(2)]
    assert [p["n_images"] for p in partials] == [6, 6]
    first = json.loads(world["store"].read("graphs", partials[1]["partial_sha"]))
    exemplar_images = {e["image"] for node in first["nodes"] for e in node.get("exemplars", [])}
    assert exemplar_images and min(exemplar_images) >= 6  # shard 1 reports global image ids
    graph = lambda job: json.loads(world["store"].read("graphs", job.result["graph_sha"]))  # noqa: E731
    # batches of 5 split differently at the shard boundary: float32 rounding differs, nothing else
    assert_graphs_equal(graph(two), graph(one), rel=1e-4, abs_tol=1e-5)


def test_audit_runs_extraction_graph_and_evaluation(world, queue):
    options = {**EXTRACT, **GRAPH, "clustering": EXTRACT["method"], "quadrature": GRAPH["method"]}
    del options["method"]
    job = queue.submit("audit", {"model": world["model"], "dataset": world["dataset"], "layers": LAYERS[1:],
                                 **options, "concept_set": "audit", "metrics": ["reconstruction", "fidelity"],
                                 "evaluation_images": 4})
    Worker(queue, world["tasks"].handlers()).run_one(block_ms=200)
    done = queue.get(job.id)
    assert done.state is JobState.SUCCEEDED, done.error
    result = done.result
    for kind, key in (("concepts", "concept_set_sha"), ("graphs", "graph_sha"), ("exemplars", "exemplars_sha")):
        assert world["store"].exists(kind, result[key])
    graph = json.loads(world["store"].read("graphs", result["graph_sha"]))
    assert graph["layers"] == [*LAYERS[1:], "logits"] and graph["n_images"] == N_IMAGES
    assert result["evidence"] == graph["evidence"]
    evidence = result["evidence"]
    assert set(evidence["completeness"]) == {"features.2->features.3", "features.3->logits"}
    assert 0 <= evidence["reconstruction"]["features.3"]["spliced_top1"] <= 1  # added by gig.evaluate
    assert set(evidence["fidelity"]) == {"features.2->features.3", "features.3->logits"}
    assert "deletion" not in evidence  # only the metrics asked for
    assert set(result["seconds"]) == {"extract", "graph", "exemplars", "evaluate"}

    # the exemplars rendered are those of the concepts the report shows first: its ranking, read from its page
    html = build_report(graph, nodes_per_layer=3)
    payload = json.loads(re.search(r'id="report-data">(.*?)</script>', html, re.S).group(1))
    for layer in LAYERS[1:]:
        nodes = [n for n in payload["nodes"] if n["layer"] == layer]
        first = sorted(nodes, key=lambda n: -n["relevance"])[:3]  # report.js: stable sort by relevance
        assert result["rendered_concepts"][layer] == sorted(int(n["id"].split(":")[1]) for n in first)
    assert result["rendered_concepts"] == most_relevant(graph, 3)
    bundle = world["store"].read("exemplars", result["exemplars_sha"])
    assert exemplars.rendered_concepts(bundle) == result["rendered_concepts"]


def test_render_exemplars_adds_the_missing_concepts_and_keeps_the_rest(world, queue):
    queue.submit("extract_concepts", {"model": world["model"], "dataset": world["dataset"], "layers": LAYERS,
                                      **EXTRACT, "concept_set": "cs"})
    made = world["tasks"].extract_concepts(claim(queue))
    before = world["store"].read("exemplars", made["exemplars_sha"])
    had = made["rendered_concepts"]["features.2"]
    wanted = [k for k in range(6) if k not in had][:2] + had[:1]
    queue.submit("render_exemplars", {"model": world["model"], "dataset": world["dataset"],
                                      "concept_set": "cs", "concept_set_sha": made["concept_set_sha"],
                                      "exemplars_sha": made["exemplars_sha"], "layer": "features.2",
                                      "concepts": wanted})
    result = world["tasks"].render_exemplars(claim(queue))
    after = world["store"].read("exemplars", result["exemplars_sha"])
    rendered = exemplars.rendered_concepts(after)
    assert rendered["features.2"] == sorted({*had, *wanted}) and result["rendered_concepts"] == rendered
    assert {k: v for k, v in rendered.items() if k != "features.2"} == \
        {k: v for k, v in made["rendered_concepts"].items() if k != "features.2"}
    for k in range(6):  # references unchanged; PNGs rendered before are kept byte for byte
        old, new = (exemplars.read_exemplars(b, "features.2", k) for b in (before, after))
        assert [(e["image"], e["position"], e["coefficient"]) for e in old] == \
            [(e["image"], e["position"], e["coefficient"]) for e in new]
        if k in had:
            assert old == new
    # the same PNGs as the rendering of an extraction (same iERF code path)
    fresh = Tasks(world["store"], "cpu", batch_size=BATCH, n_exemplars=2, exemplar_concepts=6)
    queue.submit("extract_concepts", {"model": world["model"], "dataset": world["dataset"], "layers": LAYERS,
                                      **EXTRACT, "concept_set": "all"})
    everything = world["store"].read("exemplars", fresh.extract_concepts(claim(queue))["exemplars_sha"])
    for k in wanted:
        assert exemplars.read_exemplars(after, "features.2", k) == exemplars.read_exemplars(everything, "features.2", k)
    # nothing missing: no rendering, the same bundle
    queue.submit("render_exemplars", {"model": world["model"], "dataset": world["dataset"], "concept_set": "cs",
                                      "concept_set_sha": made["concept_set_sha"],
                                      "exemplars_sha": result["exemplars_sha"], "layer": "features.2",
                                      "concepts": wanted})
    assert world["tasks"].render_exemplars(claim(queue))["exemplars_sha"] == result["exemplars_sha"]
    queue.submit("render_exemplars", {"model": world["model"], "dataset": world["dataset"], "concept_set": "cs",
                                      "concept_set_sha": made["concept_set_sha"],
                                      "exemplars_sha": result["exemplars_sha"], "layer": "features.2",
                                      "concepts": [6]})
    with pytest.raises(ValueError, match=r"concepts must lie in 0\.\.5"):
        world["tasks"].render_exemplars(claim(queue))


def test_remote_store_datasets_are_read_through_a_temporary_copy(world):
    store = ArtifactStore("memory://gigaudit-tasks-test")
    data = world["store"].read("datasets", world["dataset"]["sha256"])
    sha = store.put_bytes("datasets", data)
    with Tasks(store)._dataset_path(sha) as path:
        assert open(path, "rb").read() == data
    assert not os.path.exists(path)
    store.delete("datasets", sha)


def test_noop_stops_when_cancelled(world, queue):
    job = queue.submit("noop", {"sleep": 30})
    ctx = claim(queue)
    queue.cancel(job.id)
    start = time.perf_counter()
    with pytest.raises(JobCancelled):
        world["tasks"].noop(ctx)
    assert time.perf_counter() - start < 1.0


def test_bad_params_fail_as_invalid_argument(world, queue):
    job = queue.submit("build_graph", graph_params(world, layers=["features.9"]))
    Worker(queue, world["tasks"].handlers()).run_one(block_ms=200)
    failed = queue.get(job.id)
    assert failed.state is JobState.FAILED and failed.error["code"] == "INVALID_ARGUMENT"
    assert "features.9" in failed.error["message"]


@pytest.mark.slow
def test_worker_process_runs_jobs_and_stops_on_sigterm(world, queue, redis_url):
    worker = subprocess.Popen([sys.executable, "-m", "gigaudit_server.worker.main", "--redis-url", redis_url,
                               "--store", world["store"].url, "--name", "sub-worker", "--threads", "1"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        job = queue.submit("noop", {"sleep": 0.2})
        done = queue.wait(job.id, timeout=60)
        assert done.state is JobState.SUCCEEDED and done.worker == "sub-worker"
    finally:
        worker.send_signal(signal.SIGTERM)
        output = worker.communicate(timeout=30)[0]
    assert worker.returncode == 0, output


def test_the_api_passes_on_only_the_options_a_caller_set(redis_client, redis_url, tmp_path):
    """The servicer adds no defaults of its own: unset (proto3 zero) options are absent from the job's params."""
    import api_harness as h
    from gigaudit.v1 import audit_service_pb2 as audit_pb
    from gigaudit.v1 import audit_service_pb2_grpc as audit_grpc
    from gigaudit_server.storage.catalog import Catalog

    store = f"file://{tmp_path}/store"
    server = h.start_server(redis_url, store)
    try:
        backend = server.backend
        Catalog(redis_client).create("models", "m", {
            "name": "models/m", "architecture": "partsnet", "num_classes": 6, "class_names": [], "input_size": 32,
            "mean": [0.0] * 3, "std": [1.0] * 3, "weights_sha256": "0" * 64, "default_layers": ["features.3"],
            "layers": [{"name": "features.3", "is_cut": True, "reason": "", "type": "Sequential"}]})
        Catalog(redis_client).create("datasets", "d", {"name": "datasets/d", "sha256": "1" * 64, "format": "tar",
                                                       "n_images": 12, "class_names": []})
        audits = audit_grpc.AuditServiceStub(h.channel(server))
        plain = audits.Audit(audit_pb.AuditRequest(parent="models/m", audit_id="plain", dataset="datasets/d"))
        chosen = audits.Audit(audit_pb.AuditRequest(
            parent="models/m", audit_id="chosen", dataset="datasets/d", evaluation_images=3,
            concept_options=audit_pb.ConceptOptions(lam=0.0, pfvs_per_image=2, method="kmeans"),
            graph_options=audit_pb.GraphOptions(steps=8, path="activation")))
        options = {*EXTRACT, *GRAPH, "clustering", "quadrature", "metrics", "evaluation_images"}
        params = backend.queue.get(plain.name.split("/")[1]).params
        assert not options & set(params), params
        params = backend.queue.get(chosen.name.split("/")[1]).params
        assert {k: params[k] for k in options & set(params)} == {
            "lam": 0.0, "pfvs_per_image": 2, "clustering": "kmeans", "steps": 8, "path": "activation",
            "evaluation_images": 3}
    finally:
        server.stop(0)
