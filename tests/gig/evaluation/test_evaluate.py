"""gig.evaluate end to end: the PartsNet demand of issue 2, every metric as JSON, evidence, and bad input."""
import json

import pytest
import torch

import gig
from gig.build import build_graph
from gig.concepts import ConceptSet
from gig.concepts.extract import extract_concepts
from gig.synthetic import make_parts_dataset
from models import tiny_cnn

PARTS_LAYERS = ["features.1", "features.2", "features.3"]


@pytest.fixture(scope="module")
def parts_setup(parts_net):
    model, _ = parts_net
    images, labels, _ = make_parts_dataset(176, seed=5)
    data = [(images[i:i + 32], labels[i:i + 32]) for i in range(0, 128, 32)]
    concepts = extract_concepts(model, data, PARTS_LAYERS, n_concepts=32, pfvs_per_image=4, lam=0.1, seed=0,
                                n_exemplars=0)
    return model, data, concepts, [(images[128:], labels[128:])]


@pytest.mark.slow
def test_gig_order_beats_random_and_abs_coefficient_on_parts_net(parts_setup):
    model, _, concepts, held_out = parts_setup
    result = gig.evaluate(model, held_out, concepts, metrics=("deletion", "target_deletion"), max_images=48,
                          orders=("gig", "random", "abs_coefficient"))
    deletion = result["deletion"]
    assert list(deletion) == ["features.1->features.2", "features.2->features.3", "features.3->logits"]
    for pair, report in deletion.items():
        assert report["n_rows"] >= 40, pair
        assert report["gig_beats"]["random"] == {"deletion": True, "insertion": True}, pair
    # The demand, on the pair with the clearest structure (margins measured: ~0.14 vs 0.18 deletion AUC).
    assert deletion["features.2->features.3"]["gig_beats"]["abs_coefficient"] == {"deletion": True, "insertion": True}
    assert deletion["features.3->logits"]["readout"] == "probability"  # C-Del / C-Ins towards the class
    # Following GIG's own target g (what it attributes), GIG beats random and |u| on every pair, both ways
    # (measured deletion AUC gig / |u|: 0.85 / 1.07, 0.09 / 0.16, 0.01 / 0.10).
    target = result["target_deletion"]
    assert list(target) == list(deletion)
    for pair, report in target.items():
        assert report["readout"] == "target", pair
        for baseline in ("random", "abs_coefficient"):
            assert report["gig_beats"][baseline] == {"deletion": True, "insertion": True}, (pair, baseline)


@pytest.mark.slow
def test_stability_and_sanity_on_parts_net(parts_setup):
    model, data, concepts, held_out = parts_setup
    result = gig.evaluate(model, data, concepts, metrics=("stability", "sanity"), max_images=16, steps=8, top_t=2)
    seeds = result["stability"]["seeds"]
    assert set(seeds) == set(PARTS_LAYERS)
    assert all(0.5 < seeds[layer]["mean_cosine"] <= 1 + 1e-9 for layer in PARTS_LAYERS)
    noise = result["stability"]["noise"]
    assert 0 < noise["top_k_overlap"] <= 1 and noise["noise_std"] == 0.05
    sanity = result["sanity"]
    # A trained model's graph is robust to slight noise, and a randomised model's graph is not the same graph.
    assert sanity["top_k_overlap"] < noise["top_k_overlap"]
    assert sanity["rank_correlation"] < 0.5 < noise["rank_correlation"]


def _tiny_setup():
    model = tiny_cnn("relu")
    generator = torch.Generator().manual_seed(0)
    concepts = ConceptSet.from_vectors({"block2": torch.randn(12, 8, generator=generator),
                                        "block3": torch.randn(12, 16, generator=generator)}, lam=0.05)
    images = torch.rand(6, 3, 8, 8, generator=generator)
    return model, concepts, [(images[:4], torch.tensor([0, 1, 2, 3])), (images[4:], torch.tensor([4, 0]))]


