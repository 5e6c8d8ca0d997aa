from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor

class ResourceState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESOURCE_STATE_UNSPECIFIED: _ClassVar[ResourceState]
    RESOURCE_STATE_CREATING: _ClassVar[ResourceState]
    RESOURCE_STATE_ACTIVE: _ClassVar[ResourceState]
    RESOURCE_STATE_FAILED: _ClassVar[ResourceState]
RESOURCE_STATE_UNSPECIFIED: ResourceState
RESOURCE_STATE_CREATING: ResourceState
RESOURCE_STATE_ACTIVE: ResourceState
RESOURCE_STATE_FAILED: ResourceState
