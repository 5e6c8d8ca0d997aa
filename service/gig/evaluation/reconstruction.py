"""How faithful the decomposition is, per analysed layer (DESIGN §1.2).

- ``relative_error``: ``‖X − X̂‖ / ‖X‖`` over all PFVs of the evaluated images;
- ``l0``: the fraction of non-zero coefficients;
- spliced agreement: the rest of the network runs on ``X̂`` instead of ``X`` (the segment to the logits);
  ``spliced_top1`` is the fraction of images whose top-1 class is unchanged, ``spliced_kl`` the mean
  ``KL(softmax(original) ‖ softmax(spliced))`` in nats.
"""
from __future__ import annotations

import torch
from torch import nn

from gig.evaluation.pairs import AnalysedBatch
from gig.layers import LOGITS, traced
from gig.pfv import from_pfvs, to_pfvs


def reconstruction(model: nn.Module, batch: AnalysedBatch) -> dict[str, dict[str, float]]:
    """Per layer of ``batch``: ``relative_error``, ``l0``, ``spliced_top1``, ``spliced_kl`` and ``n_images``."""
    t = traced(model)
    original = batch.logits.double().log_softmax(1)
    report = {}
    for layer, coefficients in batch.coefficients.items():
        activation = batch.activations[layer]
        pfvs = to_pfvs(activation).double()
        reconstructed = coefficients @ batch.vectors[layer]
        with torch.no_grad():
            spliced = t.segment(layer, LOGITS)(from_pfvs(reconstructed, activation.shape)).double().log_softmax(1)
        report[layer] = {
            "relative_error": float((pfvs - reconstructed.double()).norm() / pfvs.norm().clamp_min(1e-300)),
            "l0": float((coefficients != 0).double().mean()),
            "spliced_top1": float((spliced.argmax(1) == original.argmax(1)).double().mean()),
            "spliced_kl": float((original.exp() * (original - spliced)).sum(1).mean()),
            "n_images": activation.shape[0],
        }
    return report
