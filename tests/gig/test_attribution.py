"""gig.attribution: completeness, agreement with Captum IG, analytic cases (concept and contrastive class targets),
batching invariance, the rule and convergence it reports, validation."""
import copy

import pytest
import torch
import torchvision
from captum.attr import IntegratedGradients
from torch import nn

from gig.attribution import Attribution, attribute, completeness_delta, concept_targets, dataset_delta, integrate
from gig.concepts import ConceptSet
from gig.layers import LOGITS, traced
from gig.pfv import from_pfvs, to_pfvs
from gig.quadrature import RULES
from gig.targets import DEFAULT_CLASS_TARGET, class_targets
from models import has_hooks, small_vit, tiny_cnn


def images(n=3, size=16, seed=1):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def random_concepts(layers_channels: dict, per_channel=2.0, lam=0.0, seed=0):
    """Random concept vectors: ``per_channel · C`` per layer (more atoms than channels: exact reconstruction)."""
    g = torch.Generator().manual_seed(seed)
    vectors = {name: torch.randn(max(1, int(per_channel * c)), c, generator=g) for name, c in layers_channels.items()}
    return ConceptSet.from_vectors(vectors, lam=lam)


TINY = {"block1": 8, "block2": 8, "block3": 16}


def activations(model, x, layers):
    with torch.no_grad():
        return traced(model).prefix(layers)(x)


def unit(v):
    return v / v.norm(dim=-1, keepdim=True)


# ---------------------------------------------------------------------------------------------- completeness
@pytest.mark.parametrize("act", ["gelu", "softplus"])
@pytest.mark.parametrize("source, target", [("block1", "block2"), ("block2", "logits")])
def test_completeness_on_smooth_models(act, source, target):
    model, concepts = tiny_cnn(act), random_concepts(TINY)
    result = attribute(model, images(), concepts, source, target, top_t=3, steps=32, return_delta=True)
    k = concepts.vectors(source).shape[0]
    assert result.attributions.shape == (3, k, 3 if target != LOGITS else 1)
    assert (result.target_difference != 0).all()  # the check is not vacuous
    assert result.delta.max() < 1e-3
    sums = result.attributions.sum(1)
    assert torch.allclose(sums, result.target_difference, rtol=1e-3, atol=0)


def test_relu_models_meet_their_reported_delta_and_it_falls_with_steps():
    model, concepts, x = tiny_cnn("relu"), random_concepts(TINY), images(4)
    deltas = []
    for steps in (4, 16, 64):
        result = attribute(model, x, concepts, "block1", "block3", top_t=3, steps=steps, return_delta=True)
        error = (result.attributions.sum(1) - result.target_difference).abs()
        assert torch.allclose(error, result.delta * result.target_difference.abs(), rtol=1e-4, atol=1e-7)
        deltas.append(dataset_delta(result.attributions, result.target_difference))
    assert deltas[0] > deltas[1] > deltas[2] > 0
    assert deltas[2] < 0.02


def test_gauss_legendre_beats_riemann_at_equal_steps_on_smooth_models():
    model, concepts, x = tiny_cnn("softplus"), random_concepts(TINY), images(4)
    deltas = {}
    for method in [m for m in RULES if m.startswith("riemann")] + ["gausslegendre"]:
        result = attribute(model, x, concepts, "block1", LOGITS, steps=4, method=method)
        deltas[method] = dataset_delta(result.attributions, result.target_difference)
    best_riemann = min(v for k, v in deltas.items() if k != "gausslegendre")
    assert deltas["gausslegendre"] < best_riemann / 10, deltas


