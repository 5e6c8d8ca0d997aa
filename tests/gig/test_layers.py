"""gig.layers: layer listing, cut checks, default layers and segments on torchvision and hand-written models."""
import pytest
import torch
import torchvision
from torch import nn

import gig
from gig.layers import LOGITS, _distinct, _general_defaults, traced
from gig.synthetic import PartsNet


def small_vit():
    return torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=3, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=5
    )


ARCHS = {
    "resnet18": (lambda: torchvision.models.resnet18(num_classes=7), 64, 8),
    "resnet50": (lambda: torchvision.models.resnet50(num_classes=7), 64, 16),
    "vgg16": (lambda: torchvision.models.vgg16(num_classes=7), 32, 13),
    "vit": (small_vit, 32, 3),
}


@pytest.mark.parametrize("arch", ARCHS)
def test_default_layers_are_cuts_and_segments_reproduce_the_model(arch):
    build, size, n_default = ARCHS[arch]
    torch.manual_seed(0)
    model = build().eval()
    layers = gig.default_layers(model)
    assert len(layers) == n_default
    t = traced(model)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        outputs = t.prefix(layers)(x)
        assert torch.allclose(outputs[LOGITS], model(x), atol=1e-5)
        for a, b in zip(layers, layers[1:] + [LOGITS]):
            assert torch.allclose(t.segment(a, b)(outputs[a]), outputs[b], atol=1e-4, rtol=1e-4)


def test_resnet_block_internals_are_not_cuts():
    infos = {info.name: info for info in gig.list_layers(torchvision.models.resnet18())}
    assert infos["layer3.1"].is_cut and infos["layer3"].is_cut and infos["fc"].is_cut
    assert not infos["layer3.1.conv1"].is_cut
    assert "without passing through it" in infos["layer3.1.conv2"].reason
    assert not infos["layer3.1.relu"].is_cut  # called twice in a BasicBlock
    assert "called 2 times" in infos["layer3.1.relu"].reason


def test_vit_mlp_inside_a_residual_block_is_not_a_cut():
    infos = {info.name: info for info in gig.list_layers(small_vit())}
    assert infos["encoder.layers.encoder_layer_1"].is_cut
    assert not infos["encoder.layers.encoder_layer_1.mlp"].is_cut


def test_unknown_and_non_cut_layers_list_valid_names():
    t = traced(torchvision.models.resnet18())
    with pytest.raises(ValueError, match=r"unknown layer 'layer9'.*valid cut layers are: .*layer3\.1"):
        t.check_layers(["layer9"])
    with pytest.raises(ValueError, match=r"'layer2\.0\.conv1' is not a cut.*layer2\.0"):
        t.check_layers(["layer2.0.conv1"])
    with pytest.raises(ValueError, match="no layers given"):
        t.check_layers([])


def test_layers_come_back_in_forward_order():
    t = traced(torchvision.models.resnet18())
    assert t.check_layers(["layer4.0", "layer1.1", "layer2.0"]) == ["layer1.1", "layer2.0", "layer4.0"]


def test_segment_refuses_a_target_before_its_source():
    t = traced(torchvision.models.resnet18())
    with pytest.raises(ValueError, match="does not come after"):
        t.segment("layer3.0", "layer2.1")


def test_inplace_relu_output_is_captured_before_it_is_overwritten():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Conv2d(4, 2, 3), nn.Flatten()).eval()
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        conv_out = traced(model).prefix(["0"])(x)["0"]
        assert (conv_out < 0).any()  # the ReLU that follows ran in place, but the captured conv output is intact
        assert torch.allclose(conv_out, model[0](x))


def test_functional_inplace_ops_neither_overwrite_a_capture_nor_a_segment_input():
    class InplaceHead(nn.Module):  # DenseNet's ending: F.relu(features, inplace=True), then pooling
        def __init__(self):
            super().__init__()
            self.conv, self.norm, self.fc = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2)

        def forward(self, x):
            x = torch.nn.functional.relu(self.norm(self.conv(x)), inplace=True)
            return self.fc(x.relu_().mean((2, 3)))

    model = InplaceHead().eval()
    t = traced(model)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        captured = t.prefix(["norm"])(x)["norm"]
        assert (captured < 0).any() and torch.allclose(captured, model.norm(model.conv(x)))
        given = captured.clone()
        assert torch.allclose(t.segment("norm", LOGITS)(given), model(x), atol=1e-6)
        assert torch.equal(given, captured)  # the segment did not write into its input


