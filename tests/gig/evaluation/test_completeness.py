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
