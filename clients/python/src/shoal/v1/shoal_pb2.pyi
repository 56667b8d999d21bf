from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Metric(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METRIC_UNSPECIFIED: _ClassVar[Metric]
    COSINE: _ClassVar[Metric]
    DOT: _ClassVar[Metric]
    L2: _ClassVar[Metric]

class NullValue(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NULL_VALUE: _ClassVar[NullValue]

class Consistency(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONSISTENCY_UNSPECIFIED: _ClassVar[Consistency]
    EVENTUAL: _ClassVar[Consistency]
    SESSION: _ClassVar[Consistency]
    STRONG: _ClassVar[Consistency]
METRIC_UNSPECIFIED: Metric
COSINE: Metric
DOT: Metric
L2: Metric
NULL_VALUE: NullValue
CONSISTENCY_UNSPECIFIED: Consistency
EVENTUAL: Consistency
SESSION: Consistency
STRONG: Consistency

class UpdateCollectionRequest(_message.Message):
    __slots__ = ("name", "replication_factor", "shard_count")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_FACTOR_FIELD_NUMBER: _ClassVar[int]
    SHARD_COUNT_FIELD_NUMBER: _ClassVar[int]
    name: str
    replication_factor: int
    shard_count: int
    def __init__(self, name: _Optional[str] = ..., replication_factor: _Optional[int] = ..., shard_count: _Optional[int] = ...) -> None: ...

class CreateCollectionRequest(_message.Message):
    __slots__ = ("name", "dim", "metric", "shard_count", "replication_factor", "m", "ef_construction")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    SHARD_COUNT_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_FACTOR_FIELD_NUMBER: _ClassVar[int]
    M_FIELD_NUMBER: _ClassVar[int]
    EF_CONSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    dim: int
    metric: Metric
    shard_count: int
    replication_factor: int
    m: int
    ef_construction: int
    def __init__(self, name: _Optional[str] = ..., dim: _Optional[int] = ..., metric: _Optional[_Union[Metric, str]] = ..., shard_count: _Optional[int] = ..., replication_factor: _Optional[int] = ..., m: _Optional[int] = ..., ef_construction: _Optional[int] = ...) -> None: ...

class CollectionConfig(_message.Message):
    __slots__ = ("name", "dim", "metric", "shard_count", "replication_factor", "m", "ef_construction")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    SHARD_COUNT_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_FACTOR_FIELD_NUMBER: _ClassVar[int]
    M_FIELD_NUMBER: _ClassVar[int]
    EF_CONSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    dim: int
    metric: Metric
    shard_count: int
    replication_factor: int
    m: int
    ef_construction: int
    def __init__(self, name: _Optional[str] = ..., dim: _Optional[int] = ..., metric: _Optional[_Union[Metric, str]] = ..., shard_count: _Optional[int] = ..., replication_factor: _Optional[int] = ..., m: _Optional[int] = ..., ef_construction: _Optional[int] = ...) -> None: ...

class ShardInfo(_message.Message):
    __slots__ = ("shard", "points_count", "tombstones", "applied_seq")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    POINTS_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOMBSTONES_FIELD_NUMBER: _ClassVar[int]
    APPLIED_SEQ_FIELD_NUMBER: _ClassVar[int]
    shard: int
    points_count: int
    tombstones: int
    applied_seq: int
    def __init__(self, shard: _Optional[int] = ..., points_count: _Optional[int] = ..., tombstones: _Optional[int] = ..., applied_seq: _Optional[int] = ...) -> None: ...

class CollectionInfo(_message.Message):
    __slots__ = ("config", "points_count", "shards")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    POINTS_COUNT_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    config: CollectionConfig
    points_count: int
    shards: _containers.RepeatedCompositeFieldContainer[ShardInfo]
    def __init__(self, config: _Optional[_Union[CollectionConfig, _Mapping]] = ..., points_count: _Optional[int] = ..., shards: _Optional[_Iterable[_Union[ShardInfo, _Mapping]]] = ...) -> None: ...

class GetCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListCollectionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListCollectionsResponse(_message.Message):
    __slots__ = ("collections",)
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedCompositeFieldContainer[CollectionInfo]
    def __init__(self, collections: _Optional[_Iterable[_Union[CollectionInfo, _Mapping]]] = ...) -> None: ...

class DeleteCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteCollectionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PointId(_message.Message):
    __slots__ = ("num", "uuid")
    NUM_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    num: int
    uuid: str
    def __init__(self, num: _Optional[int] = ..., uuid: _Optional[str] = ...) -> None: ...

class Value(_message.Message):
    __slots__ = ("null_value", "bool_value", "integer_value", "double_value", "string_value", "list_value", "struct_value")
    NULL_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    INTEGER_VALUE_FIELD_NUMBER: _ClassVar[int]
    DOUBLE_VALUE_FIELD_NUMBER: _ClassVar[int]
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    LIST_VALUE_FIELD_NUMBER: _ClassVar[int]
    STRUCT_VALUE_FIELD_NUMBER: _ClassVar[int]
    null_value: NullValue
    bool_value: bool
    integer_value: int
    double_value: float
    string_value: str
    list_value: ListValue
    struct_value: Struct
    def __init__(self, null_value: _Optional[_Union[NullValue, str]] = ..., bool_value: _Optional[bool] = ..., integer_value: _Optional[int] = ..., double_value: _Optional[float] = ..., string_value: _Optional[str] = ..., list_value: _Optional[_Union[ListValue, _Mapping]] = ..., struct_value: _Optional[_Union[Struct, _Mapping]] = ...) -> None: ...

class ListValue(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedCompositeFieldContainer[Value]
    def __init__(self, values: _Optional[_Iterable[_Union[Value, _Mapping]]] = ...) -> None: ...

class Struct(_message.Message):
    __slots__ = ("fields",)
    class FieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    fields: _containers.MessageMap[str, Value]
    def __init__(self, fields: _Optional[_Mapping[str, Value]] = ...) -> None: ...

class Point(_message.Message):
    __slots__ = ("id", "vector", "payload")
    class PayloadEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    id: PointId
    vector: _containers.RepeatedScalarFieldContainer[float]
    payload: _containers.MessageMap[str, Value]
    def __init__(self, id: _Optional[_Union[PointId, _Mapping]] = ..., vector: _Optional[_Iterable[float]] = ..., payload: _Optional[_Mapping[str, Value]] = ...) -> None: ...

class UpsertRequest(_message.Message):
    __slots__ = ("collection", "points")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    points: _containers.RepeatedCompositeFieldContainer[Point]
    def __init__(self, collection: _Optional[str] = ..., points: _Optional[_Iterable[_Union[Point, _Mapping]]] = ...) -> None: ...

class DeletePointsRequest(_message.Message):
    __slots__ = ("collection", "ids")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: _containers.RepeatedCompositeFieldContainer[PointId]
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Iterable[_Union[PointId, _Mapping]]] = ...) -> None: ...

class WriteResponse(_message.Message):
    __slots__ = ("count", "token")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    count: int
    token: WriteToken
    def __init__(self, count: _Optional[int] = ..., token: _Optional[_Union[WriteToken, _Mapping]] = ...) -> None: ...

class ReadOptions(_message.Message):
    __slots__ = ("consistency", "token")
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    consistency: Consistency
    token: WriteToken
    def __init__(self, consistency: _Optional[_Union[Consistency, str]] = ..., token: _Optional[_Union[WriteToken, _Mapping]] = ...) -> None: ...

class WriteToken(_message.Message):
    __slots__ = ("collection_id", "shards")
    COLLECTION_ID_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    collection_id: int
    shards: _containers.RepeatedCompositeFieldContainer[ShardIndex]
    def __init__(self, collection_id: _Optional[int] = ..., shards: _Optional[_Iterable[_Union[ShardIndex, _Mapping]]] = ...) -> None: ...

class ShardIndex(_message.Message):
    __slots__ = ("shard", "index")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    shard: int
    index: int
    def __init__(self, shard: _Optional[int] = ..., index: _Optional[int] = ...) -> None: ...

class GetPointsRequest(_message.Message):
    __slots__ = ("collection", "ids", "with_payload", "with_vector", "read")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    WITH_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    WITH_VECTOR_FIELD_NUMBER: _ClassVar[int]
    READ_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: _containers.RepeatedCompositeFieldContainer[PointId]
    with_payload: bool
    with_vector: bool
    read: ReadOptions
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Iterable[_Union[PointId, _Mapping]]] = ..., with_payload: _Optional[bool] = ..., with_vector: _Optional[bool] = ..., read: _Optional[_Union[ReadOptions, _Mapping]] = ...) -> None: ...

