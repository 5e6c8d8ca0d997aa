"""gig.explain: the analytic answer on a linear network, completeness on PartsNet, agreement with the concept graph
built from the same single image, the graph's settings and labels, validation."""
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

import gig
from gig.concepts import ConceptSet
from gig.concepts.extract import extract_concepts
from gig.synthetic import CLASS_NAMES, load_parts_net, make_parts_dataset

PARTS_LAYERS = ["features.2", "features.3"]


# ---------------------------------------------------------------------------------------------- linear network
def linear_net(seed=0) -> nn.Module:
    """x (3×2×2 = 12 values) → lin1 (4) → lin2 (3) → head (3 classes): every segment is affine."""
    torch.manual_seed(seed)
    return nn.Sequential(OrderedDict(flat=nn.Flatten(), lin1=nn.Linear(12, 4), lin2=nn.Linear(4, 3),
                                     head=nn.Linear(3, 3))).double().eval()


def test_linear_network_gives_the_analytic_explanation():
    model = linear_net()
    g = torch.Generator().manual_seed(3)
    v1, v2 = torch.randn(4, 4, generator=g, dtype=torch.double), torch.randn(3, 3, generator=g, dtype=torch.double)
    concepts = ConceptSet.from_vectors({"lin1": v1, "lin2": v2}, lam=0.0)  # square, invertible: exact coefficients
    x = torch.randn(3, 2, 2, generator=g, dtype=torch.double)
    (w1, b1), (w2, b2), (wh, bh) = [(m.weight.detach(), m.bias.detach()) for m in (model.lin1, model.lin2, model.head)]
    x1 = w1 @ x.reshape(12) + b1
    x2 = w2 @ x1 + b2
    logits = wh @ x2 + bh
    u1, u2 = torch.linalg.solve(v1.T, x1), torch.linalg.solve(v2.T, x2)  # x = Vᵀu
    predicted = int(logits.argmax())
    target = (predicted + 1) % 3  # explain another class than the prediction
    c = torch.full((3,), -0.5, dtype=torch.double)
    c[target] = 1.0  # the contrastive class target
    # lin2 -> logits: the gradient is constant, GIG(q) = u_q <v_q, Wᵀc>
    a2 = u2 * (v2 @ (wh.T @ c))
    # lin1 -> lin2: targets r with A_r != 0, g_r = [u2_r > 0] <X2, v̂_r>, mixed with w_r = A_r / Σ|A|
    units = v2 / v2.norm(dim=1, keepdim=True)
    per_target = u1[:, None] * (v1 @ w2.T @ units.T) * (u2 > 0).double()[None, :]
    order = torch.argsort(a2.abs(), descending=True)
    weights = a2[order] / a2.abs().sum()
    a1 = per_target[:, order] @ weights

    out = gig.explain(model, x, concepts, target=target, top_k=2, steps=4)
    assert out["target_class"] == target and out["predicted_class"] == predicted
    np.testing.assert_allclose(out["probabilities"], logits.softmax(0).tolist(), rtol=1e-12)
    first, last = out["segments"]
    assert (first["source"], first["target"], last["source"], last["target"]) == ("lin1", "lin2", "lin2", "logits")
    np.testing.assert_allclose(last["attributions"], a2.tolist(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(first["attributions"], a1.tolist(), rtol=1e-9, atol=1e-12)
    assert [t["index"] for t in first["targets"]] == order.tolist()
    np.testing.assert_allclose([t["weight"] for t in first["targets"]], weights.tolist(), rtol=1e-9)
    np.testing.assert_allclose(first["per_target"], per_target[:, order].tolist(), rtol=1e-9, atol=1e-12)
    # completeness is exact on affine segments with an exact decomposition
    for segment in out["segments"]:
        assert segment["completeness"]["relative"] < 1e-9
    np.testing.assert_allclose(last["completeness"]["target_difference"], float(c @ wh @ x2), rtol=1e-9)
    # top_k by |A_q|, their coefficients and iERF maps |x ⊙ ∇_x <X^a, v_q>| (summed over colours, normalised)
    assert [c_["concept"] for c_ in first["contributions"]] == torch.argsort(a1.abs(), descending=True)[:2].tolist()
    for contribution in first["contributions"]:
        q = contribution["concept"]
        assert contribution["node"] == f"lin1:{q}" and contribution["coefficient"] == pytest.approx(float(u1[q]))
        expected = (x * (w1.T @ v1[q]).reshape(3, 2, 2)).abs().sum(0)
        np.testing.assert_allclose(contribution["ierf"], (expected / expected.sum()).numpy(), rtol=1e-9)
    for contribution in last["contributions"]:
        q = contribution["concept"]
        expected = (x * (w1.T @ w2.T @ v2[q]).reshape(3, 2, 2)).abs().sum(0)
        np.testing.assert_allclose(contribution["ierf"], (expected / expected.sum()).numpy(), rtol=1e-9)
        assert contribution["share"] == pytest.approx(float(a2[q] / a2.abs().sum()))


# ---------------------------------------------------------------------------------------------- PartsNet
@pytest.fixture(scope="module")
def parts():
    torch.set_num_threads(1)
    model, _ = load_parts_net()
    images, labels, _ = make_parts_dataset(24, seed=11)
    concepts = extract_concepts(model, [images[:12], images[12:]], PARTS_LAYERS, n_concepts=6, lam=0.1,
                                nonneg=True, seed=0)
    return model, images, labels, concepts


def test_completeness_holds_on_partsnet(parts):
    model, images, labels, concepts = parts
    for i in range(3):
        out = gig.explain(model, images[i], concepts, steps=64, class_names=CLASS_NAMES)
        assert out["predicted_label"] == CLASS_NAMES[out["predicted_class"]] == CLASS_NAMES[int(labels[i])]
        assert sum(out["probabilities"]) == pytest.approx(1.0)
        assert list(out["completeness"]) == ["features.2->features.3", "features.3->logits"]
        for segment in out["segments"]:
            figures = segment["completeness"]
            assert abs(figures["target_difference"]) > 1e-3  # not vacuous
            assert figures["relative"] < 0.02, (i, segment["source"], figures)
            assert figures["attribution_sum"] == pytest.approx(sum(segment["attributions"]))
            assert len(segment["contributions"]) == 5
            for contribution in segment["contributions"]:
                assert contribution["ierf"].shape == (32, 32) and contribution["ierf"].sum() == pytest.approx(1.0)
            shares = [abs(c["share"]) for c in segment["contributions"]]
            assert shares == sorted(shares, reverse=True) and sum(shares) <= 1 + 1e-6


def test_explanation_agrees_with_the_graph_of_that_single_image(parts):
    model, images, _, concepts = parts
    image = images[4]
    graph = gig.build_graph(model, image.unsqueeze(0), concepts, steps=16, top_t=3, class_names=CLASS_NAMES)
    out = gig.explain(model, image, concepts, graph, top_k=None)
    assert out["params"]["steps"] == 16 and out["target_label"] == out["predicted_label"]
    first, last = out["segments"]
    y = out["target_class"]
    edges = {(e["source"], e["target"]): e["sum"] for e in graph.to_dict()["edges"]}
    # last layer -> logits: the image's class edges are the attributions themselves
    for q, value in enumerate(last["attributions"]):
        assert edges.get((f"features.3:{q}", f"logits:{y}"), 0.0) == pytest.approx(value, rel=1e-5, abs=1e-7)
    ranked = [e["source"] for e in graph.incoming(f"logits:{y}")]
    assert ranked and [c["node"] for c in last["contributions"]][:len(ranked)] == ranked  # zero edges: not stored
    # features.2 -> features.3: GIG(q -> r) for every target the graph kept that the explanation also follows
    columns = {t["node"]: i for i, t in enumerate(first["targets"])}
    shared = {target for _, target in edges if target.startswith("features.3:")} & set(columns)
    assert shared, "the graph's targets and the explanation's do not meet"
    for target in shared:
        for q, row in enumerate(first["per_target"]):
            assert edges.get((f"features.2:{q}", target), 0.0) == pytest.approx(row[columns[target]], rel=1e-5,
                                                                                abs=1e-7)
    # the same settings given directly give the same explanation
    again = gig.explain(model, image, concepts, steps=16, top_k=None)
    np.testing.assert_allclose(again["segments"][0]["attributions"], first["attributions"], rtol=1e-6)


def test_graph_labels_and_class_names_name_the_contributions(parts):
    model, images, _, concepts = parts
    graph = gig.build_graph(model, images[:2], concepts, steps=8, top_t=2, class_names=CLASS_NAMES).to_dict()
    for node in graph["nodes"]:
        if node["layer"] == "features.3":
            node["label"] = f"probe-{node['index']}"
    out = gig.explain(model, images[0], concepts, graph, target=CLASS_NAMES[2], top_k=2)
    assert out["target_class"] == 2 and out["target_label"] == CLASS_NAMES[2]
    assert [c["label"] for c in out["segments"][1]["contributions"]] == \
        [f"probe-{c['concept']}" for c in out["segments"][1]["contributions"]]
    assert all(c["label"] is None for c in out["segments"][0]["contributions"])
    assert out["segments"][0]["targets"][0]["label"].startswith("probe-")


@pytest.mark.parametrize("kwargs, match", [
    ({"target": 6}, r"target must be a class index in 0\.\.5"),
    ({"target": "zebra"}, r"target must be a class index"),
    ({"top_k": 0}, r"top_k must be a positive integer"),
    ({"layers": ["features.0"]}, r"no concepts for \['features.0'\]"),
    ({"steps": 0}, r"steps must be a positive integer"),
    ({"path": "straight"}, r"unknown path"),
])
def test_bad_arguments_are_refused(parts, kwargs, match):
    model, images, _, concepts = parts
    with pytest.raises(ValueError, match=match):
        gig.explain(model, images[0], concepts, **kwargs)


def test_one_image_only(parts):
    model, images, _, concepts = parts
    with pytest.raises(ValueError, match="explain takes one image"):
        gig.explain(model, images[:2], concepts)
    with pytest.raises(ValueError, match="graph must be a ConceptGraph"):
        gig.explain(model, images[0], concepts, graph="graph.json")
