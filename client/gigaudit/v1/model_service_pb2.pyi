import datetime

from gigaudit.v1 import resource_state_pb2 as _resource_state_pb2
from google.longrunning import operations_pb2 as _operations_pb2
from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ResizeMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESIZE_MODE_UNSPECIFIED: _ClassVar[ResizeMode]
    RESIZE_MODE_SHORTER_SIDE_CROP: _ClassVar[ResizeMode]
    RESIZE_MODE_EXACT: _ClassVar[ResizeMode]

class Interpolation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INTERPOLATION_UNSPECIFIED: _ClassVar[Interpolation]
    INTERPOLATION_BILINEAR: _ClassVar[Interpolation]
    INTERPOLATION_BICUBIC: _ClassVar[Interpolation]
    INTERPOLATION_NEAREST: _ClassVar[Interpolation]
    INTERPOLATION_LANCZOS: _ClassVar[Interpolation]
RESIZE_MODE_UNSPECIFIED: ResizeMode
RESIZE_MODE_SHORTER_SIDE_CROP: ResizeMode
RESIZE_MODE_EXACT: ResizeMode
INTERPOLATION_UNSPECIFIED: Interpolation
INTERPOLATION_BILINEAR: Interpolation
INTERPOLATION_BICUBIC: Interpolation
INTERPOLATION_NEAREST: Interpolation
INTERPOLATION_LANCZOS: Interpolation

class Model(_message.Message):
    __slots__ = ("name", "display_name", "architecture", "num_classes", "class_names", "input_size", "mean", "std", "size_bytes", "sha256", "create_time", "default_layers", "state", "owner", "operation", "preprocessing", "architecture_options", "tracer", "family")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    INPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_LAYERS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    PREPROCESSING_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    TRACER_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    name: str
    display_name: str
    architecture: str
    num_classes: int
    class_names: _containers.RepeatedScalarFieldContainer[str]
    input_size: int
    mean: _containers.RepeatedScalarFieldContainer[float]
    std: _containers.RepeatedScalarFieldContainer[float]
    size_bytes: int
    sha256: str
    create_time: _timestamp_pb2.Timestamp
    default_layers: _containers.RepeatedScalarFieldContainer[str]
    state: _resource_state_pb2.ResourceState
    owner: str
    operation: str
    preprocessing: Preprocessing
    architecture_options: _struct_pb2.Struct
    tracer: TracerOptions
    family: str
    def __init__(self, name: _Optional[str] = ..., display_name: _Optional[str] = ..., architecture: _Optional[str] = ..., num_classes: _Optional[int] = ..., class_names: _Optional[_Iterable[str]] = ..., input_size: _Optional[int] = ..., mean: _Optional[_Iterable[float]] = ..., std: _Optional[_Iterable[float]] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., default_layers: _Optional[_Iterable[str]] = ..., state: _Optional[_Union[_resource_state_pb2.ResourceState, str]] = ..., owner: _Optional[str] = ..., operation: _Optional[str] = ..., preprocessing: _Optional[_Union[Preprocessing, _Mapping]] = ..., architecture_options: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., tracer: _Optional[_Union[TracerOptions, _Mapping]] = ..., family: _Optional[str] = ...) -> None: ...

class Preprocessing(_message.Message):
    __slots__ = ("height", "width", "resize_mode", "crop_pct", "interpolation", "mean", "std", "source")
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    RESIZE_MODE_FIELD_NUMBER: _ClassVar[int]
    CROP_PCT_FIELD_NUMBER: _ClassVar[int]
    INTERPOLATION_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    height: int
    width: int
    resize_mode: ResizeMode
    crop_pct: float
    interpolation: Interpolation
    mean: _containers.RepeatedScalarFieldContainer[float]
    std: _containers.RepeatedScalarFieldContainer[float]
    source: str
    def __init__(self, height: _Optional[int] = ..., width: _Optional[int] = ..., resize_mode: _Optional[_Union[ResizeMode, str]] = ..., crop_pct: _Optional[float] = ..., interpolation: _Optional[_Union[Interpolation, str]] = ..., mean: _Optional[_Iterable[float]] = ..., std: _Optional[_Iterable[float]] = ..., source: _Optional[str] = ...) -> None: ...

class TracerOptions(_message.Message):
    __slots__ = ("leaf_modules", "autowrap_functions", "hooked_layers")
    LEAF_MODULES_FIELD_NUMBER: _ClassVar[int]
    AUTOWRAP_FUNCTIONS_FIELD_NUMBER: _ClassVar[int]
    HOOKED_LAYERS_FIELD_NUMBER: _ClassVar[int]
    leaf_modules: _containers.RepeatedScalarFieldContainer[str]
    autowrap_functions: _containers.RepeatedScalarFieldContainer[str]
    hooked_layers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, leaf_modules: _Optional[_Iterable[str]] = ..., autowrap_functions: _Optional[_Iterable[str]] = ..., hooked_layers: _Optional[_Iterable[str]] = ...) -> None: ...

class UploadModelRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: UploadModelHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[UploadModelHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class UploadModelHeader(_message.Message):
    __slots__ = ("model_id", "model", "request_id")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    model: Model
    request_id: str
    def __init__(self, model_id: _Optional[str] = ..., model: _Optional[_Union[Model, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "next_page_token")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    next_page_token: str
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteModelRequest(_message.Message):
    __slots__ = ("name", "force")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    force: bool
    def __init__(self, name: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class ListLayersRequest(_message.Message):
    __slots__ = ("parent", "architecture", "num_classes", "architecture_options", "tracer")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    TRACER_FIELD_NUMBER: _ClassVar[int]
    parent: str
    architecture: str
    num_classes: int
    architecture_options: _struct_pb2.Struct
    tracer: TracerOptions
    def __init__(self, parent: _Optional[str] = ..., architecture: _Optional[str] = ..., num_classes: _Optional[int] = ..., architecture_options: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., tracer: _Optional[_Union[TracerOptions, _Mapping]] = ...) -> None: ...

class Layer(_message.Message):
    __slots__ = ("name", "type", "is_cut", "reason", "is_default", "capture")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    IS_CUT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    is_cut: bool
    reason: str
    is_default: bool
    capture: str
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., is_cut: _Optional[bool] = ..., reason: _Optional[str] = ..., is_default: _Optional[bool] = ..., capture: _Optional[str] = ...) -> None: ...

class ListLayersResponse(_message.Message):
    __slots__ = ("layers", "default_layers")
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_LAYERS_FIELD_NUMBER: _ClassVar[int]
    layers: _containers.RepeatedCompositeFieldContainer[Layer]
    default_layers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, layers: _Optional[_Iterable[_Union[Layer, _Mapping]]] = ..., default_layers: _Optional[_Iterable[str]] = ...) -> None: ...

class ListArchitecturesRequest(_message.Message):
    __slots__ = ("family",)
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    family: str
    def __init__(self, family: _Optional[str] = ...) -> None: ...

class Architecture(_message.Message):
    __slots__ = ("name", "description", "family", "source", "weights_format")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FORMAT_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    family: str
    source: str
    weights_format: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., family: _Optional[str] = ..., source: _Optional[str] = ..., weights_format: _Optional[str] = ...) -> None: ...

class ListArchitecturesResponse(_message.Message):
    __slots__ = ("architectures",)
    ARCHITECTURES_FIELD_NUMBER: _ClassVar[int]
    architectures: _containers.RepeatedCompositeFieldContainer[Architecture]
    def __init__(self, architectures: _Optional[_Iterable[_Union[Architecture, _Mapping]]] = ...) -> None: ...