class RetrievedPoint(_message.Message):
    __slots__ = ("id", "vector", "payload")
    class PayloadEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    id: PointId
    vector: _containers.RepeatedScalarFieldContainer[float]
    payload: _containers.MessageMap[str, Value]
    def __init__(self, id: _Optional[_Union[PointId, _Mapping]] = ..., vector: _Optional[_Iterable[float]] = ..., payload: _Optional[_Mapping[str, Value]] = ...) -> None: ...

class GetPointsResponse(_message.Message):
    __slots__ = ("points",)
    POINTS_FIELD_NUMBER: _ClassVar[int]
    points: _containers.RepeatedCompositeFieldContainer[RetrievedPoint]
    def __init__(self, points: _Optional[_Iterable[_Union[RetrievedPoint, _Mapping]]] = ...) -> None: ...

class Filter(_message.Message):
    __slots__ = ("must", "should", "must_not")
    MUST_FIELD_NUMBER: _ClassVar[int]
    SHOULD_FIELD_NUMBER: _ClassVar[int]
    MUST_NOT_FIELD_NUMBER: _ClassVar[int]
    must: _containers.RepeatedCompositeFieldContainer[Condition]
    should: _containers.RepeatedCompositeFieldContainer[Condition]
    must_not: _containers.RepeatedCompositeFieldContainer[Condition]
    def __init__(self, must: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ..., should: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ..., must_not: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ...) -> None: ...

