"""Naming concepts from probe sets (``gig.naming``): the Lasso-coefficient ROC-AUC against alternatives, on planted
parts whose true concepts are known.

For each planted kind a CNN is trained (cached like ``bench_concepts.py``), concepts are extracted from 120 images
with the library's defaults, and per planted part a probe set is built from fresh images that show the part, masked
to the part (``--probe-images`` of them). Negatives are other fresh images of the same dataset (so they show every
part, the probe's own included, as an audit dataset would). A part's *true concepts* at a layer are those that name
(``ConceptSet.assign``) mostly PFVs of that part on 120 further images (ambiguous cells left out).

Methods, side by side:
- ``lasso-auc`` (the default of ``name_concepts``): ROC-AUC of each concept's coefficient, probe vs negative PFVs,
  with the concept naming (nearest vector) at least 20 % of the probe's PFVs; ``lasso-auc-no-coverage``: the same
  without that coverage condition;
- ``lasso-mass``: the probe's share of coefficient mass on a concept against the negatives' share,
  ``s_p / (s_p + s_n)`` (scored here, outside the library, for the comparison);
- ``cav`` (TCAV-style): a logistic-regression CAV on probe vs negative PFVs, matched to the concept of highest cosine.

Figures: ``top1`` (the probe's best naming is a true concept of its part, over probes whose part has a true concept
at that layer), ``label_precision`` (labelled nodes that are true concepts of their probe's part), ``heldout`` (mean
held-out score of the best naming), ``noise_unmatched`` (probes of uniform noise and of random boxes on ordinary
images that name nothing), ``seconds``.

    python benchmarks/bench_naming.py                       # kinds parts, textures, glyphs, marks
    python benchmarks/bench_naming.py --kinds parts --probe-images 20 --shortcuts patch
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import gig  # noqa: E402
from gig.layers import traced  # noqa: E402
from gig.naming import ProbeSet, auc, name_concepts  # noqa: E402
from gig.planted import kind, make_planted  # noqa: E402
from gig.synthetic import PART_NAMES, part_labels  # noqa: E402


def part_names(name: str) -> list[str]:
    spec = kind(name)
    return list(PART_NAMES) if spec is None else [p.name for p in spec.parts]


def part_probes(name: str, n_images: int, seed: int) -> list[ProbeSet]:
    """One probe per planted part: fresh images showing it, masked to it."""
    images, _, masks = make_planted(name, 40 * n_images, seed=seed)
    probes = []
    for part, label in enumerate(part_names(name), 1):
        shows = ((masks == part).flatten(1).sum(1) > 0).nonzero().flatten()[:n_images]
        probes.append(ProbeSet(label, images[shows], (masks[shows] == part).float()))
    return probes


def noise_probes(name: str, n_images: int, seed: int) -> list[ProbeSet]:
    """Probes with no concept in common: uniform noise, and random boxes on ordinary images."""
    size = kind(name).size if kind(name) else 32
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(n_images, 3, size, size, generator=g)
    images, _, _ = make_planted(name, n_images, seed=seed + 1)
    boxes = torch.zeros(n_images, size, size)
    for i in range(n_images):
        y, x = torch.randint(0, size * 3 // 4, (2,), generator=g).tolist()
        boxes[i, y:y + size // 4, x:x + size // 4] = 1
    return [ProbeSet("noise", noise), ProbeSet("random boxes", images, boxes)]


def true_concepts(model, concepts, name: str, layers, seed: int) -> dict[str, dict[int, int]]:
    """Per layer, the planted part (1-based; 0 = background) that most PFVs named by each concept lie on."""
    images, _, masks = make_planted(name, 120, seed=seed)
    with torch.no_grad():
        out = traced(model).prefix(layers)(images)
    part_of = {}
    for layer in layers:
        truth = part_labels(masks, out[layer].shape[-1]).flatten()
        named = concepts.assign(layer, out[layer]).flatten()
        part_of[layer] = {}
        for k in range(concepts[layer].n_concepts):
            found = truth[(named == k) & (truth >= 0)]
            part_of[layer][k] = int(found.mode().values) if found.numel() else -1
    return part_of


def mass_naming(model, concepts, probes, negatives, layers, holdout, min_score, seed):
    """``lasso-mass``: matches scored by the probe's share of coefficient mass against the negatives'."""
    from gig import naming as nm

    rng = np.random.default_rng(seed)
    neg_fit, neg_held = nm._split(negatives.shape[0], holdout, rng, "negatives")
    neg = nm._pfvs(model, negatives, None, layers, "cpu")
    matches, unmatched = {}, []

    def share(x, layer):
        u = concepts.decompose(layer, x.float()).double().clamp_min(0)
        return u.sum(0) / u.sum().clamp_min(1e-12)

    for probe in probes:
        fit, held = nm._split(probe.images.shape[0], holdout, rng, probe.name)
        pos = nm._pfvs(model, probe.images, probe.masks, layers, "cpu")
        found = []
        for layer in layers:
            sp, sn = share(nm._rows(pos[layer], fit), layer), share(nm._rows(neg[layer], neg_fit), layer)
            hp, hn = share(nm._rows(pos[layer], held), layer), share(nm._rows(neg[layer], neg_held), layer)
            score, heldout = sp / (sp + sn).clamp_min(1e-12), hp / (hp + hn).clamp_min(1e-12)
            found += [{"layer": layer, "concept": k, "node": f"{layer}:{k}", "score": float(score[k]),
                       "heldout_score": float(heldout[k])} for k in range(len(score))]
        found.sort(key=lambda c: -c["score"])
        matches[probe.name] = [c for c in found if c["score"] >= min_score and c["heldout_score"] >= min_score]
        if not matches[probe.name]:
            unmatched.append(probe.name)
    labels = {}
    for name, ms in matches.items():
        for m in ms:
            if m["node"] not in labels or m["score"] > labels[m["node"]][1]:
                labels[m["node"]] = (name, m["score"])
    return nm.Naming(labels, matches, unmatched)


def figures(naming, probes, part_of, names) -> dict:
    top1, eligible, heldout = 0, 0, []
    per_layer = {}
    for part, probe in enumerate(probes, 1):
        ms = naming.matches[probe.name]
        if ms:
            heldout.append(ms[0]["heldout_score"])
        for layer, table in part_of.items():
            if part not in table.values():
                continue
            row = per_layer.setdefault(layer, [0, 0])
            row[1] += 1
            best = next((m for m in ms if m["layer"] == layer), None)
            row[0] += bool(best) and table[best["concept"]] == part
        has_true = any(part in t.values() for t in part_of.values())
        eligible += has_true
        top1 += has_true and bool(ms) and part_of[ms[0]["layer"]][ms[0]["concept"]] == part
    right = sum(part_of[n.rsplit(":", 1)[0]][int(n.rsplit(":", 1)[1])] == names.index(label) + 1
                for n, (label, _) in naming.labels.items() if label in names)
    named = sum(label in names for label, _ in naming.labels.values())
    return {"top1": top1 / max(eligible, 1), "top1_per_layer": {k: v[0] / v[1] for k, v in per_layer.items()},
            "label_precision": right / max(named, 1), "labels": named,
            "unmatched_parts": [p.name for p in probes if p.name in naming.unmatched],
            "heldout": float(np.mean(heldout)) if heldout else None}


def run(name: str, n_probe: int, holdout: float, min_score: float) -> list[dict]:
    from bench_concepts import trained_model

    model = trained_model(name).eval()
    layers = gig.default_layers(model)[1:3] if name == "parts" else gig.default_layers(model)[1:]
    images, labels, _ = make_planted(name, 120, seed=100)
    concepts = gig.extract_concepts(model, [(images, labels)], layers, seed=0)
    part_of = true_concepts(model, concepts, name, layers, seed=300)
    probes = part_probes(name, n_probe, seed=200)
    noise = noise_probes(name, n_probe, seed=400)
    negatives = make_planted(name, 60, seed=500)[0]
    names = part_names(name)
    rows = []
    for method in ("lasso-auc", "lasso-auc-no-coverage", "lasso-mass", "cav"):
        start = time.perf_counter()
        if method == "lasso-mass":
            naming = mass_naming(model, concepts, probes + noise, negatives, layers, holdout, min_score, 0)
        else:
            naming = name_concepts(model, concepts, probes + noise, negatives, layers=layers, holdout=holdout,
                                   min_score=min_score, method="cav" if method == "cav" else "lasso",
                                   min_coverage=0.0 if method == "lasso-auc-no-coverage" else 0.2)
        seconds = time.perf_counter() - start
        rows.append({"kind": name, "method": method, "layers": layers, "probe_images": n_probe, "holdout": holdout,
                     "min_score": min_score, **figures(naming, probes, part_of, names),
                     "noise_unmatched": [p.name for p in noise if p.name in naming.unmatched],
                     "noise_best": {p.name: (naming.probes.get(p.name, {}).get("best") or {}).get("score")
                                    for p in noise},
                     "seconds": round(seconds, 2)})
    return rows


def run_shortcut(kind_name: str, holdout: float, min_score: float) -> list[dict]:
    """The cue of ``gig.shortcuts`` (kind ``patch`` or ``cast``) on the cheating model: does the probe of the cue
    alone name the concept the cue raises most (``cue_concept_scores``, the naming-free truth) at each layer?"""
    from gig import shortcuts

    model, _ = shortcuts.train_shortcut_models(kind_name)["cheating"]
    layers = ["features.1", "features.2"]
    data = shortcuts.make_shortcut_dataset(kind_name, 120, seed=100)
    concepts = gig.extract_concepts(model, [(data.images, data.labels)], layers, seed=0)
    truth = {layer: int(shortcuts.cue_concept_scores(model, concepts, layer, kind_name).argmax()) for layer in layers}
    probe = shortcuts.cue_probes(kind_name, n=20)
    negatives = shortcuts.make_shortcut_dataset(kind_name, 60, seed=500).images
    rows = []
    for method in ("lasso", "cav"):
        start = time.perf_counter()
        naming = name_concepts(model, concepts, [probe], negatives, layers=layers, holdout=holdout,
                               min_score=min_score, method=method)
        ms = naming.matches[probe.name]
        best = {layer: next((m for m in ms if m["layer"] == layer), None) for layer in layers}
        rows.append({"kind": f"shortcut-{kind_name}", "method": "lasso-auc" if method == "lasso" else "cav",
                     "truth": truth, "named": {l: b and b["concept"] for l, b in best.items()},
                     "top1_per_layer": {l: bool(b) and b["concept"] == truth[l] for l, b in best.items()},
                     "heldout": ms[0]["heldout_score"] if ms else None, "unmatched": naming.unmatched,
                     "seconds": round(time.perf_counter() - start, 2)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kinds", nargs="*", default=["parts", "textures", "glyphs", "marks"])
    parser.add_argument("--probe-images", type=int, default=20)
    parser.add_argument("--holdout", type=float, default=0.3)
    parser.add_argument("--min-score", type=float, default=0.6)
    parser.add_argument("--shortcuts", nargs="*", default=["patch", "cast"], help="cue kinds of gig.shortcuts")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name in args.kinds:
        for row in run(name, args.probe_images, args.holdout, args.min_score):
            print(json.dumps(row), flush=True)
    for name in args.shortcuts:
        for row in run_shortcut(name, args.holdout, args.min_score):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