def test_auto_steps_double_until_the_tolerance_is_met():
    model, concepts, x = tiny_cnn("relu"), random_concepts(TINY), images(4)
    result = attribute(model, x, concepts, "block1", "block3", steps="auto", tolerance=3e-3)
    assert result.steps in (32, 64, 128, 256, 512) and result.converged is True
    assert dataset_delta(result.attributions, result.target_difference) <= 3e-3
    fixed = attribute(model, x, concepts, "block1", "block3", steps=result.steps // 2)
    assert dataset_delta(fixed.attributions, fixed.target_difference) > 3e-3  # it stopped at the first success
    assert fixed.converged is None  # no tolerance was asked for


def test_a_tolerance_that_512_steps_cannot_meet_warns_and_flags():
    from gig.attribution import CompletenessWarning

    model, concepts, x = tiny_cnn("relu"), random_concepts(TINY), images(2)
    with pytest.warns(CompletenessWarning, match=r"block1->block3 did not converge.*512 steps.*tolerance 1e-09"):
        result = attribute(model, x, concepts, "block1", "block3", top_t=2, steps=128, tolerance=1e-9)
    assert result.converged is False and result.steps == 512
    assert dataset_delta(result.attributions, result.target_difference) > 1e-9


def test_default_rule_and_steps_are_reported():
    model, concepts, x = tiny_cnn("gelu"), random_concepts(TINY), images(2)
    result = attribute(model, x, concepts, "block1", "block2", top_t=2)
    assert (result.method, result.steps) == ("gausslegendre", 16)  # no normalisation: the old default, unchanged
    explicit = attribute(model, x, concepts, "block1", "block2", top_t=2, method="gausslegendre", steps=16)
    assert torch.equal(result.attributions, explicit.attributions)
    vit = small_vit()
    x32 = images(2, 32)
    vit_concepts = random_concepts({"encoder.layers.encoder_layer_2": 16})
    on_vit = attribute(vit, x32, vit_concepts, "encoder.layers.encoder_layer_2", LOGITS)
    assert (on_vit.method, on_vit.steps) == ("loglegendre", 32)


# ---------------------------------------------------------------------------------------------- references
@pytest.mark.parametrize("method", ["gausslegendre", "riemann_middle", "riemann_right"])
def test_identity_concepts_reduce_to_captum_integrated_gradients_on_the_segment(method):
    model, x = tiny_cnn("relu"), images()
    concepts = ConceptSet.from_vectors({"block2": torch.eye(8)}, lam=0.0)
    labels = torch.tensor([0, 3, 4])
    result = attribute(model, x, concepts, "block2", LOGITS, labels=labels, steps=12, method=method,
                       class_target="logit")  # Captum explains the logit itself
    segment = traced(model).segment("block2", LOGITS)
    source = activations(model, x, ["block2"])["block2"]
    captum = IntegratedGradients(segment).attribute(source, baselines=0.0, target=labels, n_steps=12, method=method)
    expected = captum.sum((2, 3))  # (B, C): summed over positions
    assert torch.equal(result.targets, labels.unsqueeze(1))
    assert torch.allclose(result.attributions[:, :, 0], expected, rtol=1e-4, atol=1e-4 * expected.abs().max())


def test_gig_equals_captum_integrated_gradients_in_coefficient_space():
    """Sparse coefficients, more atoms than channels, concept targets with positive masks: IG of
    ``u -> g_r(F(from_pfvs(u V)))`` by Captum, summed over positions, is GIG per concept."""
    model, x = tiny_cnn("gelu"), images()
    concepts = random_concepts(TINY, per_channel=1.5, lam=0.05)
    result = attribute(model, x, concepts, "block1", "block3", top_t=2, steps=8)
    acts = activations(model, x, ["block1", "block3"])
    coefficients = concepts.decompose("block1", to_pfvs(acts["block1"]))
    target_coefficients = concepts.decompose("block3", to_pfvs(acts["block3"]))
    vectors, target_vectors = concepts.vectors("block1"), unit(concepts.vectors("block3"))
    segment = traced(model).segment("block1", "block3")
    shape = acts["block1"].shape

    def g(u, concept, mask):  # Σ_{p ∈ M} <X^b_p, v̂_r>, written out independently of gig.attribution
        out = to_pfvs(segment(from_pfvs(u @ vectors, (u.shape[0],) + tuple(shape[1:]))))
        return ((out @ target_vectors.T).gather(2, concept[:, None, None].expand(-1, out.shape[1], 1))[..., 0]
                * mask).sum(1)

    assert (coefficients == 0).float().mean() > 0.1  # the Lasso made them sparse
    for t in range(2):
        concept = result.targets[:, t]
        mask = (target_coefficients.gather(2, concept[:, None, None].expand(-1, target_coefficients.shape[1], 1))
                [..., 0] > 0).float()
        captum = IntegratedGradients(g).attribute(coefficients, baselines=0.0, additional_forward_args=(concept, mask),
                                                  n_steps=8, method="gausslegendre")
        expected = captum.sum(1)
        assert torch.allclose(result.attributions[:, :, t], expected, rtol=1e-4, atol=1e-5 * expected.abs().max())


def test_linear_segment_matches_the_closed_form():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3)).eval()
    concepts = random_concepts({"0": 6, "1": 4}, per_channel=1.5, lam=0.1)
    x = images(2, 8)
    result = attribute(model, x, concepts, "0", "1", top_t=2, steps=2, method="riemann_left",
                           return_delta=True)
    acts = activations(model, x, ["0", "1"])
    u = concepts.decompose("0", to_pfvs(acts["0"]))  # (B, P, K)
    target_u = concepts.decompose("1", to_pfvs(acts["1"]))
    weight = model[1].weight[:, :, 0, 0]  # (4, 6)
    v, v_hat = concepts.vectors("0"), unit(concepts.vectors("1"))
    for b in range(2):
        for t in range(2):
            r = result.targets[b, t]
            mask = (target_u[b, :, r] > 0).float()  # (P,)
            expected = (mask[:, None] * u[b]).sum(0) * ((v @ weight.T) @ v_hat[r])  # (K,)
            assert torch.allclose(result.attributions[b, :, t], expected, atol=1e-5)
    assert result.delta.max() < 1e-5  # exact: the integrand is constant