class Condition(_message.Message):
    __slots__ = ("keyword", "integer", "range", "is_null", "is_empty", "has_id", "filter")
    KEYWORD_FIELD_NUMBER: _ClassVar[int]
    INTEGER_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    IS_NULL_FIELD_NUMBER: _ClassVar[int]
    IS_EMPTY_FIELD_NUMBER: _ClassVar[int]
    HAS_ID_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    keyword: MatchKeyword
    integer: MatchInteger
    range: Range
    is_null: FieldKey
    is_empty: FieldKey
    has_id: HasId
    filter: Filter
    def __init__(self, keyword: _Optional[_Union[MatchKeyword, _Mapping]] = ..., integer: _Optional[_Union[MatchInteger, _Mapping]] = ..., range: _Optional[_Union[Range, _Mapping]] = ..., is_null: _Optional[_Union[FieldKey, _Mapping]] = ..., is_empty: _Optional[_Union[FieldKey, _Mapping]] = ..., has_id: _Optional[_Union[HasId, _Mapping]] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ...) -> None: ...

class MatchKeyword(_message.Message):
    __slots__ = ("key", "any")
    KEY_FIELD_NUMBER: _ClassVar[int]
    ANY_FIELD_NUMBER: _ClassVar[int]
    key: str
    any: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, key: _Optional[str] = ..., any: _Optional[_Iterable[str]] = ...) -> None: ...

class MatchInteger(_message.Message):
    __slots__ = ("key", "any")
    KEY_FIELD_NUMBER: _ClassVar[int]
    ANY_FIELD_NUMBER: _ClassVar[int]
    key: str
    any: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, key: _Optional[str] = ..., any: _Optional[_Iterable[int]] = ...) -> None: ...

class Range(_message.Message):
    __slots__ = ("key", "gt", "gte", "lt", "lte")
    KEY_FIELD_NUMBER: _ClassVar[int]
    GT_FIELD_NUMBER: _ClassVar[int]
    GTE_FIELD_NUMBER: _ClassVar[int]
    LT_FIELD_NUMBER: _ClassVar[int]
    LTE_FIELD_NUMBER: _ClassVar[int]
    key: str
    gt: float
    gte: float
    lt: float
    lte: float
    def __init__(self, key: _Optional[str] = ..., gt: _Optional[float] = ..., gte: _Optional[float] = ..., lt: _Optional[float] = ..., lte: _Optional[float] = ...) -> None: ...

