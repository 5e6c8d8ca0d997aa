"""Named concepts from probe sets (issue 9): a probe of a planted part names that part's concept, checked on held-out
probe images; a probe of noise names nothing; bad input is a clear ValueError.

The truth: on the PartsNet of the shared fixture, a concept's part is the planted part under most of the PFVs it
names (``ConceptSet.assign``) on fresh images.
"""
import json

import pytest
import torch

import gig
from gig.concepts.extract import extract_concepts
from gig.layers import traced
from gig.naming import Naming, ProbeSet, label_graph, name_concepts
from gig.synthetic import PART_NAMES, make_parts_dataset, part_labels

LAYERS = ["features.1", "features.2"]


@pytest.fixture(scope="module")
def setup(parts_net):
    torch.set_num_threads(1)
    model, _ = parts_net
    images, labels, _ = make_parts_dataset(120, seed=7)
    concepts = extract_concepts(model, [(images, labels)], LAYERS, seed=0)
    probe_images, _, masks = make_parts_dataset(240, seed=11)
    probes = []
    for part, name in enumerate(PART_NAMES, 1):
        shows = ((masks == part).flatten(1).sum(1) > 0).nonzero().flatten()[:20]
        probes.append(ProbeSet(name, probe_images[shows], (masks[shows] == part).float()))
    negatives = make_parts_dataset(60, seed=12)[0]
    return model, concepts, probes, negatives


def concept_parts(model, concepts):
    """Per layer and concept, the planted part (1-based, 0 = background) under most of the PFVs it names."""
    images, _, masks = make_parts_dataset(120, seed=13)
    with torch.no_grad():
        out = traced(model).prefix(LAYERS)(images)
    table = {}
    for layer in LAYERS:
        truth = part_labels(masks, out[layer].shape[-1]).flatten()
        named = concepts.assign(layer, out[layer]).flatten()
        for k in range(concepts[layer].n_concepts):
            found = truth[(named == k) & (truth >= 0)]
            table[f"{layer}:{k}"] = int(found.mode().values) if found.numel() else -1
    return table


@pytest.fixture(scope="module")
def naming(setup):
    model, concepts, probes, negatives = setup
    return name_concepts(model, concepts, probes, negatives)


def test_each_planted_part_names_its_own_concept(setup, naming, record_property):
    model, concepts, probes, _ = setup
    truth = concept_parts(model, concepts)
    assert naming.unmatched == []
    for part, probe in enumerate(probes, 1):
        best = naming.matches[probe.name][0]
        assert truth[best["node"]] == part, (probe.name, best)
    labelled = [truth[node] == PART_NAMES.index(name) + 1 for node, (name, _) in naming.labels.items()]
    record_property("figures", {"labels": len(labelled), "label_precision": sum(labelled) / len(labelled)})
    assert sum(labelled) / len(labelled) >= 0.85


def test_namings_carry_their_held_out_check(naming):
    for matches in naming.matches.values():
        for m in matches:
            assert m["score"] >= 0.6 and m["heldout_score"] >= 0.6
            assert m["node"] == f"{m['layer']}:{m['concept']}"
            assert naming.labels[m["node"]][1] >= m["score"]  # a node is labelled by its best-scoring probe
    info = naming.probes[PART_NAMES[0]]
    assert info["fit"] + info["heldout"] == info["images"] == 20 and info["heldout"] == 6
    assert json.loads(json.dumps(naming.to_dict())) == naming.to_dict()
    assert Naming.from_dict(naming.to_dict()) == naming


def test_probes_of_noise_are_unmatched(setup):
    model, concepts, _, negatives = setup
    g = torch.Generator().manual_seed(0)
    noise = ProbeSet("noise", torch.rand(20, 3, 32, 32, generator=g))
    images = make_parts_dataset(20, seed=14)[0]
    boxes = torch.zeros(20, 32, 32)
    for i, (y, x) in enumerate(torch.randint(0, 24, (20, 2), generator=g).tolist()):
        boxes[i, y:y + 8, x:x + 8] = 1
    result = name_concepts(model, concepts, [noise, ProbeSet("boxes", images, boxes)], negatives)
    assert result.unmatched == ["noise", "boxes"] and result.labels == {}
    assert result.probes["noise"]["best"] is not None  # how close it came is reported


def test_label_graph_sets_labels_and_evidence(setup, naming):
    model, concepts, _, negatives = setup
    graph = gig.build_graph(model, [negatives[:12]], concepts, steps=8).to_dict()
    labelled = label_graph(graph, naming)
    assert "label" not in json.dumps(graph["nodes"])  # the input is left alone
    nodes = {n["id"]: n for n in labelled["nodes"]}
    for node, (name, score) in naming.labels.items():
        assert nodes[node]["label"] == name and nodes[node]["label_score"] == score
    assert sum("label" in n for n in labelled["nodes"]) == len(naming.labels)
    assert labelled["evidence"]["naming"] == naming.to_dict()
    with pytest.raises(ValueError, match="does not have"):
        label_graph(graph, Naming(labels={"features.9:0": ("x", 0.9)}))


def test_bad_input_is_a_clear_value_error(setup):
    model, concepts, probes, negatives = setup
    with pytest.raises(ValueError, match="at least one probe set"):
        name_concepts(model, concepts, [], negatives)
    with pytest.raises(ValueError, match="empty"):
        ProbeSet("grass", torch.zeros(0, 3, 32, 32))
    with pytest.raises(ValueError, match="64×64 px"):
        name_concepts(model, concepts, [ProbeSet("big", torch.rand(4, 3, 64, 64))], negatives)
    with pytest.raises(ValueError, match="RGB"):
        ProbeSet("grey", torch.rand(4, 1, 32, 32))
    with pytest.raises(ValueError, match=r"masks must have shape \(4, 32, 32\)"):
        ProbeSet("masked", torch.rand(4, 3, 32, 32), torch.ones(4, 16, 16))
    with pytest.raises(ValueError, match="empty"):
        ProbeSet("masked", torch.rand(2, 3, 32, 32), torch.zeros(2, 32, 32))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ProbeSet("masked", torch.rand(2, 3, 32, 32), torch.full((2, 32, 32), 2.0))
    with pytest.raises(ValueError, match="unique"):
        name_concepts(model, concepts, [probes[0], probes[0]], negatives)
    with pytest.raises(ValueError, match="at least 2 images"):
        name_concepts(model, concepts, [ProbeSet("one", probes[0].images[:1])], negatives)
    with pytest.raises(ValueError, match="subset of the concept set's layers"):
        name_concepts(model, concepts, probes[:1], negatives, layers=["features.3"])
    with pytest.raises(ValueError, match="unknown naming method"):
        name_concepts(model, concepts, probes[:1], negatives, method="tcav")