def test_contrastive_class_target_matches_the_closed_form_on_a_linear_network():
    """Linear segment ``F(X) = W · mean_p X_p + b``: GIG to ``logit_y − mean_{c≠y} logit_c`` is exact, equals the
    same linear combination of the per-logit GIGs, and sums to the exact difference of the contrastive target."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 5)).eval()
    concepts = random_concepts({"1": 4}, per_channel=1.5, lam=0.1)
    x, labels = images(3, 8), torch.tensor([0, 2, 4])
    result = attribute(model, x, concepts, "1", LOGITS, labels=labels, steps=2, class_target="contrastive",
                       return_delta=True)
    acts = activations(model, x, ["1"])
    u = concepts.decompose("1", to_pfvs(acts["1"]))  # (B, P, K)
    v, head = concepts.vectors("1"), model[4].weight  # (K, 4), (5, 4)
    n_positions = u.shape[1]
    for b, y in enumerate(labels.tolist()):
        contrast = torch.full((5,), -1 / 4)
        contrast[y] = 1.0
        expected = u[b].sum(0) * (v @ (head.T @ contrast)) / n_positions  # (K,)
        assert torch.allclose(result.attributions[b, :, 0], expected, atol=1e-5)
        with torch.no_grad():
            reconstruction = from_pfvs(u[b:b + 1] @ v, acts["1"][:1].shape)
            exact = contrast @ (model[2:](reconstruction)[0] - model[2:](torch.zeros_like(reconstruction))[0])
        assert float(result.target_difference[b, 0]) == pytest.approx(float(exact), abs=1e-5)
    assert result.delta.max() < 1e-5  # completeness holds exactly
    every = attribute(model, x, concepts, "1", LOGITS, steps=2, targets=torch.arange(5).expand(3, 5), class_target="logit")
    others = (every.attributions.sum(2, keepdim=True) - every.attributions) / 4  # mean over c ≠ y
    combined = (every.attributions - others).gather(2, labels.view(3, 1, 1).expand(-1, v.shape[0], 1))
    assert torch.allclose(result.attributions, combined, atol=1e-5)
    plain = attribute(model, x, concepts, "1", LOGITS, labels=labels, steps=2, class_target="logit")
    assert not torch.allclose(plain.attributions, result.attributions, atol=1e-3)  # the option does something


def test_class_target_weights():
    logits = torch.randn(2, 4)
    targets, contrast = class_targets(logits, labels=torch.tensor([1, 3]), class_target="contrastive")
    assert DEFAULT_CLASS_TARGET == "contrastive" and torch.equal(contrast, class_targets(logits, labels=torch.tensor([1, 3]))[1])
    assert torch.allclose(contrast.sum(2), torch.zeros(2, 1), atol=1e-7)  # a shift of every logit changes nothing
    g = (contrast * logits.unsqueeze(1)).sum(2)[:, 0]
    for b, y in enumerate(targets[:, 0].tolist()):
        others = torch.cat([logits[b, :y], logits[b, y + 1:]])
        assert float(g[b]) == pytest.approx(float(logits[b, y] - others.mean()), abs=1e-6)
    with pytest.raises(ValueError, match="needs at least 2 classes"):
        class_targets(torch.randn(2, 1), class_target="contrastive")
    with pytest.raises(ValueError, match="valid class targets are: logit, contrastive"):
        class_targets(logits, class_target="margin")


# ---------------------------------------------------------------------------------------------- invariances
def test_chunked_rows_equal_one_batch():
    model, concepts, x = tiny_cnn("relu"), random_concepts(TINY), images(3)
    whole = attribute(model, x, concepts, "block1", "block2", steps=5, max_batch_rows=1000)
    for rows in (1, 4, 7, 10):  # step chunks, one image, two images and an uneven last chunk
        chunked = attribute(model, x, concepts, "block1", "block2", steps=5, max_batch_rows=rows)
        assert torch.allclose(chunked.attributions, whole.attributions, atol=1e-5)
        assert torch.allclose(chunked.target_difference, whole.target_difference, atol=1e-5)


def test_float64_agrees_with_float32():
    model, x = tiny_cnn("gelu"), images(2)
    concepts = random_concepts(TINY)
    single = attribute(model, x, concepts, "block2", "block3", steps=8)
    double = attribute(copy.deepcopy(model).double(), x.double(), concepts, "block2", "block3", steps=8)
    assert double.attributions.dtype == torch.float64
    assert torch.equal(single.targets, double.targets)
    scale = double.attributions.abs().max()
    assert torch.allclose(single.attributions.double(), double.attributions, atol=1e-4 * scale)


def test_activation_path_residual_row_restores_completeness():
    model, x = tiny_cnn("gelu"), images(3)
    concepts = random_concepts(TINY, per_channel=0.5)  # 4 atoms for 8 channels: a lossy reconstruction
    acts = activations(model, x, ["block1"])
    assert concepts.decomposition_stats("block1", to_pfvs(acts["block1"]))["relative_error"] > 0.3
    result = attribute(model, x, concepts, "block1", LOGITS, steps=32, path="activation", return_delta=True)
    assert result.attributions.shape == (3, 5, 1)  # 4 concepts + the residual row
    assert result.delta.max() < 1e-3
    without_residual = (result.attributions[:, :4].sum(1) - result.target_difference).abs()
    assert (without_residual / result.target_difference.abs()).max() > 0.05
    reconstruction = attribute(model, x, concepts, "block1", LOGITS, steps=32)
    assert not torch.allclose(reconstruction.target_difference, result.target_difference, rtol=1e-2)


def test_labels_choose_the_class_and_otherwise_the_prediction():
    model, concepts, x = tiny_cnn("gelu"), random_concepts(TINY), images(3)
    predicted = attribute(model, x, concepts, "block3", LOGITS, steps=4)
    assert torch.equal(predicted.targets[:, 0], model(x).argmax(1))
    chosen = attribute(model, x, concepts, "block3", LOGITS, steps=4, targets=torch.tensor([[0, 1], [2, 3],
                                                                                                [4, 0]]))
    assert chosen.attributions.shape == (3, 32, 2) and chosen.targets.tolist() == [[0, 1], [2, 3], [4, 0]]


def test_mask_all_uses_every_position():
    model, concepts, x = tiny_cnn("gelu"), random_concepts(TINY), images(2)
    acts = activations(model, x, ["block2"])
    u = concepts.decompose("block2", to_pfvs(acts["block2"]))
    targets, weights = concept_targets(u, concepts.vectors("block2"), acts["block2"].shape, top_t=2, mask="all")
    pfv_weights = to_pfvs(weights.flatten(0, 1))  # (B·T, P, C)
    assert torch.allclose(pfv_weights, unit(concepts.vectors("block2"))[targets.flatten()][:, None].expand_as(
        pfv_weights))
    _, positive = concept_targets(u, concepts.vectors("block2"), acts["block2"].shape, top_t=2)
    assert 0 < (positive != 0).float().mean() < (weights != 0).float().mean()


def test_attribute_is_exported_from_gig():
    import gig

    assert gig.attribute is attribute and gig.Attribution is Attribution


def test_integrate_takes_plain_tensors():
    model, x = tiny_cnn("gelu"), images(2)
    acts = activations(model, x, ["block2"])
    vectors = torch.randn(6, 8, generator=torch.Generator().manual_seed(0))
    coefficients = to_pfvs(acts["block2"]) @ torch.linalg.pinv(vectors)
    weights = torch.zeros(2, 1, 5)
    weights[:, 0, 2] = 1.0
    attributions, difference = integrate(traced(model).segment("block2", LOGITS), coefficients, vectors,
                                         acts["block2"].shape, weights, steps=32)
    assert attributions.shape == (2, 6, 1)
    assert completeness_delta(attributions, difference).max() < 1e-3
    segment = traced(model).segment("block2", LOGITS)
    with pytest.raises(ValueError, match="must share the batch size"):
        integrate(segment, coefficients[:1], vectors, acts["block2"].shape, weights)
    with pytest.raises(ValueError, match="6 coefficients per PFV but 5 concept vectors"):
        integrate(segment, coefficients, vectors[:5], acts["block2"].shape, weights)
    with pytest.raises(ValueError, match="path='activation' needs the source activation"):
        integrate(segment, coefficients, vectors, acts["block2"].shape, weights, path="activation")


# ---------------------------------------------------------------------------------------------- architectures
def _run_architecture(model, size, source, target):
    torch.manual_seed(0)
    model.eval()
    x = torch.randn(2, 3, size, size)
    acts = activations(model, x, [source] if target == LOGITS else [source, target])
    channels = {name: to_pfvs(a).shape[-1] for name, a in acts.items() if name != LOGITS}
    concepts = random_concepts(channels, per_channel=0.25)
    result = attribute(model, x, concepts, source, target, top_t=2, steps=4, return_delta=True)
    k = concepts.vectors(source).shape[0]
    assert result.attributions.shape == (2, k, 2 if target != LOGITS else 1)
    assert torch.isfinite(result.attributions).all() and torch.isfinite(result.delta).all()
    assert result.attributions.abs().sum() > 0
    return result


@pytest.mark.parametrize("source, target", [("layer3.1", "layer4.0"), ("layer4.1", LOGITS)])
def test_resnet18_runs(source, target):
    _run_architecture(torchvision.models.resnet18(num_classes=10), 32, source, target)


def test_vgg16_runs_on_a_tiny_input():
    _run_architecture(torchvision.models.vgg16(num_classes=10), 32, "features.22", "features.25")


@pytest.mark.parametrize("source, target", [("encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_1"),
                                            ("encoder.layers.encoder_layer_2", LOGITS)])
def test_vit_runs(source, target):
    _run_architecture(small_vit(), 32, source, target)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    model, concepts, x = tiny_cnn("gelu"), random_concepts(TINY), images(2)
    cpu = attribute(model, x, concepts, "block1", "block2", steps=8)
    gpu = attribute(copy.deepcopy(model).cuda(), x, concepts, "block1", "block2", steps=8)
    assert gpu.attributions.is_cuda
    assert torch.allclose(gpu.attributions.cpu(), cpu.attributions, atol=1e-4)


# ---------------------------------------------------------------------------------------------- hygiene
def test_no_hooks_and_modes_restored_after_success_and_failure():
    model, concepts, x = tiny_cnn("relu"), random_concepts(TINY), images(2)
    model.train()
    attribute(model, x, concepts, "block1", "block2", steps=4)
    assert all(m.training for m in model.modules()) and not has_hooks(model)
    with pytest.raises(ValueError, match="targets must index"):  # raised after the model ran
        attribute(model, x, concepts, "block1", "block2", targets=torch.full((2, 1), 99))
    assert all(m.training for m in model.modules()) and not has_hooks(model)
    model.eval()
    attribute(model, x, concepts, "block2", LOGITS, steps=4)
    assert not any(m.training for m in model.modules()) and not has_hooks(model)


@pytest.mark.parametrize("bad, match", [
    (dict(images=torch.randn(3, 16, 16)), r"shape \(B, 3, H, W\)"),
    (dict(images=torch.randn(2, 1, 16, 16)), r"shape \(B, 3, H, W\)"),
    (dict(images=[[0.0]]), "must be a float tensor"),
    (dict(images=torch.zeros(2, 3, 16, 16, dtype=torch.uint8)), "floating point"),
    (dict(images=torch.full((2, 3, 16, 16), float("nan"))), "NaN or infinite"),
    (dict(images=torch.full((2, 3, 16, 16), float("inf"))), "NaN or infinite"),
    (dict(source="block9"), r"unknown layer 'block9'.*valid cut layers are: .*block1"),
    (dict(target="blockX"), r"unknown layer 'blockX'"),
    (dict(source="block2", target="block1"), "does not come after"),
    (dict(source="block2", target="block2"), "must come after"),
    (dict(concepts=ConceptSet.from_vectors({"block1": torch.randn(4, 8)})), r"do not cover layer 'block2'"),
    (dict(concepts=ConceptSet.from_vectors({"block1": torch.randn(4, 5), "block2": torch.randn(4, 8)})),
     r"layer 'block1' have shape \(4, 5\).*8 channels"),
    (dict(path="straight"), "valid paths are: reconstruction, activation"),
    (dict(method="simpson"), "valid methods are: gausslegendre"),
    (dict(steps=0), "steps must be a positive integer or 'auto'"),
    (dict(steps="many"), "steps must be a positive integer or 'auto'"),
    (dict(steps="auto", tolerance=-1.0), "tolerance must be a positive number"),
    (dict(top_t=0), r"top_t must be an integer in \[1, 16\]"),
    (dict(top_t=17), r"top_t must be an integer in \[1, 16\]"),
    (dict(targets=torch.tensor([0, 1])), r"shape \(B=2, T\)"),
    (dict(targets=torch.zeros(3, 1, dtype=torch.long)), r"shape \(B=2, T ≥ 1\)"),
    (dict(targets=torch.zeros(2, 1)), "integer tensor"),
    (dict(targets=torch.full((2, 1), -1)), r"valid values are 0\.\.15"),
    (dict(max_batch_rows=0), "max_batch_rows must be a positive integer"),
    (dict(mask="some"), "valid masks are: positive, all"),
    (dict(target=LOGITS, mask="some"), "valid masks are: positive, all"),
    (dict(target=LOGITS, labels=torch.tensor([1])), r"labels must be a tensor of shape \(2,\)"),
    (dict(target=LOGITS, labels=torch.tensor([1, 5])), r"valid values are 0\.\.4"),
    (dict(target=LOGITS, class_target="margin"), "valid class targets are: logit, contrastive"),
    (dict(steps=None, tolerance="tight"), "tolerance must be a positive number"),
])
def test_bad_input_raises_value_error(bad, match):
    args = dict(model=tiny_cnn("relu"), images=images(2), concepts=random_concepts(TINY), source="block1",
                target="block2", steps=2)
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        attribute(**args)


def test_non_cut_layers_are_refused():
    model = torchvision.models.resnet18(num_classes=3)
    concepts = random_concepts({"layer2.0.conv1": 128, "layer2.1": 128})
    with pytest.raises(ValueError, match=r"'layer2\.0\.conv1' is not a cut.*valid cut layers are"):
        attribute(model, torch.randn(1, 3, 32, 32), concepts, "layer2.0.conv1", "layer2.1")
