"""Fine progress ("<stage>:fine") of extraction, graphs and evaluation: units known at the start, moving with every
sub-step, ending at the total; and the callbacks change no result."""
import pytest
import torch

import gig
from gig.build import build_graph
from gig.concepts.decompose import Dictionary, LassoSettings, lasso
from gig.concepts.extract import extract_concepts
from models import tiny_cnn

LAYERS = ["block2", "block3"]


@pytest.fixture(scope="module")
def setup():
    model = tiny_cnn("relu")
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(10, 3, 8, 8, generator=generator)
    data = [(images[:4], torch.tensor([0, 1, 2, 3])), (images[4:8], torch.tensor([4, 0, 1, 2])),
            (images[8:], torch.tensor([3, 4]))]
    return model, data


def _fine(calls, stage):
    return [(done, total) for name, done, total in calls if name == f"{stage}:fine"]


def _check_moving(fine, total):
    assert fine[0] == (0, total) and fine[-1] == (total, total)
    dones = [done for done, _ in fine]
    assert dones == sorted(dones) and len(set(dones)) > 2
    assert {t for _, t in fine} == {total}


def test_extraction_reports_decomposition_in_images_times_layers(setup):
    model, data = setup
    calls = []
    concepts = extract_concepts(model, data, LAYERS, n_concepts=3, pfvs_per_image=2, seed=1,
                                progress=lambda *a: calls.append(a))
    _check_moving(_fine(calls, "decompose"), 10 * len(LAYERS))
    assert ("decompose", 3, 3) in calls  # the coarse reports stay
    again = extract_concepts(model, data, LAYERS, n_concepts=3, pfvs_per_image=2, seed=1)
    assert torch.equal(concepts.layers["block2"].frequency, again.layers["block2"].frequency)


def test_lasso_reports_every_chunk_of_rows_and_gives_the_same_coefficients():
    generator = torch.Generator().manual_seed(2)
    atoms = torch.nn.functional.normalize(torch.randn(6, 5, generator=generator), dim=1)
    rows = torch.randn(50, 5, generator=generator)
    for solver in ("active_set", "fista", "lasso_cd"):
        settings = LassoSettings(solver=solver, chunk_rows=16)
        calls = []
        coef = lasso(rows, Dictionary(atoms), 0.05, settings=settings, progress=lambda *a: calls.append(a))
        assert calls[-1] == (50, 50)
        if solver != "lasso_cd":
            assert calls == [(16, 50), (32, 50), (48, 50), (50, 50)]
        assert torch.equal(coef, lasso(rows, Dictionary(atoms), 0.05, settings=settings))


def test_graph_reports_every_layer_pair_of_every_batch(setup):
    model, data = setup
    concepts = extract_concepts(model, data, LAYERS, n_concepts=3, pfvs_per_image=2, seed=1)
    calls = []
    graph = build_graph(model, data, concepts, steps=4, top_t=2, progress=lambda *a: calls.append(a))
    fine = _fine(calls, "graph")
    assert fine == [(0, 20), (4, 20), (8, 20), (12, 20), (16, 20), (18, 20), (20, 20)]
    assert calls[-1] == ("graph", 10, 10) or ("graph", 10, 10) in calls
    assert graph.to_dict() == build_graph(model, data, concepts, steps=4, top_t=2).to_dict()


def test_evaluate_reports_every_step_with_a_total_known_at_the_start(setup):
    model, data = setup
    concepts = extract_concepts(model, data, LAYERS, n_concepts=3, pfvs_per_image=2, seed=1)
    calls = []
    gig.evaluate(model, data, concepts, metrics=gig.evaluation.METRICS, steps=4, max_images=6, top_t=2,
                 versus_steps=(2, 8), n_points=4, n_subsets=4, top_k=5, progress=lambda *a: calls.append(a))
    fine = _fine(calls, "evaluate")
    total = fine[0][1]
    # completeness: 2 pairs × 3 step counts; reconstruction 1; deletion, target_deletion, fidelity: 2 pairs each;
    # the local graph 1, sanity 1, stability noise 1 and the seed + 1 extraction's 2 × 3 batches
    assert total == 6 + 1 + 6 + 1 + 1 + 1 + 6
    _check_moving(fine, total)
    assert len(fine) == total + 1  # one report per step
