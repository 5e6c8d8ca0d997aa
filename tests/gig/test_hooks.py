"""gig.hooks: hooked_layers audit models torch.fx cannot trace at all. The replace-and-compare test accepts cuts and
rejects bypassed layers; prefix and segments equal the fx ones on a traceable model; GIG stays complete through
hook segments; extract_concepts + build_graph run end to end; a tiny Hugging Face ViT is captured."""
import copy
import math

import pytest
import torch
from torch import nn

import gig
from gig.attribution import attribute
from gig.layers import LOGITS, traced
from models import has_hooks, tiny_cnn


class Residual(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.GELU()

    def forward(self, x):
        return x + self.act(self.conv(x))


class GuardedNet(nn.Module):
    """A root forward with a data-dependent branch: no leaf module or autowrapped function can make fx trace it."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.GELU())
        self.res = Residual(6)
        self.down = nn.Sequential(nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.GroupNorm(2, 8), nn.GELU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))

    def forward(self, x):
        h = self.stem(x)
        if h.flatten(1).norm(dim=1).max() > 1e4:
            h = h / 1e4
        return self.head(self.down(self.res(h)))


HOOKED = ["stem", "res", "res.conv", "down", "head"]


def guarded(hooked=HOOKED, **kwargs):
    torch.manual_seed(0)
    return gig.configure_tracing(GuardedNet().eval(), {"hooked_layers": hooked}, **{"input_size": 16, **kwargs})


def images(n=3, size=16, seed=1):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_fx_cannot_trace_it_and_says_to_hook():
    torch.manual_seed(0)
    with pytest.raises(ValueError, match=r"cannot be traced with torch.fx \(TraceError.*hooked_layers=\[\.\.\.\].*"
                                         r"Top-level blocks: stem\.0, stem\.1, res, down\.0"):
        traced(GuardedNet())


def test_replace_and_compare_accepts_cuts_and_rejects_a_bypassed_layer():
    model = guarded()
    t = traced(model)
    info = {i.name: i for i in gig.list_layers(model)}
    assert t.capture == "hook" and t.cuts == ["stem", "res", "down", "head"]
    assert all(info[n].capture == "hook" for n in info)
    assert not info["res.conv"].is_cut and "skip connection" in info["res.conv"].reason
    assert not info["down.0"].is_cut and "only hooked_layers are captured" in info["down.0"].reason
    assert [t.can_be_source(n) for n in t.cuts] == [True, True, True, False]  # head's output is the logits
    assert gig.default_layers(model) == ["stem", "res", "down"]
    with pytest.raises(ValueError, match=r"layer 'res.conv' is not a cut \(replacing its output.*valid cut layers "
                                         r"\(hooked\) are: stem, res, down, head"):
        t.check_layers(["res.conv"])
    with pytest.raises(ValueError, match=r"layer 'stem.0' is not a cut \(not captured: .*valid cut layers"):
        t.check_layers(["stem.0"])
    with pytest.raises(ValueError, match=r"unknown layer 'nope'; valid cut layers \(hooked\) are: stem, res"):
        t.check_layers(["nope"])
    assert t.check_layers(["down", "stem"]) == ["stem", "down"]
    assert not has_hooks(model)


def test_prefix_and_segments_reproduce_the_model_and_carry_gradients():
    model, x = guarded(), images()
    t = traced(model)
    with torch.no_grad():
        outputs = t.prefix(["stem", "res", "down"])(x)
        assert torch.equal(outputs[LOGITS], model(x))
        assert torch.equal(outputs["res"], model.res(model.stem(x)))
    for source, target in [("stem", "res"), ("stem", "down"), ("res", LOGITS)]:
        start = outputs[source].clone().requires_grad_()
        out = t.segment(source, target)(start)
        assert torch.allclose(out, outputs[target], atol=1e-6)
        (grad,) = torch.autograd.grad(out.sum(), start)
        assert grad.abs().sum() > 0
    # a segment runs on its own input, not on the images of the last prefix
    other = torch.randn_like(outputs["stem"])
    with torch.no_grad():
        assert torch.allclose(t.segment("stem", LOGITS)(other), model.head(model.down(model.res(other))), atol=1e-6)
    with pytest.raises(ValueError, match="does not come after"):
        t.segment("down", "stem")
    assert t.segment("res", "down").scale_invariant and not t.segment("stem", "res").scale_invariant
    assert not has_hooks(model)


def test_segments_keep_the_callers_grad_mode():
    model = guarded()
    t = traced(model)
    start = torch.randn(2, 6, 16, 16, requires_grad=True)
    with torch.no_grad():
        assert not t.segment("stem", LOGITS)(start).requires_grad
    assert t.segment("stem", LOGITS)(start).requires_grad and torch.is_grad_enabled()


def random_concepts(channels: dict, seed=0):
    g = torch.Generator().manual_seed(seed)
    return gig.ConceptSet.from_vectors({n: torch.randn(2 * c, c, generator=g) for n, c in channels.items()})


@pytest.mark.parametrize("source, target", [("stem", "down"), ("res", LOGITS)])
def test_gig_completeness_holds_through_hook_segments(source, target):
    model, x = guarded(), images()
    concepts = random_concepts({"stem": 6, "res": 6, "down": 8})
    result = attribute(model, x, concepts, source, target, top_t=2, steps=32, method="gausslegendre",
                       return_delta=True)
    assert (result.target_difference != 0).all()
    assert result.delta.max() < 1e-3
    assert torch.allclose(result.attributions.sum(1), result.target_difference, rtol=1e-3, atol=0)
    assert not has_hooks(model)


def test_untraceable_model_audited_end_to_end():
    model = guarded()
    batches = [images(4, seed=s) for s in range(2)]
    concepts = gig.extract_concepts(model, batches, gig.default_layers(model), n_concepts=3, pfvs_per_image=16,
                                    seed=0)
    graph = gig.build_graph(model, batches, concepts, steps=16, top_t=2, method="gausslegendre")
    d = graph.to_dict()
    assert d["layers"] == ["stem", "res", "down", LOGITS] and d["n_images"] == 8 and d["edges"]
    for pair, entry in d["evidence"]["completeness"].items():
        assert entry["dataset_delta"] < 1e-2, pair
    assert not has_hooks(model)


def assert_close(a, b, path="graph", rel=1e-6):
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{path}: keys {set(a) ^ set(b)}"
        for k in a:
            if k != "params":
                assert_close(a[k], b[k], f"{path}.{k}", rel)
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{path}: lengths {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, f"{path}[{i}]", rel)
    elif isinstance(a, float):
        assert math.isclose(a, b, rel_tol=rel, abs_tol=1e-6), f"{path}: {a} vs {b}"
    else:
        assert a == b, f"{path}: {a!r} vs {b!r}"


def test_hooked_results_equal_fx_results_on_a_traceable_model():
    fx_model = tiny_cnn("gelu")
    hooked = gig.configure_tracing(copy.deepcopy(fx_model), {"hooked_layers": ["block1", "block2", "block3"]},
                                   input_size=16)
    assert traced(fx_model).capture == "fx" and traced(hooked).capture == "hook"
    assert gig.default_layers(hooked) == gig.default_layers(fx_model) == ["block1", "block2", "block3"]
    batches = [images(3, seed=s) for s in range(2)]
    layers = ["block1", "block2", "block3"]
    results = []
    for model in (fx_model, hooked):
        concepts = gig.extract_concepts(model, batches, layers, n_concepts=3, pfvs_per_image=16, seed=0)
        graph = gig.build_graph(model, batches, concepts, steps=8, top_t=2, method="gausslegendre")
        results.append((concepts, graph.to_dict()))
    (fx_concepts, fx_graph), (hook_concepts, hook_graph) = results
    for layer in layers:
        assert torch.allclose(fx_concepts.vectors(layer), hook_concepts.vectors(layer), atol=1e-6)
    assert_close(fx_graph, hook_graph)


def test_tuple_outputs_repeated_calls_and_unknown_names_are_explained():
    class Pair(nn.Module):
        def forward(self, x):
            return x, x.mean()

    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.pair, self.act, self.unused = Pair(), nn.GELU(), nn.Linear(2, 2)
            self.conv = nn.Conv2d(3, 4, 1)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            y, m = self.pair(self.act(self.act(self.conv(x))))
            return self.fc(y.mean((2, 3))) * (1 if float(m) < 1e9 else 0)

    model = gig.configure_tracing(Odd(), {"hooked_layers": ["pair", "act", "unused", "conv"]}, input_size=8)
    info = {i.name: i for i in gig.list_layers(model)}
    assert "returns a tuple, not one tensor" in info["pair"].reason
    assert info["act"].reason == "called 2 times in forward()"
    assert info["unused"].reason == "never called in forward()"
    assert info["conv"].is_cut
    with pytest.raises(ValueError, match=r"unknown hooked layer 'cnv'.*did you mean 'conv'\?.*top-level blocks are: "
                                         r"pair, act, unused, conv, fc"):
        gig.configure_tracing(Odd(), {"hooked_layers": ["cnv"]}, input_size=8)


def test_input_size_is_required_unless_the_model_declares_one():
    with pytest.raises(ValueError, match=r"cannot tell the input size of GuardedNet.*input_size=\(H, W\)"):
        gig.configure_tracing(GuardedNet(), {"hooked_layers": ["stem"]})
    with pytest.raises(ValueError, match=r"input_size must be S, \(H, W\) or \(C, H, W\)"):
        gig.configure_tracing(GuardedNet(), {"hooked_layers": ["stem"]}, input_size=(16, 0))
    model = GuardedNet()
    model.pretrained_cfg = {"input_size": (3, 24, 20)}  # as timm models carry it
    gig.configure_tracing(model, {"hooked_layers": ["stem"]})
    assert traced(model).input_shape == (3, 24, 20)


def test_a_model_that_does_not_return_a_tensor_is_refused():
    class Dict(GuardedNet):
        def forward(self, x):
            return {"logits": super().forward(x)}

    model = gig.configure_tracing(Dict(), {"hooked_layers": ["stem"]}, input_size=16)
    with pytest.raises(ValueError, match="must return one tensor of logits, not dict; wrap it"):
        traced(model)


class Logits(nn.Module):
    """A Hugging Face image classifier whose forward returns the logits tensor."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(pixel_values=x).logits


def test_hugging_face_vit_layers_are_hooked_cuts():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=64, num_labels=3)
    model = Logits(transformers.ViTForImageClassification(config)).eval()
    with pytest.raises(ValueError, match="cannot be traced with torch.fx inside 'inner.vit'"):
        traced(model)
    layers = ["inner.vit.layers.0", "inner.vit.layers.1"]  # transformers 5: ViTModel.layers, no .encoder.layer
    gig.configure_tracing(model, {"hooked_layers": [*layers, "inner.vit.layers.0.mlp", "inner.classifier"]})
    t = traced(model)  # the input size comes from the HF config
    assert t.input_shape == (3, 32, 32)
    assert t.cuts == [*layers, "inner.classifier"] and gig.default_layers(model) == layers
    assert "skip connection" in t.layers["inner.vit.layers.0.mlp"].reason
    x = images(2, size=32)
    with torch.no_grad():
        outputs = t.prefix(layers)(x)
        hidden = model.inner(pixel_values=x, output_hidden_states=True).hidden_states
        assert torch.equal(outputs[layers[0]], hidden[1]) and torch.equal(outputs[layers[1]], hidden[2])
    assert t.segment(layers[0], LOGITS).scale_invariant  # LayerNorms run after it
    concepts = random_concepts({layers[0]: 32, layers[1]: 32})
    result = attribute(model, x, concepts, layers[0], layers[1], top_t=2, steps=32, method="loglegendre",
                       return_delta=True)
    assert result.delta.max() < 1e-2


