"""gig: concept graphs of image models with Generalized Integrated Gradients (arXiv:2409.01610)."""
from gig.layers import LOGITS, LayerInfo, default_layers, list_layers, traced

__all__ = ["LOGITS", "LayerInfo", "default_layers", "list_layers", "traced"]
