"""Completeness per layer pair, and versus the number of steps."""
import torch

from gig.concepts import ConceptSet
from gig.evaluation.completeness import completeness
from gig.evaluation.pairs import analyse
from models import tiny_cnn

LAYERS = ["block2", "block3"]


def test_completeness_delta_falls_with_steps_on_a_smooth_model():
    # float64 and few steps: Gauss-Legendre is so accurate on this smooth model that from 3 steps on the error is
    # rounding (float32 rounding from 2 steps on), which no longer falls with steps.
    model = tiny_cnn("gelu").double()
    images = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    generator = torch.Generator().manual_seed(1)
    concepts = ConceptSet.from_vectors({"block2": torch.randn(12, 8, generator=generator, dtype=torch.float64),
                                        "block3": torch.randn(12, 16, generator=generator, dtype=torch.float64)})
    batch = analyse(model, concepts, images, LAYERS)
    report = completeness(model, batch, [("block2", "block3"), ("block3", "logits")], steps=2, versus_steps=(1, 3),
                          top_t=3)
    pair = report["block2->block3"]
    assert [row["steps"] for row in pair["versus_steps"]] == [1, 2, 3]
    assert pair["steps"] == 2 and pair["n_targets"] == 9
    deltas = [row["dataset_delta"] for row in pair["versus_steps"]]
    assert deltas[2] < deltas[1] < deltas[0] and deltas[2] < 1e-3
    assert report["block3->logits"]["n_targets"] == 3
    assert report["block3->logits"]["versus_steps"][-1]["dataset_delta"] < 1e-3


def test_report_names_the_rule_and_uses_its_default_steps():
    from models import small_vit

    vit = small_vit().eval()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    layers = ["encoder.layers.encoder_layer_1", "encoder.layers.encoder_layer_2"]
    generator = torch.Generator().manual_seed(1)
    concepts = ConceptSet.from_vectors({layer: torch.randn(24, 16, generator=generator) for layer in layers})
    batch = analyse(vit, concepts, images, layers)
    report = completeness(vit, batch, [(layers[0], layers[1]), (layers[1], "logits")], versus_steps=(16,), top_t=2)
    for pair, figures in report.items():
        assert figures["method"] == "loglegendre" and figures["steps"] == 32, pair  # LayerNorm segments
        assert figures["dataset_delta"] <= 1e-2, pair
        assert [row["steps"] for row in figures["versus_steps"]] == [16, 32]
    cnn = tiny_cnn("gelu")
    cnn_concepts = ConceptSet.from_vectors({"block2": torch.randn(12, 8, generator=generator),
                                            "block3": torch.randn(12, 16, generator=generator)})
    cnn_batch = analyse(cnn, cnn_concepts, torch.rand(2, 3, 8, 8, generator=generator), LAYERS)
    cnn_report = completeness(cnn, cnn_batch, [("block3", "logits")], versus_steps=(), top_t=2)
    assert cnn_report["block3->logits"]["method"] == "gausslegendre" and cnn_report["block3->logits"]["steps"] == 16


def test_contrastive_class_target_is_complete_and_differs_from_the_logit(linear_net, linear_concepts):
    images = torch.rand(4, 3, 4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    batch = analyse(linear_net, linear_concepts, images, ["features.0", "features.1"])
    pairs = [("features.1", "logits")]
    plain = completeness(linear_net, batch, pairs, steps=2, versus_steps=(), class_target="logit")["features.1->logits"]
    contrast = completeness(linear_net, batch, pairs, steps=2, versus_steps=(),
                            class_target="contrastive")["features.1->logits"]
    assert plain["dataset_delta"] < 1e-10 and contrast["dataset_delta"] < 1e-10  # affine segment: exact
    from gig.evaluation.pairs import pair_problem

    g_plain = pair_problem(linear_net, batch, "features.1", "logits", readout="target",
                           class_target="logit").full_values()[1]
    g_contrast = pair_problem(linear_net, batch, "features.1", "logits", readout="target",
                              class_target="contrastive").full_values()[1]
    logits = linear_net(images)
    classes = batch.classes
    expected = logits.gather(1, classes[:, None])[:, 0] - (logits.sum(1) - logits.gather(1, classes[:, None])[:, 0]) / 2
    assert torch.allclose(g_plain, logits.gather(1, classes[:, None])[:, 0])
    assert torch.allclose(g_contrast, expected)
