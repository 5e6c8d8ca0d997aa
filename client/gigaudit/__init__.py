"""gigaudit: the thin client of the gigaudit audit service (no torch)."""
from gigaudit.client import AuditClient
from gigaudit.errors import GigauditError
from gigaudit.policy import Policy, PolicyResult, evaluate_policy, load_policy
from gigaudit.results import ConceptGraph, Exemplar

__all__ = ["AuditClient", "ConceptGraph", "Exemplar", "GigauditError", "Policy", "PolicyResult", "evaluate_policy",
           "load_policy"]
