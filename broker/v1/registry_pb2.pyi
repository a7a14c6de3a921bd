# Generated from protos/ by scripts/gen_protos.sh; do not edit.
import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Backbone(_message.Message):
    __slots__ = ("id", "endpoint", "org_ids", "cluster_ids", "region", "version", "status", "create_time", "update_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    ORG_IDS_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_IDS_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    endpoint: str
    org_ids: _containers.RepeatedScalarFieldContainer[str]
    cluster_ids: _containers.RepeatedScalarFieldContainer[str]
    region: str
    version: str
    status: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., endpoint: _Optional[str] = ..., org_ids: _Optional[_Iterable[str]] = ..., cluster_ids: _Optional[_Iterable[str]] = ..., region: _Optional[str] = ..., version: _Optional[str] = ..., status: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateBackboneRequest(_message.Message):
    __slots__ = ("backbone",)
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    backbone: Backbone
    def __init__(self, backbone: _Optional[_Union[Backbone, _Mapping]] = ...) -> None: ...

class CreateBackboneResponse(_message.Message):
    __slots__ = ("backbone",)
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    backbone: Backbone
    def __init__(self, backbone: _Optional[_Union[Backbone, _Mapping]] = ...) -> None: ...

class GetBackboneRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetBackboneResponse(_message.Message):
    __slots__ = ("backbone",)
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    backbone: Backbone
    def __init__(self, backbone: _Optional[_Union[Backbone, _Mapping]] = ...) -> None: ...

class UpdateBackboneRequest(_message.Message):
    __slots__ = ("backbone",)
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    backbone: Backbone
    def __init__(self, backbone: _Optional[_Union[Backbone, _Mapping]] = ...) -> None: ...

class UpdateBackboneResponse(_message.Message):
    __slots__ = ("backbone",)
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    backbone: Backbone
    def __init__(self, backbone: _Optional[_Union[Backbone, _Mapping]] = ...) -> None: ...

class DeleteBackboneRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeleteBackboneResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListBackbonesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListBackbonesResponse(_message.Message):
    __slots__ = ("backbones",)
    BACKBONES_FIELD_NUMBER: _ClassVar[int]
    backbones: _containers.RepeatedCompositeFieldContainer[Backbone]
    def __init__(self, backbones: _Optional[_Iterable[_Union[Backbone, _Mapping]]] = ...) -> None: ...
