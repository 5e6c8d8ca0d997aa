"""gig: concept graphs of image models with Generalized Integrated Gradients (arXiv:2409.01610)."""
from gig.attribution import Attribution, attribute
from gig.build import build_graph
from gig.concepts import ConceptSet, LayerConcepts, extract_concepts
from gig.erf import erf  # the function; the module stays importable as `from gig.erf import ...`
from gig.evaluation import evaluate
from gig.explain import explain  # the function, like erf
from gig.graph import ConceptGraph
from gig.layers import LOGITS, LayerInfo, TracerOptions, configure_tracing, default_layers, list_layers, traced
from gig.naming import Naming, ProbeSet, label_graph, name_concepts
from gig.preprocessing import Preprocessing, resolve

__all__ = [
    "Attribution", "attribute", "ConceptSet", "LayerConcepts", "extract_concepts", "erf", "LOGITS", "LayerInfo", "default_layers", "list_layers",
    "traced", "ConceptGraph", "build_graph", "evaluate", "explain", "Naming", "ProbeSet", "label_graph",
    "name_concepts", "TracerOptions", "configure_tracing", "Preprocessing", "resolve",
]