def test_every_metric_is_json_and_updates_the_graph_evidence():
    model, concepts, data = _tiny_setup()
    graph = build_graph(model, data, concepts, steps=4, top_t=2)
    dataset_delta = graph.evidence["completeness"]["block2->block3"]["dataset_delta"]
    calls = []
    result = gig.evaluate(model, data, concepts, graph=graph, metrics=gig.evaluation.METRICS, steps=4, max_images=5,
                          top_t=2, versus_steps=(2,), n_points=4, n_subsets=4, top_k=5,
                          progress=lambda *args: calls.append(args))
    json.dumps(result, allow_nan=False)
    json.dumps(graph.to_dict(), allow_nan=False)
    assert result["images"] == 5
    assert set(result) == {"images", *gig.evaluation.METRICS}
    n = len(gig.evaluation.METRICS)
    assert calls[0] == ("evaluate", 0, n) and calls[-1] == ("evaluate", n, n)
    assert "given as vectors" in result["stability"]["seeds"]["skipped"]
    evidence = graph.evidence
    # The graph's own dataset-wide figures stay; the evaluation adds to them.
    assert evidence["completeness"]["block2->block3"]["dataset_delta"] == dataset_delta
    assert [row["steps"] for row in evidence["completeness"]["block2->block3"]["versus_steps"]] == [2, 4]
    assert "spliced_top1" in evidence["reconstruction"]["block3"]
    assert evidence["deletion"] == result["deletion"] and evidence["sanity"] == result["sanity"]
    assert set(result["deletion"]) == {"block2->block3", "block3->logits"}


@pytest.mark.parametrize("kwargs, message", [
    ({"metrics": ("completeness", "accuracy")}, "valid metrics are: completeness, reconstruction"),
    ({"metrics": ()}, "no metrics given"),
    ({"layers": ["block1"]}, r"no concepts for \['block1'\]"),
    ({"max_images": 0}, "max_images must be a positive integer"),
    ({"orders": ("gig", "saliency")}, "valid orders are"),
    ({"method": "simpson"}, "valid methods are"),
    ({"class_target": "margin"}, "valid class targets are: logit, contrastive"),
    ({"steps": 0}, "steps must be a positive integer"),
])
def test_bad_arguments_are_value_errors(kwargs, message):
    model, concepts, data = _tiny_setup()
    with pytest.raises(ValueError, match=message):
        gig.evaluate(model, data, concepts, **kwargs)


def test_class_target_reaches_every_metric_at_the_logits():
    model, concepts, data = _tiny_setup()
    metrics = ("completeness", "target_deletion", "sanity")
    runs = {name: gig.evaluate(model, data, concepts, metrics=metrics, steps=4, max_images=5, top_t=2,
                               versus_steps=(), n_points=4, top_k=5, class_target=name)
            for name in ("logit", "contrastive")}
    for name, result in runs.items():
        assert result["completeness"]["block3->logits"]["method"] == "gausslegendre"
        assert result["completeness"]["block3->logits"]["dataset_delta"] < 0.05, name
    # the same pairs, other class targets: the logits pair differs, the concept pair does not
    assert runs["logit"]["completeness"]["block2->block3"] == runs["contrastive"]["completeness"]["block2->block3"]
    curves = [runs[n]["target_deletion"]["block3->logits"]["orders"]["gig"]["deletion_curve"] for n in runs]
    assert curves[0] != curves[1]


def test_bad_data_is_a_value_error():
    model, concepts, _ = _tiny_setup()
    with pytest.raises(ValueError, match="no images"):
        gig.evaluate(model, [], concepts)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        gig.evaluate(model, [torch.rand(2, 8, 8)], concepts)
    with pytest.raises(ValueError, match="ConceptSet"):
        gig.evaluate(model, [torch.rand(2, 3, 8, 8)], {"block2": torch.eye(8)})