def test_a_block_and_its_last_submodule_are_one_tensor():
    model = guarded(["stem", "stem.1", "down"])
    t = traced(model)
    assert t.cuts == ["stem.1", "stem", "down"]
    assert gig.default_layers(model) == ["stem", "down"]  # the outer name, as with fx
    with pytest.raises(ValueError, match="layers 'stem.1' and 'stem' are the same tensor"):
        t.check_layers(["stem.1", "stem"])


def test_in_place_ops_after_a_hooked_layer_do_not_change_what_it_captured():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(4, 4, 3, padding=1),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    plain = copy.deepcopy(net)
    gig.configure_tracing(net, {"hooked_layers": ["0", "2"]}, input_size=8)
    x = images(2, size=8)
    outputs = traced(net).prefix(["0", "2"])(x.requires_grad_())
    assert torch.equal(outputs["0"], plain[0](x)) and (outputs["0"] < 0).any()  # not ReLU'd in place
    (grad,) = torch.autograd.grad(outputs[LOGITS].sum(), outputs["0"])  # gradients reach the kept output
    assert grad.abs().sum() > 0
    start = outputs["0"].detach().requires_grad_()
    out = traced(net).segment("0", LOGITS)(start)
    assert torch.allclose(out, plain(x), atol=1e-6) and (start < 0).any()  # the caller's tensor is untouched


def test_a_segment_whose_target_reads_the_input_around_the_source_is_refused():
    class Split(nn.Module):
        """``b`` holds ``a``'s output and the input itself; the logits read only ``a``'s part, so both are cuts,
        but ``b`` is no function of ``a``."""

        def __init__(self):
            super().__init__()
            self.a, self.b, self.fc = nn.Conv2d(3, 3, 1), nn.Identity(), nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(self.b(torch.cat([self.a(x), x], 1))[:, :3].mean((2, 3)))

    torch.manual_seed(0)
    model = gig.configure_tracing(Split(), {"hooked_layers": ["a", "b"]}, input_size=4)
    t = traced(model)
    assert t.cuts == ["a", "b"]
    assert torch.allclose(t.segment("a", LOGITS)(torch.ones(1, 3, 4, 4)), model.fc(torch.ones(1, 3)), atol=1e-6)
    with pytest.raises(ValueError, match=r"the segment 'a' -> 'b' does not reproduce 'b'.*reads the input around"):
        t.segment("a", "b")
