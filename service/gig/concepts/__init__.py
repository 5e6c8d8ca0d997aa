"""Concepts of a model: sampling PFVs, clustering them into concept vectors, and Lasso decomposition."""
from gig.concepts.conceptset import ConceptSet, Exemplar, LayerConcepts
from gig.concepts.decompose import LassoSettings

__all__ = ["ConceptSet", "Exemplar", "LassoSettings", "LayerConcepts"]
