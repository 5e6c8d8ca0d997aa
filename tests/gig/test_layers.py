"""gig.layers: layer listing, cut checks, default layers and segments on torchvision architectures."""
import pytest
import torch
import torchvision
from torch import nn

import gig
from gig.layers import LOGITS, traced


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


def test_untraceable_model_gets_a_clear_error():
    class Branchy(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    with pytest.raises(ValueError, match="cannot be traced"):
        gig.list_layers(Branchy())


def test_non_module_is_refused():
    with pytest.raises(ValueError, match="torch.nn.Module"):
        gig.list_layers(lambda x: x)
