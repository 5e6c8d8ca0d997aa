"""Concepts of a model: sampling PFVs, clustering them into concept vectors, and Lasso decomposition."""
from gig.concepts.clustering import CLUSTERINGS, cluster, register
from gig.concepts.conceptset import ConceptSet, Exemplar, LayerConcepts
from gig.concepts.decompose import LassoSettings
from gig.concepts.extract import PAPER_PRESET, extract_concepts, sample_pfvs

__all__ = ["CLUSTERINGS", "ConceptSet", "Exemplar", "LassoSettings", "LayerConcepts", "PAPER_PRESET", "cluster", "extract_concepts",
           "register", "sample_pfvs"]
