"""The architecture registry: torchvision classifiers plus partsnet, built offline with random weights."""
import pytest
import torch
import torchvision

from gigaudit_server.worker.architectures import build_architecture, list_architectures


def test_lists_every_torchvision_classifier_and_partsnet():
    names = list_architectures()
    assert set(torchvision.models.list_models(module=torchvision.models)) < set(names)
    assert {"resnet50", "vit_b_16", "vgg16", "partsnet"} <= set(names)
    assert not {"fasterrcnn_resnet50_fpn", "deeplabv3_resnet50", "raft_large"} & set(names)  # not classifiers
    assert names == sorted(names)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "squeezenet1_0"])
def test_builds_with_num_classes_in_eval_mode(name):
    model = build_architecture(name, 7)
    assert not model.training
    with torch.no_grad():
        assert model(torch.rand(2, 3, 64, 64)).shape == (2, 7)


def test_random_init_differs_between_builds():
    a, b = build_architecture("resnet18", 3), build_architecture("resnet18", 3)
    assert not torch.equal(a.conv1.weight, b.conv1.weight)


def test_partsnet():
    pytest.importorskip("gig.synthetic")
    model = build_architecture("partsnet", 4)
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 4)


def test_unknown_name_lists_the_choices():
    with pytest.raises(ValueError, match=r"unknown architecture 'resnet19'.*partsnet.*resnet18"):
        build_architecture("resnet19", 3)


@pytest.mark.parametrize("num_classes", [0, -1, 2.5, True, "3"])
def test_bad_num_classes(num_classes):
    with pytest.raises(ValueError, match="num_classes"):
        build_architecture("resnet18", num_classes)
