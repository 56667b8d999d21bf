"""Wire-compatible views of the replies that carry vectors, with ``bytes`` vectors.

A proto3 ``repeated float`` is packed: one length-delimited record whose bytes are the
little-endian float32 values, which is exactly how a ``bytes`` field is encoded. So
these private messages (same field numbers, ``vector`` declared as ``bytes``) parse the
server's replies unchanged and hand over each vector as raw bytes, which become a numpy
array in one copy instead of one Python float per component (about 4.6 µs against 1 µs
per 384-d vector). Built at import time from a descriptor; nothing is generated.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from .v1 import shoal_pb2  # noqa: F401 - registers shoal/v1/shoal.proto in the default pool

_F = descriptor_pb2.FieldDescriptorProto


def _field(name: str, number: int, type_: int, type_name: str = "", repeated: bool = False) -> _F:
    f = _F(name=name, number=number, type=type_,  # type: ignore[arg-type]
           label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
    if type_name:
        f.type_name = type_name
    return f


def _point(name: str, with_score: bool) -> descriptor_pb2.DescriptorProto:
    m = descriptor_pb2.DescriptorProto(name=name)
    m.field.append(_field("id", 1, _F.TYPE_MESSAGE, ".shoal.v1.PointId"))
    if with_score:  # ScoredPoint: id 1, score 2, vector 3, payload 4
        m.field.append(_field("score", 2, _F.TYPE_FLOAT))
        m.field.append(_field("vector", 3, _F.TYPE_BYTES))
        payload = 4
    else:  # RetrievedPoint: id 1, vector 2, payload 3
        m.field.append(_field("vector", 2, _F.TYPE_BYTES))
        payload = 3
    entry = m.nested_type.add(name="PayloadEntry")
    entry.field.append(_field("key", 1, _F.TYPE_STRING))
    entry.field.append(_field("value", 2, _F.TYPE_MESSAGE, ".shoal.v1.Value"))
    entry.options.map_entry = True
    m.field.append(_field("payload", payload, _F.TYPE_MESSAGE, f".shoal.v1.client_views.{name}.PayloadEntry",
                          repeated=True))
    return m


def _build() -> dict:
    f = descriptor_pb2.FileDescriptorProto(name="shoal/v1/client_views.proto", package="shoal.v1.client_views",
                                           syntax="proto3", dependency=["shoal/v1/shoal.proto"])
    f.message_type.append(_point("ScoredPoint", True))
    f.message_type.append(_point("RetrievedPoint", False))
    sr = f.message_type.add(name="SearchResponse")
    sr.field.append(_field("results", 1, _F.TYPE_MESSAGE, ".shoal.v1.client_views.ScoredPoint", repeated=True))
    sb = f.message_type.add(name="SearchBatchResponse")
    sb.field.append(_field("responses", 1, _F.TYPE_MESSAGE, ".shoal.v1.client_views.SearchResponse",
                           repeated=True))
    gr = f.message_type.add(name="GetPointsResponse")
    gr.field.append(_field("points", 1, _F.TYPE_MESSAGE, ".shoal.v1.client_views.RetrievedPoint", repeated=True))
    sc = f.message_type.add(name="ScrollResponse")
    sc.field.append(_field("points", 1, _F.TYPE_MESSAGE, ".shoal.v1.client_views.RetrievedPoint", repeated=True))
    sc.field.append(_field("next_offset", 2, _F.TYPE_MESSAGE, ".shoal.v1.PointId"))
    pool = descriptor_pool.Default()
    try:
        fd = pool.FindFileByName(f.name)
    except KeyError:
        pool.Add(f)
        fd = pool.FindFileByName(f.name)
    return {n: message_factory.GetMessageClass(fd.message_types_by_name[n])
            for n in ("SearchResponse", "SearchBatchResponse", "GetPointsResponse", "ScrollResponse")}


_CLASSES = _build()
SearchResponse = _CLASSES["SearchResponse"]
SearchBatchResponse = _CLASSES["SearchBatchResponse"]
GetPointsResponse = _CLASSES["GetPointsResponse"]
ScrollResponse = _CLASSES["ScrollResponse"]
