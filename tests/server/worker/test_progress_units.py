"""The worker's progress units (gig's fine reports), the evaluation scope it records and its layer listings."""
from __future__ import annotations

import math

import torch

from gigaudit_server.worker.architectures import build_architecture
from gigaudit_server.worker.tasks import SCOPE_KEY, evaluation_scope, fine_progress, layer_listing


def test_fine_reports_replace_the_coarse_ones_of_their_stages():
    calls = []
    report = fine_progress(lambda *a: calls.append(a))
    for call in [("sample", 0, 2), ("decompose", 0, 2), ("decompose:fine", 0, 40), ("decompose:fine", 20, 40),
                 ("decompose", 1, 2), ("evaluate", 0, 5), ("evaluate:fine", 3, 57), ("exemplars", 1, 9)]:
        report(*call)
    assert calls == [("sample", 0, 2), ("decompose", 0, 40), ("decompose", 20, 40), ("evaluate", 3, 57),
                     ("exemplars", 1, 9)]


class _Images:
    """What ``evaluation_scope`` reads of ``ArchiveImages``: batches of (images, labels) and the names."""

    def __init__(self, images):
        self.images, self.names = images, [f"{i}.png" for i in range(len(images))]

    def __iter__(self):
        for start in range(0, len(self.images), 4):
            yield self.images[start:start + 4], torch.zeros(len(self.images[start:start + 4]), dtype=torch.long)


def test_evaluation_scope_counts_images_and_flags_uniform_predictions():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5))
    torch.nn.init.zeros_(model[1].weight)
    torch.nn.init.zeros_(model[1].bias)  # an untrained-looking model: uniform softmax, one predicted class
    scope = evaluation_scope(model, _Images(torch.rand(10, 3, 2, 2)), 6, "cpu")
    assert SCOPE_KEY == "evaluation_scope"
    assert (scope["images_evaluated"], scope["images_total"], scope["num_classes"]) == (6, 10, 5)
    assert scope["mean_max_softmax"] == scope["uniform_max_softmax"] == 0.2
    assert scope["predicted_class_entropy"] == 0.0 and scope["predicted_classes"] == [6, 0, 0, 0, 0]
    assert scope["predicted_class_entropy_max"] == round(math.log(5), 6)


def test_layer_listing_marks_the_classifier_as_no_source():
    listing = layer_listing(build_architecture("resnet18", 10))
    sources = {layer["name"]: layer["can_be_source"] for layer in listing["layers"] if layer["is_cut"]}
    assert sources["fc"] is False and sources["layer4"] and sources["avgpool"]
    assert listing["default_layers"][-1] == "layer4.1"
