"""The extraction defaults on planted data (issue 13): chosen on three planted kinds, then tested on a fourth
that played no part in choosing them (``gig.planted.HELD_OUT``). The same figures, with timings, come from
``python benchmarks/bench_concepts.py``."""
import warnings

import pytest
import torch

import gig
from gig.concepts import PAPER_PRESET, sample_pfvs
from gig.planted import CHOOSING, HELD_OUT, concept_agreement, make_planted, train_planted

KINDS = [*CHOOSING, *HELD_OUT]


@pytest.fixture(scope="module", params=KINDS)
def scored(request, parts_net):
    """``(kind, concepts, rows)``: concepts at the defaults on 120 images, scored on 120 fresh ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        name = request.param
        model = parts_net[0] if name == "parts" else train_planted(name)[0]
        images, labels, _ = make_planted(name, 120, seed=7)
        data = [(images[i:i + 40], labels[i:i + 40]) for i in range(0, 120, 40)]
        layers = gig.default_layers(model)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the defaults never clip n_concepts on 120 images
            concepts = gig.extract_concepts(model, data, layers)
        samples, _ = sample_pfvs(model, data, layers, "contribution", concepts.params["pfvs_per_image"], 0)
        return name, concepts, concept_agreement(model, concepts, name, samples, 120, seed=1000)
    finally:
        torch.set_num_threads(threads)


def test_concepts_find_the_planted_parts_at_every_layer(scored, record_property):
    name, _, rows = scored
    record_property("figures", rows)
    for row in rows:
        where = f"{name} {row['layer']}: {row}"
        assert row["nmi"] >= 0.9 * row["kmeans16"], where
        # 2× chance, except where plain k-means itself stays below it (the deepest layers, whose PFVs see whole
        # images): there hold 0.9 of what k-means reaches (measured in bench_concepts.py)
        bar = min(2.0, 0.9 * row["kmeans16"] / row["random"])
        assert row["nmi"] >= bar * row["random"], where
        assert row["nmi"] > 1.2 * row["random"], where


def test_naming_by_nearest_concept_beats_the_largest_coefficient(scored):
    name, _, rows = scored
    assert all(row["nmi"] > row["nmi_coefficient"] for row in rows), (name, rows)


def test_the_decomposition_keeps_the_prediction_with_a_similar_sparsity(scored):
    name, _, rows = scored
    for row in rows:
        assert row["spliced_agreement"] >= 0.9, (name, row)
        assert row["relative_error"] < 0.5, (name, row)
        assert 0.03 <= row["l0"] <= 0.5, (name, row)  # one relative λ: a similar sparsity on every layer and kind


def test_the_defaults_are_recorded(scored):
    _, concepts, _ = scored
    assert concepts.method == "kmeans" and concepts.lam == 0.02 and concepts.params["relative_lam"]
    assert concepts.params["pfvs_per_image"] == 4 and set(concepts.params["n_concepts"].values()) == {16}
    assert set(concepts.lam_scales) == set(concepts.layers) and "warnings" not in concepts.params


def test_the_paper_preset_warns_and_records_the_clip(parts_net):
    model, _ = parts_net
    images, labels, _ = make_planted("parts", 40, seed=3)
    with pytest.warns(UserWarning, match="n_concepts clipped"):
        concepts = gig.extract_concepts(model, [(images, labels)], ["features.1", "features.2"], **PAPER_PRESET)
    assert concepts.method == "bisecting_kmeans" and concepts.params["pfvs_per_image"] == 1
    assert concepts.params["n_concepts_requested"] == {"features.1": 256, "features.2": 256}
    assert concepts.params["n_concepts"] == {"features.1": 10, "features.2": 10}  # 40 samples, 4 per concept
    assert len(concepts.params["warnings"]) == 2
