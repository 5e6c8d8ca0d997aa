"""ExplainImage end to end: real gRPC, Redis and worker; the service's explanation equals gig.explain on the same
image, concepts and graph; overlays are WebP; the client method; bad input (undecodable or empty image, a graph that
is not ACTIVE, top_k or target class out of range)."""
import io
import json

import grpc
from google.protobuf import json_format
import numpy as np
import pytest
import torch
from PIL import Image

import api_harness as h
import gig
from api_harness import server, store  # noqa: F401  (fixtures)
from gig.concepts import ConceptSet
from gig.synthetic import CLASS_NAMES, load_parts_net, make_parts_dataset
from gigaudit import AuditClient
from gigaudit.cli import main
from gigaudit.report import build_report, report_data
from gigaudit.v1 import audit_service_pb2 as audit_pb
from gigaudit.v1 import audit_service_pb2_grpc as audit_grpc
from gigaudit.v1 import dataset_service_pb2_grpc as dataset_grpc

LAYERS = ["features.2", "features.3"]
CLASSES = [f"class{c}" for c in range(len(CLASS_NAMES))]  # the folders of api_harness.parts_tar


def png_of(image: torch.Tensor) -> tuple[bytes, torch.Tensor]:
    """PNG bytes of a (3, H, W) image in [0, 1], and the tensor the worker decodes from them (mean 0, std 1)."""
    pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue(), torch.from_numpy(pixels).permute(2, 0, 1).float().div(255)


def stored(tmp_path, kind: str) -> bytes:
    (name,) = h.stored_files(tmp_path, kind)
    return next((tmp_path / "store" / kind).rglob(name)).read_bytes()


