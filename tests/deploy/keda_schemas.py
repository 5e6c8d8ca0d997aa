"""JSON Schemas for the KEDA custom resources the chart renders (kubernetes-validate knows only built-in kinds).

Written from KEDA's documented ScaledObject / TriggerAuthentication fields (keda.sh/v1alpha1), restricted to what
a redis-streams trigger uses; unknown fields are refused so a typo in the chart fails the test.
"""
from __future__ import annotations

_METADATA = {"type": "object", "required": ["name"], "properties": {
    "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 253},
    "namespace": {"type": "string"},
    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    "annotations": {"type": "object", "additionalProperties": {"type": "string"}}}}

_REDIS_STREAMS_METADATA = {
    "type": "object", "additionalProperties": False, "required": ["stream"],
    "anyOf": [{"required": ["address"]}, {"required": ["host", "port"]}],
    "oneOf": [{"required": ["pendingEntriesCount"]}, {"required": ["streamLength"]}, {"required": ["lagCount"]}],
    "properties": {name: {"type": "string"} for name in (
        "address", "host", "port", "stream", "consumerGroup", "pendingEntriesCount", "streamLength", "lagCount",
        "enableTLS", "unsafeSsl", "databaseIndex", "usernameFromEnv", "passwordFromEnv")},
}

SCALED_OBJECT = {
    "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"}, "kind": {"const": "ScaledObject"}, "metadata": _METADATA,
        "spec": {"type": "object", "additionalProperties": False, "required": ["scaleTargetRef", "triggers"],
                 "properties": {
                     "scaleTargetRef": {"type": "object", "additionalProperties": False, "required": ["name"],
                                        "properties": {"name": {"type": "string"}, "kind": {"type": "string"},
                                                       "apiVersion": {"type": "string"}}},
                     "minReplicaCount": {"type": "integer", "minimum": 0},
                     "maxReplicaCount": {"type": "integer", "minimum": 1},
                     "pollingInterval": {"type": "integer", "minimum": 1},
                     "cooldownPeriod": {"type": "integer", "minimum": 0},
                     "triggers": {"type": "array", "minItems": 1, "items": {
                         "type": "object", "additionalProperties": False, "required": ["type", "metadata"],
                         "properties": {
                             "type": {"const": "redis-streams"}, "metadata": _REDIS_STREAMS_METADATA,
                             "authenticationRef": {"type": "object", "additionalProperties": False,
                                                   "required": ["name"], "properties": {
                                                       "name": {"type": "string"}, "kind": {"type": "string"}}}}}}}}},
}

TRIGGER_AUTHENTICATION = {
    "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"}, "kind": {"const": "TriggerAuthentication"},
        "metadata": _METADATA,
        "spec": {"type": "object", "additionalProperties": False, "required": ["secretTargetRef"], "properties": {
            "secretTargetRef": {"type": "array", "minItems": 1, "items": {
                "type": "object", "additionalProperties": False, "required": ["parameter", "name", "key"],
                "properties": {"parameter": {"type": "string"}, "name": {"type": "string"},
                               "key": {"type": "string"}}}}}}},
}

SCHEMAS = {("keda.sh/v1alpha1", "ScaledObject"): SCALED_OBJECT,
           ("keda.sh/v1alpha1", "TriggerAuthentication"): TRIGGER_AUTHENTICATION}