class FieldKey(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class HasId(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedCompositeFieldContainer[PointId]
    def __init__(self, ids: _Optional[_Iterable[_Union[PointId, _Mapping]]] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("collection", "vector", "top_k", "ef", "filter", "with_payload", "with_vector", "read")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    EF_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    WITH_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    WITH_VECTOR_FIELD_NUMBER: _ClassVar[int]
    READ_FIELD_NUMBER: _ClassVar[int]
    collection: str
    vector: _containers.RepeatedScalarFieldContainer[float]
    top_k: int
    ef: int
    filter: Filter
    with_payload: bool
    with_vector: bool
    read: ReadOptions
    def __init__(self, collection: _Optional[str] = ..., vector: _Optional[_Iterable[float]] = ..., top_k: _Optional[int] = ..., ef: _Optional[int] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ..., with_payload: _Optional[bool] = ..., with_vector: _Optional[bool] = ..., read: _Optional[_Union[ReadOptions, _Mapping]] = ...) -> None: ...

class ScoredPoint(_message.Message):
    __slots__ = ("id", "score", "vector", "payload")
    class PayloadEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    id: PointId
    score: float
    vector: _containers.RepeatedScalarFieldContainer[float]
    payload: _containers.MessageMap[str, Value]
    def __init__(self, id: _Optional[_Union[PointId, _Mapping]] = ..., score: _Optional[float] = ..., vector: _Optional[_Iterable[float]] = ..., payload: _Optional[_Mapping[str, Value]] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ScoredPoint]
    def __init__(self, results: _Optional[_Iterable[_Union[ScoredPoint, _Mapping]]] = ...) -> None: ...

class SearchBatchRequest(_message.Message):
    __slots__ = ("collection", "searches", "read")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    SEARCHES_FIELD_NUMBER: _ClassVar[int]
    READ_FIELD_NUMBER: _ClassVar[int]
    collection: str
    searches: _containers.RepeatedCompositeFieldContainer[SearchRequest]
    read: ReadOptions
    def __init__(self, collection: _Optional[str] = ..., searches: _Optional[_Iterable[_Union[SearchRequest, _Mapping]]] = ..., read: _Optional[_Union[ReadOptions, _Mapping]] = ...) -> None: ...

class SearchBatchResponse(_message.Message):
    __slots__ = ("responses",)
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[SearchResponse]
    def __init__(self, responses: _Optional[_Iterable[_Union[SearchResponse, _Mapping]]] = ...) -> None: ...

class ScrollRequest(_message.Message):
    __slots__ = ("collection", "offset", "limit", "filter", "with_payload", "with_vector", "read")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    WITH_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    WITH_VECTOR_FIELD_NUMBER: _ClassVar[int]
    READ_FIELD_NUMBER: _ClassVar[int]
    collection: str
    offset: PointId
    limit: int
    filter: Filter
    with_payload: bool
    with_vector: bool
    read: ReadOptions
    def __init__(self, collection: _Optional[str] = ..., offset: _Optional[_Union[PointId, _Mapping]] = ..., limit: _Optional[int] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ..., with_payload: _Optional[bool] = ..., with_vector: _Optional[bool] = ..., read: _Optional[_Union[ReadOptions, _Mapping]] = ...) -> None: ...

class ScrollResponse(_message.Message):
    __slots__ = ("points", "next_offset")
    POINTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    points: _containers.RepeatedCompositeFieldContainer[RetrievedPoint]
    next_offset: PointId
    def __init__(self, points: _Optional[_Iterable[_Union[RetrievedPoint, _Mapping]]] = ..., next_offset: _Optional[_Union[PointId, _Mapping]] = ...) -> None: ...

class CountRequest(_message.Message):
    __slots__ = ("collection", "filter", "read")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    READ_FIELD_NUMBER: _ClassVar[int]
    collection: str
    filter: Filter
    read: ReadOptions
    def __init__(self, collection: _Optional[str] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ..., read: _Optional[_Union[ReadOptions, _Mapping]] = ...) -> None: ...

class CountResponse(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class DrainRequest(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: int
    def __init__(self, node: _Optional[int] = ...) -> None: ...

class DrainResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MoveReplicaRequest(_message.Message):
    __slots__ = ("collection", "shard", "to")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    collection: str
    shard: int
    to: int
    def __init__(self, collection: _Optional[str] = ..., shard: _Optional[int] = ..., to: _Optional[int] = ..., **kwargs) -> None: ...

class MoveReplicaResponse(_message.Message):
    __slots__ = ("operation",)
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    operation: int
    def __init__(self, operation: _Optional[int] = ...) -> None: ...

class RebalanceRequest(_message.Message):
    __slots__ = ("dry_run",)
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    dry_run: bool
    def __init__(self, dry_run: _Optional[bool] = ...) -> None: ...

class RebalanceResponse(_message.Message):
    __slots__ = ("planned",)
    PLANNED_FIELD_NUMBER: _ClassVar[int]
    planned: _containers.RepeatedCompositeFieldContainer[PlannedOperation]
    def __init__(self, planned: _Optional[_Iterable[_Union[PlannedOperation, _Mapping]]] = ...) -> None: ...

class PlannedOperation(_message.Message):
    __slots__ = ("description", "reason")
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    description: str
    reason: str
    def __init__(self, description: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ClusterStatusRequest(_message.Message):
    __slots__ = ("digests",)
    DIGESTS_FIELD_NUMBER: _ClassVar[int]
    digests: bool
    def __init__(self, digests: _Optional[bool] = ...) -> None: ...

class ClusterStatus(_message.Message):
    __slots__ = ("node_id", "metadata_leader", "nodes", "collections", "operations")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_LEADER_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    metadata_leader: int
    nodes: _containers.RepeatedCompositeFieldContainer[NodeStatus]
    collections: _containers.RepeatedCompositeFieldContainer[CollectionStatus]
    operations: _containers.RepeatedCompositeFieldContainer[OperationStatus]
    def __init__(self, node_id: _Optional[int] = ..., metadata_leader: _Optional[int] = ..., nodes: _Optional[_Iterable[_Union[NodeStatus, _Mapping]]] = ..., collections: _Optional[_Iterable[_Union[CollectionStatus, _Mapping]]] = ..., operations: _Optional[_Iterable[_Union[OperationStatus, _Mapping]]] = ...) -> None: ...

class NodeStatus(_message.Message):
    __slots__ = ("id", "address", "reachable", "error", "state", "voter", "load", "failure")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VOTER_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    id: int
    address: str
    reachable: bool
    error: str
    state: str
    voter: bool
    load: NodeLoad
    failure: str
    def __init__(self, id: _Optional[int] = ..., address: _Optional[str] = ..., reachable: _Optional[bool] = ..., error: _Optional[str] = ..., state: _Optional[str] = ..., voter: _Optional[bool] = ..., load: _Optional[_Union[NodeLoad, _Mapping]] = ..., failure: _Optional[str] = ...) -> None: ...

class NodeLoad(_message.Message):
    __slots__ = ("cpu_percent", "rss_bytes", "requests_per_second", "points", "replicas", "leaders")
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    LEADERS_FIELD_NUMBER: _ClassVar[int]
    cpu_percent: float
    rss_bytes: int
    requests_per_second: float
    points: int
    replicas: int
    leaders: int
    def __init__(self, cpu_percent: _Optional[float] = ..., rss_bytes: _Optional[int] = ..., requests_per_second: _Optional[float] = ..., points: _Optional[int] = ..., replicas: _Optional[int] = ..., leaders: _Optional[int] = ...) -> None: ...

class OperationStatus(_message.Message):
    __slots__ = ("id", "description", "progress")
    ID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    id: int
    description: str
    progress: str
    def __init__(self, id: _Optional[int] = ..., description: _Optional[str] = ..., progress: _Optional[str] = ...) -> None: ...

class CollectionStatus(_message.Message):
    __slots__ = ("name", "id", "shards", "routing_version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    ROUTING_VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: int
    shards: _containers.RepeatedCompositeFieldContainer[ShardStatus]
    routing_version: int
    def __init__(self, name: _Optional[str] = ..., id: _Optional[int] = ..., shards: _Optional[_Iterable[_Union[ShardStatus, _Mapping]]] = ..., routing_version: _Optional[int] = ...) -> None: ...

class ShardStatus(_message.Message):
    __slots__ = ("shard", "leader", "replicas", "hash_first", "hash_last")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    HASH_FIRST_FIELD_NUMBER: _ClassVar[int]
    HASH_LAST_FIELD_NUMBER: _ClassVar[int]
    shard: int
    leader: int
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaStatus]
    hash_first: int
    hash_last: int
    def __init__(self, shard: _Optional[int] = ..., leader: _Optional[int] = ..., replicas: _Optional[_Iterable[_Union[ReplicaStatus, _Mapping]]] = ..., hash_first: _Optional[int] = ..., hash_last: _Optional[int] = ...) -> None: ...

class ReplicaStatus(_message.Message):
    __slots__ = ("node", "state", "applied_index", "points", "digest", "term", "quarantined", "failure")
    NODE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    APPLIED_INDEX_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    QUARANTINED_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    node: int
    state: str
    applied_index: int
    points: int
    digest: str
    term: int
    quarantined: int
    failure: str
    def __init__(self, node: _Optional[int] = ..., state: _Optional[str] = ..., applied_index: _Optional[int] = ..., points: _Optional[int] = ..., digest: _Optional[str] = ..., term: _Optional[int] = ..., quarantined: _Optional[int] = ..., failure: _Optional[str] = ...) -> None: ...

class CreateBackupRequest(_message.Message):
    __slots__ = ("name", "collections")
    NAME_FIELD_NUMBER: _ClassVar[int]
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    collections: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., collections: _Optional[_Iterable[str]] = ...) -> None: ...

class BackupInfo(_message.Message):
    __slots__ = ("name", "created_unix_ms", "duration_ms", "shoal_version", "points", "bytes", "collections", "node")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    SHOAL_VERSION_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    name: str
    created_unix_ms: int
    duration_ms: int
    shoal_version: str
    points: int
    bytes: int
    collections: _containers.RepeatedCompositeFieldContainer[BackupCollection]
    node: int
    def __init__(self, name: _Optional[str] = ..., created_unix_ms: _Optional[int] = ..., duration_ms: _Optional[int] = ..., shoal_version: _Optional[str] = ..., points: _Optional[int] = ..., bytes: _Optional[int] = ..., collections: _Optional[_Iterable[_Union[BackupCollection, _Mapping]]] = ..., node: _Optional[int] = ...) -> None: ...

class BackupCollection(_message.Message):
    __slots__ = ("name", "points", "shards")
    NAME_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    points: int
    shards: _containers.RepeatedCompositeFieldContainer[BackupShard]
    def __init__(self, name: _Optional[str] = ..., points: _Optional[int] = ..., shards: _Optional[_Iterable[_Union[BackupShard, _Mapping]]] = ...) -> None: ...

class BackupShard(_message.Message):
    __slots__ = ("shard", "applied_index", "points", "bytes", "sha256")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    APPLIED_INDEX_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    shard: int
    applied_index: int
    points: int
    bytes: int
    sha256: str
    def __init__(self, shard: _Optional[int] = ..., applied_index: _Optional[int] = ..., points: _Optional[int] = ..., bytes: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class ListBackupsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListBackupsResponse(_message.Message):
    __slots__ = ("backups",)
    BACKUPS_FIELD_NUMBER: _ClassVar[int]
    backups: _containers.RepeatedCompositeFieldContainer[BackupInfo]
    def __init__(self, backups: _Optional[_Iterable[_Union[BackupInfo, _Mapping]]] = ...) -> None: ...

class DeleteBackupRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteBackupResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DownloadBackupRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class BackupChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class RestoreBackupRequest(_message.Message):
    __slots__ = ("options", "chunk")
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    options: RestoreOptions
    chunk: bytes
    def __init__(self, options: _Optional[_Union[RestoreOptions, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class RestoreOptions(_message.Message):
    __slots__ = ("backup", "collections", "rename", "replication_factor")
    BACKUP_FIELD_NUMBER: _ClassVar[int]
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    RENAME_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_FACTOR_FIELD_NUMBER: _ClassVar[int]
    backup: str
    collections: _containers.RepeatedScalarFieldContainer[str]
    rename: str
    replication_factor: int
    def __init__(self, backup: _Optional[str] = ..., collections: _Optional[_Iterable[str]] = ..., rename: _Optional[str] = ..., replication_factor: _Optional[int] = ...) -> None: ...

class RestoreBackupResponse(_message.Message):
    __slots__ = ("collections", "duration_ms")
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedCompositeFieldContainer[RestoredCollection]
    duration_ms: int
    def __init__(self, collections: _Optional[_Iterable[_Union[RestoredCollection, _Mapping]]] = ..., duration_ms: _Optional[int] = ...) -> None: ...

class RestoredCollection(_message.Message):
    __slots__ = ("name", "points")
    NAME_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    points: int
    def __init__(self, name: _Optional[str] = ..., points: _Optional[int] = ...) -> None: ...
