import datetime

from gigaudit.v1 import resource_state_pb2 as _resource_state_pb2
from google.longrunning import operations_pb2 as _operations_pb2
from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DatasetFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATASET_FORMAT_UNSPECIFIED: _ClassVar[DatasetFormat]
    DATASET_FORMAT_TAR: _ClassVar[DatasetFormat]
    DATASET_FORMAT_ZIP: _ClassVar[DatasetFormat]
    DATASET_FORMAT_WEBDATASET: _ClassVar[DatasetFormat]
    DATASET_FORMAT_PARQUET: _ClassVar[DatasetFormat]
    DATASET_FORMAT_HF_DATASET: _ClassVar[DatasetFormat]
    DATASET_FORMAT_CSV_MANIFEST: _ClassVar[DatasetFormat]
    DATASET_FORMAT_JSONL_MANIFEST: _ClassVar[DatasetFormat]
DATASET_FORMAT_UNSPECIFIED: DatasetFormat
DATASET_FORMAT_TAR: DatasetFormat
DATASET_FORMAT_ZIP: DatasetFormat
DATASET_FORMAT_WEBDATASET: DatasetFormat
DATASET_FORMAT_PARQUET: DatasetFormat
DATASET_FORMAT_HF_DATASET: DatasetFormat
DATASET_FORMAT_CSV_MANIFEST: DatasetFormat
DATASET_FORMAT_JSONL_MANIFEST: DatasetFormat

class Dataset(_message.Message):
    __slots__ = ("name", "display_name", "format", "image_count", "class_names", "size_bytes", "sha256", "uri", "create_time", "owner", "image_sizes", "state", "operation", "image_column", "label_column")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SIZES_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_COLUMN_FIELD_NUMBER: _ClassVar[int]
    LABEL_COLUMN_FIELD_NUMBER: _ClassVar[int]
    name: str
    display_name: str
    format: DatasetFormat
    image_count: int
    class_names: _containers.RepeatedScalarFieldContainer[str]
    size_bytes: int
    sha256: str
    uri: str
    create_time: _timestamp_pb2.Timestamp
    owner: str
    image_sizes: ImageSizes
    state: _resource_state_pb2.ResourceState
    operation: str
    image_column: str
    label_column: str
    def __init__(self, name: _Optional[str] = ..., display_name: _Optional[str] = ..., format: _Optional[_Union[DatasetFormat, str]] = ..., image_count: _Optional[int] = ..., class_names: _Optional[_Iterable[str]] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., uri: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., owner: _Optional[str] = ..., image_sizes: _Optional[_Union[ImageSizes, _Mapping]] = ..., state: _Optional[_Union[_resource_state_pb2.ResourceState, str]] = ..., operation: _Optional[str] = ..., image_column: _Optional[str] = ..., label_column: _Optional[str] = ...) -> None: ...

class ImageSizes(_message.Message):
    __slots__ = ("min_height", "max_height", "median_height", "min_width", "max_width", "median_width")
    MIN_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    MAX_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    MEDIAN_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    MIN_WIDTH_FIELD_NUMBER: _ClassVar[int]
    MAX_WIDTH_FIELD_NUMBER: _ClassVar[int]
    MEDIAN_WIDTH_FIELD_NUMBER: _ClassVar[int]
    min_height: int
    max_height: int
    median_height: int
    min_width: int
    max_width: int
    median_width: int
    def __init__(self, min_height: _Optional[int] = ..., max_height: _Optional[int] = ..., median_height: _Optional[int] = ..., min_width: _Optional[int] = ..., max_width: _Optional[int] = ..., median_width: _Optional[int] = ...) -> None: ...

class UploadDatasetRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: UploadDatasetHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[UploadDatasetHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class UploadDatasetHeader(_message.Message):
    __slots__ = ("dataset_id", "dataset", "request_id")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    dataset: Dataset
    request_id: str
    def __init__(self, dataset_id: _Optional[str] = ..., dataset: _Optional[_Union[Dataset, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class RegisterDatasetRequest(_message.Message):
    __slots__ = ("dataset_id", "dataset", "request_id")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    dataset: Dataset
    request_id: str
    def __init__(self, dataset_id: _Optional[str] = ..., dataset: _Optional[_Union[Dataset, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetDatasetRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListDatasetsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDatasetsResponse(_message.Message):
    __slots__ = ("datasets", "next_page_token")
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    datasets: _containers.RepeatedCompositeFieldContainer[Dataset]
    next_page_token: str
    def __init__(self, datasets: _Optional[_Iterable[_Union[Dataset, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteDatasetRequest(_message.Message):
    __slots__ = ("name", "force")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    force: bool
    def __init__(self, name: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...
