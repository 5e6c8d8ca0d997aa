"""GIG completeness on LayerNorm models (issue 13): ViT-B/16 and ConvNeXt at the default steps, method="auto"
choosing the rule per segment, and steps="auto" saying when it cannot meet its tolerance.

A LayerNorm makes its segment scale-invariant: along ``α · X̂`` nearly all of the change happens at tiny ``α``.
The fast tests use two B/16 pairs; ``-m slow`` runs every encoder pair and last → logits (measured: dataset delta
7e-4–2.8e-3 by default, loglegendre at 32 steps; 0.23–0.92 with gausslegendre at 16 steps, 0.03–0.78 at 64).
"""
import warnings

import pytest
import torch
import torchvision
from torch import nn

from gig import attribute, build_graph
from gig.attribution import CompletenessWarning, dataset_delta
from gig.concepts import ConceptSet
from gig.graph import ConceptGraph
from gig.layers import LOGITS, traced
from gig.pfv import to_pfvs
from gig.quadrature import choose_rule, is_scale_invariant
from models import small_vit, tiny_cnn

ENCODER = [f"encoder.layers.encoder_layer_{i}" for i in range(12)]


def random_concepts(model, x, layers, atoms=256, seed=0):
    with torch.no_grad():
        acts = traced(model).prefix(layers)(x)
    g = torch.Generator().manual_seed(seed)
    channels = {layer: to_pfvs(acts[layer]).shape[-1] for layer in layers}
    return ConceptSet.from_vectors({layer: torch.randn(min(atoms, 2 * c), c, generator=g)
                                    for layer, c in channels.items()}, lam=0.0)


def delta(result):
    return dataset_delta(result.attributions, result.target_difference)


@pytest.fixture(scope="module")
def vit_b16():
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(image_size=64, num_classes=10).eval()
    nn.init.normal_(model.heads.head.weight, std=0.05)  # torchvision zeroes the head: every logit would be constant
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    layers = [ENCODER[0], ENCODER[1], ENCODER[11]]
    return model, x, random_concepts(model, x, layers)


@pytest.fixture(scope="module")
def convnext():
    torch.manual_seed(0)
    model = torchvision.models.convnext_tiny(num_classes=10).eval()
    for module in model.modules():  # torchvision initialises layer_scale to 1e-6: blocks would be identities
        if hasattr(module, "layer_scale"):
            module.layer_scale.data.fill_(0.5)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    layers = ["features.1", "features.3", "features.7"]
    return model, x, random_concepts(model, x, layers)


# ---------------------------------------------------------------------------------------------- ViT-B/16
@pytest.mark.parametrize("source, target", [(ENCODER[0], ENCODER[1]), (ENCODER[11], LOGITS)])
def test_vit_b16_meets_1e_2_at_the_default_steps(vit_b16, source, target):
    model, x, concepts = vit_b16
    result = attribute(model, x, concepts, source, target, top_t=2)
    assert result.method == "loglegendre" and result.steps == 32
    assert (result.target_difference.abs() > 0).all()
    assert delta(result) <= 1e-2
    old = attribute(model, x, concepts, source, target, top_t=2, method="gausslegendre", steps=16)
    assert delta(old) > 0.1  # the issue: Gauss–Legendre misses the change near α = 0


def test_vit_segments_are_detected_as_scale_invariant(vit_b16):
    model = vit_b16[0]
    t = traced(model)
    assert is_scale_invariant(t.segment(ENCODER[3], ENCODER[4]))
    assert choose_rule("auto", t.segment(ENCODER[11], LOGITS)) == "loglegendre"
    assert choose_rule("riemann_middle", t.segment(ENCODER[11], LOGITS)) == "riemann_middle"  # explicit rule kept


@pytest.mark.slow
def test_vit_b16_every_pair_meets_1e_2_at_the_default_steps():
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(image_size=64, num_classes=10).eval()
    nn.init.normal_(model.heads.head.weight, std=0.05)
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    concepts = random_concepts(model, x, ENCODER)
    deltas = {f"{s}->{t}": delta(attribute(model, x, concepts, s, t, top_t=3))
              for s, t in zip(ENCODER, ENCODER[1:] + [LOGITS])}
    assert max(deltas.values()) <= 1e-2, deltas