@pytest.mark.slow
def test_explain_image_through_the_service(server, redis_url, store, tmp_path, capsys):
    channel = h.channel(server)
    audits = audit_grpc.AuditServiceStub(channel)
    worker, stop = h.start_worker(redis_url, store)
    try:
        h.registered_model(channel, "parts", h.partsnet_bytes(), class_names=CLASSES)
        dataset_grpc.DatasetServiceStub(channel).UploadDataset(h.dataset_requests("shapes", h.parts_tar(12)))
        h.wait_operation(channel, audits.ExtractConcepts(audit_pb.ExtractConceptsRequest(
            parent="models/parts", concept_set_id="cs", dataset="datasets/shapes", layers=LAYERS,
            options=audit_pb.ConceptOptions(n_concepts=6, seed=1))).name)
        built = h.wait_operation(channel, audits.BuildConceptGraph(audit_pb.BuildConceptGraphRequest(
            parent="models/parts", concept_graph_id="g", concept_set="models/parts/conceptSets/cs",
            dataset="datasets/shapes", options=audit_pb.GraphOptions(steps=16, top_t=3))).name)
        assert not built.HasField("error"), built.error
        graph_name = "models/parts/conceptGraphs/g"

        images, labels, _ = make_parts_dataset(4, seed=5)
        png, decoded = png_of(images[1])
        request = audit_pb.ExplainImageRequest(concept_graph=graph_name, image=png, explain_predicted=True, top_k=3,
                                               request_id="explain-1")
        operation = audits.ExplainImage(request)
        assert audits.ExplainImage(request).name == operation.name  # a retry starts no second job
        done = h.wait_operation(channel, operation.name)
        assert not done.HasField("error"), done.error
        answer = audit_pb.ImageExplanation()
        done.response.Unpack(answer)

        # the same explanation computed here from the stored concept set and graph
        model, _ = load_parts_net()
        concepts = ConceptSet.from_bytes(stored(tmp_path, "concepts"))
        graph = json.loads(stored(tmp_path, "graphs"))
        local = gig.explain(model, decoded, concepts, graph, top_k=3)
        assert answer.predicted_class == local["predicted_class"] == int(labels[1])
        assert answer.predicted_label == CLASSES[answer.predicted_class]
        assert answer.target_class == answer.predicted_class
        np.testing.assert_allclose(answer.probabilities, local["probabilities"], rtol=1e-5)
        assert [(layer.source, layer.target) for layer in answer.layers] == [
            ("features.2", "features.3"), ("features.3", "logits")]
        for layer, segment in zip(answer.layers, local["segments"]):
            assert [c.node_id for c in layer.contributions] == [c["node"] for c in segment["contributions"]]
            np.testing.assert_allclose([c.attribution for c in layer.contributions],
                                       [c["attribution"] for c in segment["contributions"]], rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose([c.coefficient for c in layer.contributions],
                                       [c["coefficient"] for c in segment["contributions"]], rtol=1e-4, atol=1e-6)
            for c in layer.contributions:
                assert c.ierf_overlay[:4] == b"RIFF" and c.ierf_overlay[8:12] == b"WEBP"
                assert Image.open(io.BytesIO(c.ierf_overlay)).size == (160, 160)
        completeness = json_format.MessageToDict(answer.completeness)
        assert set(completeness) == {"features.2->features.3", "features.3->logits"}
        assert all(v["relative"] < 0.05 and v["steps"] == 16 for v in completeness.values())

        # the client: a class by name, overlays and the table
        image_file = tmp_path / "shape.png"
        image_file.write_bytes(png)
        other = CLASSES[(answer.predicted_class + 1) % len(CLASSES)]
        with AuditClient(f"127.0.0.1:{server.port}", timeout=60) as client:
            explanation = client.explain_image("parts/g", image_file, target=other, top_k=2, timeout=120)
            with pytest.raises(ValueError, match="unknown class 'zebra'"):
                client.explain_image(graph_name, image_file, target="zebra")
            view = client.get_graph(graph_name)
        assert explanation["target_label"] == other and explanation["image"] == "shape.png"
        assert [len(layer["contributions"]) for layer in explanation["layers"]] == [2, 2]
        local_other = gig.explain(model, decoded, concepts, graph, target=CLASSES.index(other), top_k=2)
        assert [c["node_id"] for c in explanation["layers"][1]["contributions"]] == \
            [c["node"] for c in local_other["segments"][1]["contributions"]]

        # the report shows the explanation, overlays inline, within its budget
        html = build_report(view, explanations=[explanation], max_bytes=2_000_000)
        assert '<section id="explanations">' in html and html.count('src="data:image/webp;base64,') >= 4
        assert f"explaining {other} (" in html and report_data(html)["nodes"]
        # the CLI: JSON on stdout, overlays and explanation.json in --out; a table
        out = tmp_path / "explained"
        connection = ["--server", f"127.0.0.1:{server.port}"]
        assert main(["explain", str(image_file), "--graph", graph_name, "--top-k", "2", "-o", "json", "--out",
                     str(out), *connection]) == 0
        printed = json.loads(capsys.readouterr().out)
        files = [c["ierf_overlay"] for layer in printed["layers"] for c in layer["contributions"]]
        assert sorted(files) == sorted(p.name for p in out.glob("*.webp")) and len(files) == 4
        assert json.loads((out / "explanation.json").read_text()) == printed
        assert printed["target_class"] == printed["predicted_class"] == answer.predicted_class
        assert main(["explain", str(image_file), "--graph", "parts/g", "--target", "0", "-o", "table",
                     *connection]) == 0
        text = capsys.readouterr().out
        assert "explaining class0 (0)" in text and "features.3->logits  completeness" in text
        assert main(["explain", str(image_file), "--graph", "parts/g", "--top-k", "65", *connection]) == 2
        assert "--top-k must be between 1 and 64" in capsys.readouterr().err

        # bad input
        for bad, field in [(audit_pb.ExplainImageRequest(concept_graph=graph_name, image=b"not an image"), "image"),
                           (audit_pb.ExplainImageRequest(concept_graph=graph_name), "image"),
                           (audit_pb.ExplainImageRequest(concept_graph=graph_name, image=png, top_k=65), "top_k"),
                           (audit_pb.ExplainImageRequest(concept_graph=graph_name, image=png, top_k=-1), "top_k"),
                           (audit_pb.ExplainImageRequest(concept_graph=graph_name, image=png, target_class=6),
                            "target_class")]:
            error = h.refused(lambda: audits.ExplainImage(bad), grpc.StatusCode.INVALID_ARGUMENT)
            violations = h.details_of(error)["BadRequest"].field_violations
            assert [v.field for v in violations] == [field], error.details()
            assert str(tmp_path) not in error.details()  # no server paths
        h.refused(lambda: audits.ExplainImage(audit_pb.ExplainImageRequest(
            concept_graph="models/parts/conceptGraphs/none", image=png)), grpc.StatusCode.NOT_FOUND)
    finally:
        stop.set()
        worker.join(10)

    # no worker now: a graph being built is not ACTIVE yet
    audits.BuildConceptGraph(audit_pb.BuildConceptGraphRequest(
        parent="models/parts", concept_graph_id="pending", concept_set="models/parts/conceptSets/cs",
        dataset="datasets/shapes"))
    error = h.refused(lambda: audits.ExplainImage(audit_pb.ExplainImageRequest(
        concept_graph="models/parts/conceptGraphs/pending", image=png)), grpc.StatusCode.FAILED_PRECONDITION)
    assert "CREATING, not ACTIVE" in error.details()
    channel.close()


def test_image_checks_of_the_api():
    """Size first (16 MiB), then decodability; a good image becomes a one-image zip the dataset reader accepts."""
    from gigaudit_server.api import audits, errors
    from gigaudit_server.storage.datasets.archives import Archive, DatasetLimits

    with pytest.raises(errors.ApiError) as info:
        audits._image_archive(b"\x89PNG" + b"\0" * (16 * 1024**2))
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and "at most 16777216" in info.value.message
    with pytest.raises(errors.ApiError, match="cannot be read"):
        audits._image_archive(b"GIF89a" + b"\0" * 64)
    png, _ = png_of(torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0)))
    archive = audits._image_archive(png)
    assert archive == audits._image_archive(png)  # deterministic: one stored artifact per image
    with Archive(io.BytesIO(archive), DatasetLimits()) as opened:
        (member,) = list(opened.images())
        assert member.name == "image.png" and member.load().read() == png