def test_untraceable_model_gets_a_clear_error():
    class Branchy(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    with pytest.raises(ValueError, match="cannot be traced"):
        gig.list_layers(Branchy())


def test_non_module_is_refused():
    with pytest.raises(ValueError, match="torch.nn.Module"):
        gig.list_layers(lambda x: x)


# ---------------------------------------------------------------------- default_layers on any traceable model
class ConvBNAct(nn.Sequential):
    """conv → BN → ReLU: the block's output and its ReLU's are one tensor."""

    def __init__(self, c_in, c_out, stride=1):
        super().__init__(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class Residual(nn.Module):
    """``relu(x + conv(relu(bn(conv(x)))))``: its output is a cut, its convs are not."""

    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1, self.act = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU()
        self.conv2, self.out = nn.Conv2d(c, c, 3, padding=1), nn.ReLU()

    def forward(self, x):
        return self.out(x + self.conv2(self.act(self.bn1(self.conv1(x)))))


class ListStages(nn.Module):
    """timm-like: ``stem``, a ModuleList of four stages (Sequentials of residual blocks), pooling, ``fc``."""

    def __init__(self, c=8):
        super().__init__()
        self.stem = ConvBNAct(3, c)
        self.stages = nn.ModuleList(nn.Sequential(Residual(c), Residual(c)) for _ in range(4))
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(c, 5)

    def forward(self, x):
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.fc(torch.flatten(self.pool(x), 1))


class TwoStages(nn.Module):
    """A Sequential of only two stages: too few, so the blocks inside them are taken."""

    def __init__(self, c=8):
        super().__init__()
        self.stages = nn.Sequential(nn.Sequential(ConvBNAct(3, c), Residual(c)),
                                    nn.Sequential(Residual(c), Residual(c)))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 5))

    def forward(self, x):
        return self.head(self.stages(x))


