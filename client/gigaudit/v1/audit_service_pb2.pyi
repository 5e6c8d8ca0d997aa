import datetime

from google.longrunning import operations_pb2 as _operations_pb2
from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from gigaudit.v1 import resource_state_pb2 as _resource_state_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ConceptGraphView(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONCEPT_GRAPH_VIEW_UNSPECIFIED: _ClassVar[ConceptGraphView]
    CONCEPT_GRAPH_VIEW_BASIC: _ClassVar[ConceptGraphView]
    CONCEPT_GRAPH_VIEW_FULL: _ClassVar[ConceptGraphView]
CONCEPT_GRAPH_VIEW_UNSPECIFIED: ConceptGraphView
CONCEPT_GRAPH_VIEW_BASIC: ConceptGraphView
CONCEPT_GRAPH_VIEW_FULL: ConceptGraphView

class ConceptOptions(_message.Message):
    __slots__ = ("n_concepts", "method", "pfvs_per_image", "sampling", "lam", "seed")
    N_CONCEPTS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PFVS_PER_IMAGE_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    LAM_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    n_concepts: int
    method: str
    pfvs_per_image: int
    sampling: str
    lam: float
    seed: int
    def __init__(self, n_concepts: _Optional[int] = ..., method: _Optional[str] = ..., pfvs_per_image: _Optional[int] = ..., sampling: _Optional[str] = ..., lam: _Optional[float] = ..., seed: _Optional[int] = ...) -> None: ...

class GraphOptions(_message.Message):
    __slots__ = ("steps", "top_t", "method", "path", "shard_count")
    STEPS_FIELD_NUMBER: _ClassVar[int]
    TOP_T_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    SHARD_COUNT_FIELD_NUMBER: _ClassVar[int]
    steps: int
    top_t: int
    method: str
    path: str
    shard_count: int
    def __init__(self, steps: _Optional[int] = ..., top_t: _Optional[int] = ..., method: _Optional[str] = ..., path: _Optional[str] = ..., shard_count: _Optional[int] = ...) -> None: ...

class ExtractConceptsRequest(_message.Message):
    __slots__ = ("parent", "concept_set_id", "dataset", "layers", "options", "request_id")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    CONCEPT_SET_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    parent: str
    concept_set_id: str
    dataset: str
    layers: _containers.RepeatedScalarFieldContainer[str]
    options: ConceptOptions
    request_id: str
    def __init__(self, parent: _Optional[str] = ..., concept_set_id: _Optional[str] = ..., dataset: _Optional[str] = ..., layers: _Optional[_Iterable[str]] = ..., options: _Optional[_Union[ConceptOptions, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class BuildConceptGraphRequest(_message.Message):
    __slots__ = ("parent", "concept_graph_id", "concept_set", "dataset", "layers", "options", "request_id")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    CONCEPT_GRAPH_ID_FIELD_NUMBER: _ClassVar[int]
    CONCEPT_SET_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    parent: str
    concept_graph_id: str
    concept_set: str
    dataset: str
    layers: _containers.RepeatedScalarFieldContainer[str]
    options: GraphOptions
    request_id: str
    def __init__(self, parent: _Optional[str] = ..., concept_graph_id: _Optional[str] = ..., concept_set: _Optional[str] = ..., dataset: _Optional[str] = ..., layers: _Optional[_Iterable[str]] = ..., options: _Optional[_Union[GraphOptions, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class AuditRequest(_message.Message):
    __slots__ = ("parent", "audit_id", "dataset", "layers", "concept_options", "graph_options", "request_id", "metrics", "evaluation_images", "probes")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    AUDIT_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    CONCEPT_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    GRAPH_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_IMAGES_FIELD_NUMBER: _ClassVar[int]
    PROBES_FIELD_NUMBER: _ClassVar[int]
    parent: str
    audit_id: str
    dataset: str
    layers: _containers.RepeatedScalarFieldContainer[str]
    concept_options: ConceptOptions
    graph_options: GraphOptions
    request_id: str
    metrics: _containers.RepeatedScalarFieldContainer[str]
    evaluation_images: int
    probes: str
    def __init__(self, parent: _Optional[str] = ..., audit_id: _Optional[str] = ..., dataset: _Optional[str] = ..., layers: _Optional[_Iterable[str]] = ..., concept_options: _Optional[_Union[ConceptOptions, _Mapping]] = ..., graph_options: _Optional[_Union[GraphOptions, _Mapping]] = ..., request_id: _Optional[str] = ..., metrics: _Optional[_Iterable[str]] = ..., evaluation_images: _Optional[int] = ..., probes: _Optional[str] = ...) -> None: ...

class LayerConcepts(_message.Message):
    __slots__ = ("layer", "n_concepts", "relative_error", "l0", "rendered_concepts")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    N_CONCEPTS_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_ERROR_FIELD_NUMBER: _ClassVar[int]
    L0_FIELD_NUMBER: _ClassVar[int]
    RENDERED_CONCEPTS_FIELD_NUMBER: _ClassVar[int]
    layer: str
    n_concepts: int
    relative_error: float
    l0: float
    rendered_concepts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, layer: _Optional[str] = ..., n_concepts: _Optional[int] = ..., relative_error: _Optional[float] = ..., l0: _Optional[float] = ..., rendered_concepts: _Optional[_Iterable[int]] = ...) -> None: ...

class ConceptSet(_message.Message):
    __slots__ = ("name", "dataset", "state", "operation", "layers", "options", "create_time", "owner")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    name: str
    dataset: str
    state: _resource_state_pb2.ResourceState
    operation: str
    layers: _containers.RepeatedCompositeFieldContainer[LayerConcepts]
    options: ConceptOptions
    create_time: _timestamp_pb2.Timestamp
    owner: str
    def __init__(self, name: _Optional[str] = ..., dataset: _Optional[str] = ..., state: _Optional[_Union[_resource_state_pb2.ResourceState, str]] = ..., operation: _Optional[str] = ..., layers: _Optional[_Iterable[_Union[LayerConcepts, _Mapping]]] = ..., options: _Optional[_Union[ConceptOptions, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., owner: _Optional[str] = ...) -> None: ...

class ExemplarRef(_message.Message):
    __slots__ = ("image", "position", "coefficient")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    COEFFICIENT_FIELD_NUMBER: _ClassVar[int]
    image: int
    position: int
    coefficient: float
    def __init__(self, image: _Optional[int] = ..., position: _Optional[int] = ..., coefficient: _Optional[float] = ...) -> None: ...

class ConceptNode(_message.Message):
    __slots__ = ("id", "layer", "index", "kind", "name", "count", "frequency", "mean_coefficient", "exemplars", "label", "label_score")
    ID_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    FREQUENCY_FIELD_NUMBER: _ClassVar[int]
    MEAN_COEFFICIENT_FIELD_NUMBER: _ClassVar[int]
    EXEMPLARS_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    LABEL_SCORE_FIELD_NUMBER: _ClassVar[int]
    id: str
    layer: str
    index: int
    kind: str
    name: str
    count: int
    frequency: float
    mean_coefficient: float
    exemplars: _containers.RepeatedCompositeFieldContainer[ExemplarRef]
    label: str
    label_score: float
    def __init__(self, id: _Optional[str] = ..., layer: _Optional[str] = ..., index: _Optional[int] = ..., kind: _Optional[str] = ..., name: _Optional[str] = ..., count: _Optional[int] = ..., frequency: _Optional[float] = ..., mean_coefficient: _Optional[float] = ..., exemplars: _Optional[_Iterable[_Union[ExemplarRef, _Mapping]]] = ..., label: _Optional[str] = ..., label_score: _Optional[float] = ...) -> None: ...

class ClassSum(_message.Message):
    __slots__ = ("sum", "count")
    SUM_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    sum: float
    count: int
    def __init__(self, sum: _Optional[float] = ..., count: _Optional[int] = ...) -> None: ...

class ConceptEdge(_message.Message):
    __slots__ = ("source", "target", "count", "sum", "sum_sq", "pos_sum", "neg_sum", "mean", "std", "share", "class_sums")
    class ClassSumsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: ClassSum
        def __init__(self, key: _Optional[int] = ..., value: _Optional[_Union[ClassSum, _Mapping]] = ...) -> None: ...
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SUM_FIELD_NUMBER: _ClassVar[int]
    SUM_SQ_FIELD_NUMBER: _ClassVar[int]
    POS_SUM_FIELD_NUMBER: _ClassVar[int]
    NEG_SUM_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    CLASS_SUMS_FIELD_NUMBER: _ClassVar[int]
    source: str
    target: str
    count: int
    sum: float
    sum_sq: float
    pos_sum: float
    neg_sum: float
    mean: float
    std: float
    share: float
    class_sums: _containers.MessageMap[int, ClassSum]
    def __init__(self, source: _Optional[str] = ..., target: _Optional[str] = ..., count: _Optional[int] = ..., sum: _Optional[float] = ..., sum_sq: _Optional[float] = ..., pos_sum: _Optional[float] = ..., neg_sum: _Optional[float] = ..., mean: _Optional[float] = ..., std: _Optional[float] = ..., share: _Optional[float] = ..., class_sums: _Optional[_Mapping[int, ClassSum]] = ...) -> None: ...

class ConceptGraph(_message.Message):
    __slots__ = ("name", "concept_set", "dataset", "state", "operation", "layers", "classes", "image_count", "params", "evidence", "node_count", "edge_count", "nodes", "edges", "next_page_token", "create_time", "owner")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONCEPT_SET_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    IMAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    NODE_COUNT_FIELD_NUMBER: _ClassVar[int]
    EDGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    EDGES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    name: str
    concept_set: str
    dataset: str
    state: _resource_state_pb2.ResourceState
    operation: str
    layers: _containers.RepeatedScalarFieldContainer[str]
    classes: _containers.RepeatedScalarFieldContainer[str]
    image_count: int
    params: _struct_pb2.Struct
    evidence: _struct_pb2.Struct
    node_count: int
    edge_count: int
    nodes: _containers.RepeatedCompositeFieldContainer[ConceptNode]
    edges: _containers.RepeatedCompositeFieldContainer[ConceptEdge]
    next_page_token: str
    create_time: _timestamp_pb2.Timestamp
    owner: str
    def __init__(self, name: _Optional[str] = ..., concept_set: _Optional[str] = ..., dataset: _Optional[str] = ..., state: _Optional[_Union[_resource_state_pb2.ResourceState, str]] = ..., operation: _Optional[str] = ..., layers: _Optional[_Iterable[str]] = ..., classes: _Optional[_Iterable[str]] = ..., image_count: _Optional[int] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., evidence: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., node_count: _Optional[int] = ..., edge_count: _Optional[int] = ..., nodes: _Optional[_Iterable[_Union[ConceptNode, _Mapping]]] = ..., edges: _Optional[_Iterable[_Union[ConceptEdge, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., owner: _Optional[str] = ...) -> None: ...

class AuditResult(_message.Message):
    __slots__ = ("concept_set", "concept_graph", "evidence")
    CONCEPT_SET_FIELD_NUMBER: _ClassVar[int]
    CONCEPT_GRAPH_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    concept_set: ConceptSet
    concept_graph: ConceptGraph
    evidence: _struct_pb2.Struct
    def __init__(self, concept_set: _Optional[_Union[ConceptSet, _Mapping]] = ..., concept_graph: _Optional[_Union[ConceptGraph, _Mapping]] = ..., evidence: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class GetConceptSetRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetConceptGraphRequest(_message.Message):
    __slots__ = ("name", "view", "page_size", "page_token")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    name: str
    view: ConceptGraphView
    page_size: int
    page_token: str
    def __init__(self, name: _Optional[str] = ..., view: _Optional[_Union[ConceptGraphView, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class GetConceptExemplarsRequest(_message.Message):
    __slots__ = ("concept_set", "layer", "concept", "max_exemplars")
    CONCEPT_SET_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    CONCEPT_FIELD_NUMBER: _ClassVar[int]
    MAX_EXEMPLARS_FIELD_NUMBER: _ClassVar[int]
    concept_set: str
    layer: str
    concept: int
    max_exemplars: int
    def __init__(self, concept_set: _Optional[str] = ..., layer: _Optional[str] = ..., concept: _Optional[int] = ..., max_exemplars: _Optional[int] = ...) -> None: ...

class ConceptExemplar(_message.Message):
    __slots__ = ("image", "image_name", "position", "coefficient", "thumbnail_png", "ierf_png", "rendered")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_NAME_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    COEFFICIENT_FIELD_NUMBER: _ClassVar[int]
    THUMBNAIL_PNG_FIELD_NUMBER: _ClassVar[int]
    IERF_PNG_FIELD_NUMBER: _ClassVar[int]
    RENDERED_FIELD_NUMBER: _ClassVar[int]
    image: int
    image_name: str
    position: int
    coefficient: float
    thumbnail_png: bytes
    ierf_png: bytes
    rendered: bool
    def __init__(self, image: _Optional[int] = ..., image_name: _Optional[str] = ..., position: _Optional[int] = ..., coefficient: _Optional[float] = ..., thumbnail_png: _Optional[bytes] = ..., ierf_png: _Optional[bytes] = ..., rendered: _Optional[bool] = ...) -> None: ...

class GetConceptExemplarsResponse(_message.Message):
    __slots__ = ("exemplars",)
    EXEMPLARS_FIELD_NUMBER: _ClassVar[int]
    exemplars: _containers.RepeatedCompositeFieldContainer[ConceptExemplar]
    def __init__(self, exemplars: _Optional[_Iterable[_Union[ConceptExemplar, _Mapping]]] = ...) -> None: ...

class RenderExemplarsRequest(_message.Message):
    __slots__ = ("concept_set", "layer", "concepts", "request_id")
    CONCEPT_SET_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    CONCEPTS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    concept_set: str
    layer: str
    concepts: _containers.RepeatedScalarFieldContainer[int]
    request_id: str
    def __init__(self, concept_set: _Optional[str] = ..., layer: _Optional[str] = ..., concepts: _Optional[_Iterable[int]] = ..., request_id: _Optional[str] = ...) -> None: ...

class WatchOperationRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListConceptSetsRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token", "filter")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    filter: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., filter: _Optional[str] = ...) -> None: ...

class ListConceptSetsResponse(_message.Message):
    __slots__ = ("concept_sets", "next_page_token")
    CONCEPT_SETS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    concept_sets: _containers.RepeatedCompositeFieldContainer[ConceptSet]
    next_page_token: str
    def __init__(self, concept_sets: _Optional[_Iterable[_Union[ConceptSet, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteConceptSetRequest(_message.Message):
    __slots__ = ("name", "force")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    force: bool
    def __init__(self, name: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class ListConceptGraphsRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token", "filter")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    filter: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., filter: _Optional[str] = ...) -> None: ...

class ListConceptGraphsResponse(_message.Message):
    __slots__ = ("concept_graphs", "next_page_token")
    CONCEPT_GRAPHS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    concept_graphs: _containers.RepeatedCompositeFieldContainer[ConceptGraph]
    next_page_token: str
    def __init__(self, concept_graphs: _Optional[_Iterable[_Union[ConceptGraph, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteConceptGraphRequest(_message.Message):
    __slots__ = ("name", "force")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    force: bool
    def __init__(self, name: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class ExplainImageRequest(_message.Message):
    __slots__ = ("concept_graph", "image", "target_class", "explain_predicted", "top_k", "request_id")
    CONCEPT_GRAPH_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TARGET_CLASS_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_PREDICTED_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    concept_graph: str
    image: bytes
    target_class: int
    explain_predicted: bool
    top_k: int
    request_id: str
    def __init__(self, concept_graph: _Optional[str] = ..., image: _Optional[bytes] = ..., target_class: _Optional[int] = ..., explain_predicted: _Optional[bool] = ..., top_k: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class ImageExplanation(_message.Message):
    __slots__ = ("predicted_class", "predicted_label", "target_class", "probabilities", "layers", "completeness")
    PREDICTED_CLASS_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_LABEL_FIELD_NUMBER: _ClassVar[int]
    TARGET_CLASS_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    COMPLETENESS_FIELD_NUMBER: _ClassVar[int]
    predicted_class: int
    predicted_label: str
    target_class: int
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    layers: _containers.RepeatedCompositeFieldContainer[LayerExplanation]
    completeness: _struct_pb2.Struct
    def __init__(self, predicted_class: _Optional[int] = ..., predicted_label: _Optional[str] = ..., target_class: _Optional[int] = ..., probabilities: _Optional[_Iterable[float]] = ..., layers: _Optional[_Iterable[_Union[LayerExplanation, _Mapping]]] = ..., completeness: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class LayerExplanation(_message.Message):
    __slots__ = ("source", "target", "contributions")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    source: str
    target: str
    contributions: _containers.RepeatedCompositeFieldContainer[ConceptContribution]
    def __init__(self, source: _Optional[str] = ..., target: _Optional[str] = ..., contributions: _Optional[_Iterable[_Union[ConceptContribution, _Mapping]]] = ...) -> None: ...

class ConceptContribution(_message.Message):
    __slots__ = ("node_id", "concept", "label", "attribution", "coefficient", "ierf_overlay")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CONCEPT_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    COEFFICIENT_FIELD_NUMBER: _ClassVar[int]
    IERF_OVERLAY_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    concept: int
    label: str
    attribution: float
    coefficient: float
    ierf_overlay: bytes
    def __init__(self, node_id: _Optional[str] = ..., concept: _Optional[int] = ..., label: _Optional[str] = ..., attribution: _Optional[float] = ..., coefficient: _Optional[float] = ..., ierf_overlay: _Optional[bytes] = ...) -> None: ...
