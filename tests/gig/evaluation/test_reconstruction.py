"""Reconstruction error, ℓ0 and spliced agreement per layer."""
import torch

from gig.concepts import ConceptSet
from gig.evaluation.pairs import analyse
from gig.evaluation.reconstruction import reconstruction
from models import tiny_cnn

LAYERS = ["block2", "block3"]


def _model_and_images():
    model = tiny_cnn("relu")
    return model, torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def test_identity_concepts_splice_perfectly():
    model, images = _model_and_images()
    concepts = ConceptSet.from_vectors({"block2": torch.eye(8), "block3": torch.eye(16)}, lam=0.0)
    report = reconstruction(model, analyse(model, concepts, images, LAYERS))
    for layer in LAYERS:
        assert report[layer]["relative_error"] < 1e-6
        assert report[layer]["spliced_top1"] == 1.0
        assert abs(report[layer]["spliced_kl"]) < 1e-6
        assert report[layer]["n_images"] == 6
    # ReLU outputs: the identity codes are the activations, zero where the ReLU is off.
    assert 0 < report["block3"]["l0"] < 1


def test_a_poor_dictionary_shows_in_every_figure():
    model, images = _model_and_images()
    generator = torch.Generator().manual_seed(3)
    concepts = ConceptSet.from_vectors({"block2": torch.randn(2, 8, generator=generator),
                                        "block3": torch.randn(2, 16, generator=generator)}, lam=0.5)
    report = reconstruction(model, analyse(model, concepts, images, LAYERS))
    assert report["block3"]["relative_error"] > 0.3
    assert report["block3"]["spliced_kl"] > 1e-4
    assert report["block3"]["l0"] <= 1