class Wrapped(nn.Module):
    """A whole network nested in a wrapper that normalises its input (a buffer, no parameters)."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.full((1, 3, 1, 1), 0.5))

    def forward(self, x):
        return self.net(x - self.mean)


class ClassMapNet(nn.Module):
    """SqueezeNet-like: the classifier is dropout → 1×1 conv → ReLU → global pool, then a flatten."""

    def __init__(self, c=8):
        super().__init__()
        self.features = nn.Sequential(ConvBNAct(3, c), nn.MaxPool2d(2), ConvBNAct(c, c), ConvBNAct(c, c))
        self.classifier = nn.Sequential(nn.Dropout(), nn.Conv2d(c, 5, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))

    def forward(self, x):
        return torch.flatten(self.classifier(self.features(x)), 1)


class TokenNet(nn.Module):
    """A ViT-like token model: patch conv, class token and positions, residual blocks, norm, ``x[:, 0]``."""

    def __init__(self, d=16):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, d, 8, 8)
        self.cls_token, self.pos = nn.Parameter(torch.randn(1, 1, d)), nn.Parameter(torch.randn(1, 17, d))
        self.pos_drop = nn.Dropout(0.1)
        self.blocks = nn.Sequential(*[nn.TransformerEncoderLayer(d, 2, 32, dropout=0.0, batch_first=True)
                                      for _ in range(2)])
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, 5)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos
        return self.head(self.norm(self.blocks(self.pos_drop(x)))[:, 0])


class StemBlocksHead(nn.Module):
    """``stem``, ``blocks``, and a ``head`` that pools, flattens, normalises and classifies."""

    class Head(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.pool, self.flatten, self.norm, self.fc = nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.LayerNorm(c), \
                nn.Linear(c, 5)

        def forward(self, x):
            return self.fc(self.norm(self.flatten(self.pool(x))))

    def __init__(self, c=8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 4, 4), nn.BatchNorm2d(c))
        self.blocks = nn.Sequential(*[Residual(c) for _ in range(3)])
        self.head = self.Head(c)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


def _seq_residual():
    return nn.Sequential(ConvBNAct(3, 8), Residual(8), ConvBNAct(8, 8, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 3))


def _tv(name, **kwargs):
    return lambda: getattr(torchvision.models, name)(**kwargs)


def small_convnext():
    from torchvision.models.convnext import CNBlockConfig
    return torchvision.models.ConvNeXt([CNBlockConfig(8, 16, 1), CNBlockConfig(16, 32, 2), CNBlockConfig(32, None, 1)],
                                       num_classes=5)


def small_densenet():
    return torchvision.models.DenseNet(growth_rate=8, block_config=(2, 2, 2), num_init_features=16, num_classes=5)


# name: (builder, input size, expected default layers). The expectation is the documented rule applied by hand.
HANDWRITTEN = {
    "partsnet": (lambda: PartsNet(6, width=8), 32, ["features.0", "features.1", "features.2",
                                                                    "features.3"]),
    "sequential_root": (_seq_residual, 16, ["0", "1", "2"]),
    "modulelist_stages": (ListStages, 16, ["stem", "stages.0", "stages.1", "stages.2", "stages.3"]),
    "stem_blocks_head": (StemBlocksHead, 16, ["stem", "blocks.0", "blocks.1", "blocks.2"]),
    "two_stages": (TwoStages, 16, ["stages.0.0", "stages.0", "stages.1.0", "stages.1"]),
    "wrapped_partsnet": (lambda: Wrapped(PartsNet(6, width=8)), 32,
                         ["net.features.0", "net.features.1", "net.features.2", "net.features.3"]),
    "class_map_classifier": (ClassMapNet, 16, ["features.1", "features.2", "features.3"]),
    "tokens": (TokenNet, 32, ["pos_drop", "blocks.0", "blocks.1", "norm"]),
    "flat_layers": (lambda: nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3),
                                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)),
                    16, ["2", "4"]),
}
TORCHVISION = {
    "convnext": (small_convnext, 32, [f"features.{i}" for i in range(6)]),  # stem, 3 stages, 2 downsamplings
    "efficientnet_b0": (_tv("efficientnet_b0", num_classes=5), 64, [f"features.{i}" for i in range(9)]),
    "mobilenet_v3_small": (_tv("mobilenet_v3_small", num_classes=5), 64, [f"features.{i}" for i in range(13)]),
    "densenet": (small_densenet, 32, ["features.conv0", "features.pool0", "features.denseblock1",
                                      "features.transition1", "features.denseblock2", "features.transition2",
                                      "features.denseblock3", "features.norm5"]),
    "wrapped_resnet18": (lambda: Wrapped(torchvision.models.resnet18(num_classes=5)), 32,
                         ["net.conv1", "net.maxpool"] + [f"net.layer{i}.{j}" for i in range(1, 5) for j in range(2)]),
}
DEFAULTS = {**HANDWRITTEN, **TORCHVISION}


@pytest.mark.parametrize("arch", DEFAULTS)
def test_default_layers_follow_the_rule(arch):
    build, _, expected = DEFAULTS[arch]
    torch.manual_seed(0)
    assert gig.default_layers(build().eval()) == expected


@pytest.mark.parametrize("arch", DEFAULTS)
def test_default_layers_are_distinct_spatial_cuts_before_the_head(arch):
    build, size, _ = DEFAULTS[arch]
    torch.manual_seed(0)
    model = build().eval()
    layers = gig.default_layers(model)
    t = traced(model)
    assert t.check_layers(layers) == layers  # cuts, in forward order
    nodes = [t._out_node[name] for name in layers]
    assert len(set(nodes)) == len(nodes)  # never two names for one tensor
    assert not any(name.startswith(("classifier", "head", "fc", "avgpool")) for name in layers)
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        outputs = t.prefix(layers)(x)
        assert torch.allclose(outputs[LOGITS], model(x), atol=1e-5)
        for a, b in zip(layers, layers[1:] + [LOGITS]):
            assert outputs[a].dim() >= 3, f"{a} has no positions: {tuple(outputs[a].shape)}"
            assert len([n for n in t.segment(a, b).graph.nodes if n.op not in ("placeholder", "output")]) > 0
            assert torch.allclose(t.segment(a, b)(outputs[a]), outputs[b], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ["partsnet", "modulelist_stages", "class_map_classifier", "convnext",
                                  "mobilenet_v3_small", "densenet"])
def test_no_default_layer_lies_inside_another(arch):
    build, _, _ = DEFAULTS[arch]
    layers = gig.default_layers(build())
    assert not [(a, b) for a in layers for b in layers if b.startswith(a + ".")]


def test_one_name_per_tensor_keeps_the_outermost():
    model = PartsNet(6, width=8).eval()
    t = traced(model)
    # features.3, its Identity pool and the features Sequential are one node; features.0 and its ReLU are not
    assert t._out_node["features.3"] is t._out_node["features.3.pool"] is t._out_node["features"]
    assert t.layers["features.3.pool"].is_cut and t.layers["features.0.relu"].is_cut
    with pytest.raises(ValueError, match=r"'features\.3' and 'features\.3\.pool' are the same tensor"):
        t.check_layers(["features.3", "features.3.pool"])
    assert t._out_node["features.1.pool"] is t._out_node["features.1"] is not t._out_node["features.1.relu"]
    assert _distinct(t, ["features.3.pool", "features.1.pool", "features.3", "features.1"]) == \
        ["features.1", "features.3"]


def test_inner_convs_of_a_residual_block_are_not_cuts_and_not_defaults():
    model = _seq_residual().eval()
    infos = {info.name: info for info in gig.list_layers(model)}
    assert infos["1"].is_cut and not infos["1.conv1"].is_cut and not infos["1.conv2"].is_cut
    assert "1.conv1" not in gig.default_layers(model)


def test_torchvision_vit_default_stays_its_encoder_layers_not_the_general_rule():
    model = small_vit().eval()
    layers = [f"encoder.layers.encoder_layer_{i}" for i in range(3)]
    assert gig.default_layers(model) == layers
    assert _general_defaults(traced(model)) == ["conv_proj", *layers, "encoder"]  # what the rule alone gives


def test_a_model_without_positions_gets_the_cuts_it_has():
    mlp = nn.Sequential(nn.Flatten(), *[m for _ in range(10) for m in (nn.Linear(8, 8), nn.ReLU())], nn.Linear(8, 2))
    with pytest.raises(ValueError, match=r"none of its 22 cut layers.*\(0, 1, 2, .*, 11 and 10 more\)"):
        gig.default_layers(mlp)
    with pytest.raises(ValueError, match=r"none of its 2 cut layers.*\(0, 1\)"):
        gig.default_layers(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)))


@pytest.mark.parametrize("arch", ["partsnet", "mobilenet_v3_small", "densenet"])
def test_consecutive_default_layers_run_in_attribute_and_build_graph(arch):
    build, size, _ = DEFAULTS[arch]
    torch.manual_seed(0)
    model = build().eval()
    layers = gig.default_layers(model)
    images = torch.rand(3, 3, size, size)
    with torch.no_grad():
        outputs = traced(model).prefix(layers)(images)
    concepts = gig.ConceptSet.from_vectors({n: torch.randn(6, outputs[n].shape[1]) for n in layers})
    result = gig.attribute(model, images, concepts, layers[0], layers[1], top_t=2, steps=4, return_delta=True)
    assert result.attributions.shape == (3, 6, 2) and torch.isfinite(result.attributions).all()
    graph = gig.build_graph(model, images, concepts, steps=4, top_t=2)
    assert graph.n_images == 3
    assert set(graph.evidence["completeness"]) >= {f"{a}->{b}" for a, b in zip(layers, layers[1:] + [LOGITS])}


class Pooled(nn.Module):
    """conv → ``ending`` → linear: where the head starts depends only on ``ending``."""

    def __init__(self, ending):
        super().__init__()
        self.conv, self.ending, self.fc = nn.Conv2d(3, 4, 3, padding=1), ending, nn.LazyLinear(2)

    def forward(self, x):
        return self.fc(self.ending(self.conv(x)))


class Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


ENDINGS = {  # name: (ending after the conv, whether it is a global reduction)
    "view_batch_minus_one": (Lambda(lambda x: x.view(x.size(0), -1)), True),
    "torch_flatten_1": (Lambda(lambda x: torch.flatten(x, 1)), True),
    "mean_over_positions": (Lambda(lambda x: x.mean((2, 3))), True),
    "amax_keepdim": (Lambda(lambda x: x.amax(dim=(-2, -1), keepdim=True).flatten(1)), True),
    "functional_pool": (Lambda(lambda x: torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)), True),
    "class_token": (Lambda(lambda x: x.flatten(2).transpose(1, 2)[:, 0]), True),
    "adaptive_pool_module": (nn.Sequential(nn.AdaptiveMaxPool2d((1, 1)), nn.Flatten()), True),
    "tokens_flatten_2": (Lambda(lambda x: x.flatten(2).transpose(1, 2)), False),
    "reshape_3d": (Lambda(lambda x: x.reshape(x.shape[0], 4, -1)), False),
    "adaptive_pool_7": (nn.AdaptiveAvgPool2d(7), False),
}


@pytest.mark.parametrize("ending", ENDINGS)
def test_the_head_starts_at_the_first_global_reduction(ending):
    module, reduces = ENDINGS[ending]
    model = Pooled(module).eval()
    with torch.no_grad():
        model(torch.rand(1, 3, 8, 8))  # materialise the lazy linear
    t = traced(model)
    conv, logits = t._out_node["conv"], t._node(LOGITS)
    assert (t.head_start is not logits) == reduces
    assert t._order[conv] < t._order[t.head_start] <= t._order[logits]
    # a parameter-free ending before the head joins the conv's unit; one in the head is left out; the fc never is in
    assert gig.default_layers(model) == (["conv"] if reduces else ["ending"])