@pytest.mark.slow
def test_swin_t_meets_1e_2_at_the_default_steps():
    torch.manual_seed(0)
    model = torchvision.models.swin_t(num_classes=10).eval()
    nn.init.normal_(model.head.weight, std=0.05)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    concepts = random_concepts(model, x, ["features.5", "features.7"])
    for source, target in [("features.5", "features.7"), ("features.7", LOGITS)]:
        result = attribute(model, x, concepts, source, target, top_t=2)
        assert result.method == "loglegendre" and delta(result) <= 1e-2, (source, target, delta(result))


# ---------------------------------------------------------------------------------------------- ConvNeXt
@pytest.mark.parametrize("source, target", [("features.1", "features.3"), ("features.7", LOGITS)])
def test_convnext_meets_1e_2_at_the_default_steps(convnext, source, target):
    model, x, concepts = convnext
    result = attribute(model, x, concepts, source, target, top_t=2)
    assert result.method == "loglegendre"  # LayerNorm2d is traced through to F.layer_norm
    assert delta(result) <= 1e-2
    assert delta(attribute(model, x, concepts, source, target, top_t=2, method="gausslegendre", steps=16)) > 0.05


# ---------------------------------------------------------------------------------------------- CNNs unchanged
def test_auto_keeps_gauss_legendre_on_normalisation_free_cnns():
    """BatchNorm in eval mode is affine, not scale-invariant: ReLU CNNs keep exactly the old default."""
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    concepts = random_concepts(model, x, ["layer4.0", "layer4.1"], atoms=64)
    for source, target in [("layer4.0", "layer4.1"), ("layer4.1", LOGITS)]:
        auto = attribute(model, x, concepts, source, target, top_t=2)
        old = attribute(model, x, concepts, source, target, top_t=2, method="gausslegendre", steps=16)
        assert auto.method == "gausslegendre" and auto.steps == 16
        assert torch.equal(auto.attributions, old.attributions)


# ---------------------------------------------------------------------------------------------- honest "auto"
def _small_vit_setup():
    torch.manual_seed(0)
    model = small_vit().eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return model, x, random_concepts(model, x, ENCODER[:2], atoms=32)


def test_auto_steps_that_cannot_converge_warn_and_flag():
    """Gauss–Legendre on a LayerNorm segment is still at ~5e-2 at 512 steps: the run must say so."""
    model, x, concepts = _small_vit_setup()
    with pytest.warns(CompletenessWarning, match=r"encoder_layer_0->encoder\.layers\.encoder_layer_1.*512 steps"):
        result = attribute(model, x, concepts, ENCODER[0], ENCODER[1], top_t=2, steps="auto",
                           method="gausslegendre")
    assert result.converged is False and result.steps == 512 and delta(result) > 1e-2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default rule converges, silently
        fine = attribute(model, x, concepts, ENCODER[0], ENCODER[1], top_t=2, steps="auto")
    assert fine.converged is True and fine.method == "loglegendre" and delta(fine) <= 1e-2


def test_non_convergence_is_kept_in_the_graph_evidence_across_merge_and_dict():
    model, x, concepts = _small_vit_setup()
    with pytest.warns(CompletenessWarning):
        graphs = [build_graph(model, x[i:i + 1], concepts, steps="auto", method="gausslegendre", top_t=2,
                              start_index=i) for i in range(2)]
    pair = f"{ENCODER[0]}->{ENCODER[1]}"
    for g in graphs:
        entry = g.evidence["completeness"][pair]
        assert entry["converged"] is False and entry["method"] == "gausslegendre" and entry["tolerance"] == 1e-2
    merged = graphs[0].merge(graphs[1])
    loaded = ConceptGraph.from_dict(merged.to_dict())
    for g in (merged, loaded):
        entry = g.evidence["completeness"][pair]
        assert entry["converged"] is False and entry["steps"] == 512 and entry["count"] == 4
    good = build_graph(model, x, concepts, steps="auto", top_t=2).evidence["completeness"]
    assert good[pair]["converged"] is True and good[pair]["method"] == "loglegendre"
    assert good[f"{ENCODER[1]}->{LOGITS}"]["method"] == "loglegendre"


def test_cnn_graph_records_gauss_legendre_and_no_tolerance():
    model = tiny_cnn("relu")
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    concepts = random_concepts(model, x, ["block1", "block2"], atoms=16)
    entry = build_graph(model, x, concepts, top_t=2).evidence["completeness"]["block1->block2"]
    assert entry["method"] == "gausslegendre" and entry["steps"] == 16
    assert entry["converged"] is None and entry["tolerance"] is None
