"""Job schemas: bounds checked once, unset options left out, docs generated from them."""
from __future__ import annotations

from pathlib import Path

import pytest

from gigaudit_server.queue import schemas

ROOT = Path(__file__).resolve().parents[3]
MODEL = {"name": "models/m", "architecture": "partsnet", "num_classes": 6, "input_size": 32, "mean": [0, 0, 0],
         "std": [1, 1, 1], "weights_sha256": "a" * 64}
DATASET = {"name": "datasets/d", "sha256": "b" * 64, "format": "tar", "n_images": 4}


def test_unset_options_are_left_out_so_that_gigs_defaults_apply():
    params = schemas.to_params(schemas.ExtractConcepts(model=MODEL, dataset=DATASET, layers=["l"],
                                                       concept_set="models/m/conceptSets/s", n_concepts=8))
    assert params["n_concepts"] == 8 and "lam" not in params and "method" not in params
    assert schemas.parse("extract_concepts", params).n_concepts == 8


@pytest.mark.parametrize("values, field", [({"n_concepts": 0}, "n_concepts"), ({"pfvs_per_image": 5000},
                                           "pfvs_per_image"), ({"lam": -1.0}, "lam"), ({"layers": []}, "layers")])
def test_out_of_bounds_or_unknown_values_are_refused_naming_the_field(values, field):
    with pytest.raises(schemas.ValidationError) as info:
        schemas.ExtractConcepts(**{"model": MODEL, "dataset": DATASET, "layers": ["l"],
                                   "concept_set": "models/m/conceptSets/s", **values})
    assert field in schemas.violations(info.value)


def test_model_specs_and_unknown_kinds_are_checked():
    with pytest.raises(schemas.ValidationError):
        schemas.ModelSpec(**{**MODEL, "std": [1, 0, 1]})
    with pytest.raises(schemas.ValidationError):
        schemas.ModelSpec(**{**MODEL, "weights_sha256": "not a sha"})
    with pytest.raises(ValueError, match="unknown job kind"):
        schemas.parse("nonsense", {})


def test_docs_jobs_md_is_generated_from_the_schemas():
    assert (ROOT / "docs" / "jobs.md").read_text() == schemas.markdown(), \
        "regenerate: python -m gigaudit_server.queue.schemas > docs/jobs.md"
