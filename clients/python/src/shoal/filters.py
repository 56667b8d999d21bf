"""Payload filters that read like Python.

    from shoal import Field, HasId

    f = Field("lang").any_of("en", "fr") & (Field("year") >= 2020)
    f = (Field("kind") == "faq") | ~Field("draft").is_empty()
    f = Field("price").between(1, 5) & HasId(1, 2, "67e55044-10b1-426f-9247-bb680e5fe0c8")

``&`` is all of (``must``), ``|`` any of (``should``), ``~`` none of (``must_not``).
Python binds ``&`` and ``|`` tighter than comparisons, so
``Field("a") == "x" & Field("b") >= 1`` does not mean what it seems; write the
parentheses. (The unparenthesised ``cond & Field("b") >= 1`` is recognised and
completed correctly.)

A filter can also be a dict in the proto's JSON form, as the ``shoal`` CLI takes it::

    {"must": [{"key": "lang", "keyword": ["en", "fr"]},
              {"key": "year", "range": {"gte": 2020}}]}

Conditions: ``{"key": k, "keyword": [...]}``, ``{"key": k, "integer": [...]}``,
``{"key": k, "range": {"gt"|"gte"|"lt"|"lte": n}}``, ``{"is_null": k}``,
``{"is_empty": k}``, ``{"has_id": [ids]}``, ``{"filter": {...}}``. The proto3 JSON
mapping of ``Filter`` (``{"must": [{"keyword": {"key": k, "any": [...]}}]}``) is
accepted too. Mistakes raise :class:`~shoal.InvalidArgument` before any call.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Union

from google.protobuf import json_format

from . import _wire
from .errors import InvalidArgument
from .models import PointIdLike
from .v1 import shoal_pb2 as pb

__all__ = ["Condition", "Filter", "Field", "HasId", "FilterLike", "to_filter"]


class Condition:
    """A condition on a point; combine with ``&``, ``|`` and ``~``."""

    def to_condition(self) -> pb.Condition:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_proto(self) -> pb.Filter:
        """This condition as a whole filter (``must: [self]``)."""
        return Filter(must=[self]).to_proto()

    def __and__(self, other: Any) -> Any:
        if isinstance(other, Field):
            return _Pending(self, "and", other)
        return Filter._combine("must", self, _as_condition(other))

    def __rand__(self, other: Any) -> "Filter":
        return Filter._combine("must", _as_condition(other), self)

    def __or__(self, other: Any) -> Any:
        if isinstance(other, Field):
            return _Pending(self, "or", other)
        return Filter._combine("should", self, _as_condition(other))

    def __ror__(self, other: Any) -> "Filter":
        return Filter._combine("should", _as_condition(other), self)

    def __invert__(self) -> "Condition":
        return Filter(must_not=[self])

    def __bool__(self) -> bool:
        raise TypeError(
            "a filter condition has no truth value: use & | ~ instead of and/or/not, "
            "and parenthesise comparisons: (Field('a') == 1) & (Field('b') >= 2)"
        )


class _Simple(Condition):
    __slots__ = ("_msg", "_text")

    def __init__(self, msg: pb.Condition, text: str) -> None:
        self._msg = msg
        self._text = text

    def to_condition(self) -> pb.Condition:
        return self._msg

    def __repr__(self) -> str:
        return self._text


class Filter(Condition):
    """``must`` (all hold), ``should`` (at least one holds, if any), ``must_not``
    (none holds). A filter is itself a condition, so filters nest."""

    def __init__(
        self,
        must: Optional[Iterable[Condition]] = None,
        should: Optional[Iterable[Condition]] = None,
        must_not: Optional[Iterable[Condition]] = None,
    ) -> None:
        self.must: List[Condition] = [_as_condition(c) for c in (must or [])]
        self.should: List[Condition] = [_as_condition(c) for c in (should or [])]
        self.must_not: List[Condition] = [_as_condition(c) for c in (must_not or [])]

    @staticmethod
    def _combine(clause: str, a: Condition, b: Condition) -> "Filter":
        parts: List[Condition] = []
        for c in (a, b):
            if isinstance(c, Filter) and c._only(clause):
                parts.extend(getattr(c, clause))
            else:
                parts.append(c)
        return Filter(**{clause: parts})

    def _only(self, clause: str) -> bool:
        return all(bool(getattr(self, c)) == (c == clause) for c in ("must", "should", "must_not"))

    def __invert__(self) -> Condition:
        if self._only("must_not") and len(self.must_not) == 1:
            return self.must_not[0]
        return Filter(must_not=[self])

    def to_proto(self) -> pb.Filter:
        return pb.Filter(
            must=[c.to_condition() for c in self.must],
            should=[c.to_condition() for c in self.should],
            must_not=[c.to_condition() for c in self.must_not],
        )

    def to_condition(self) -> pb.Condition:
        return pb.Condition(filter=self.to_proto())

    def __repr__(self) -> str:
        parts = [f"{k}={getattr(self, k)!r}" for k in ("must", "should", "must_not") if getattr(self, k)]
        return f"Filter({', '.join(parts)})"


def _key(key: Any) -> str:
    if not isinstance(key, str) or not key:
        raise InvalidArgument(f"filter key must be a non-empty string, got {key!r}")
    return key


def _is_int(v: Any) -> bool:
    import numpy as np

    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _number(v: Any, what: str) -> float:
    import numpy as np

    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise InvalidArgument(f"{what}: expected a number, got {v!r}")
    f = float(v)
    if math.isnan(f):
        raise InvalidArgument(f"{what}: bound is NaN")
    return f


class Field:
    """A payload key (a path: ``"a.b"`` is field ``b`` of object ``a``). When the value
    is a list, a match or range holds if it holds for any element."""

    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = _key(key)

    def any_of(self, *values: Union[str, int]) -> Condition:
        """The value is one of ``values``: all strings (keyword match) or all integers."""
        if len(values) == 1 and isinstance(values[0], (list, tuple, set, frozenset)):
            values = tuple(values[0])
        if not values:
            raise InvalidArgument(f"Field({self.key!r}).any_of: needs at least one value")
        if all(isinstance(v, str) for v in values):
            return _Simple(
                pb.Condition(keyword=pb.MatchKeyword(key=self.key, any=[str(v) for v in values])),
                f"Field({self.key!r}).any_of{tuple(values)!r}",
            )
        if all(_is_int(v) for v in values):
            ints = [int(v) for v in values]
            for v in ints:
                if not -(2**63) <= v < 2**63:
                    raise InvalidArgument(f"Field({self.key!r}).any_of: {v} does not fit in int64")
            return _Simple(
                pb.Condition(integer=pb.MatchInteger(key=self.key, any=ints)),
                f"Field({self.key!r}).any_of{tuple(ints)!r}",
            )
        raise InvalidArgument(
            f"Field({self.key!r}).any_of: values must be all strings or all integers, got {values!r}"
        )

    def __eq__(self, value: Any) -> Condition:  # type: ignore[override]
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, float):
            return self.between(value, value)
        return self.any_of(value)

    def __ne__(self, value: Any) -> Condition:  # type: ignore[override]
        return ~(self == value)

    def __hash__(self) -> int:
        return hash(self.key)

    def range(
        self,
        *,
        gt: Optional[float] = None,
        gte: Optional[float] = None,
        lt: Optional[float] = None,
        lte: Optional[float] = None,
    ) -> Condition:
        """The number (integer or double) lies within the given bounds."""
        bounds = {k: _number(v, f"Field({self.key!r}).{k}") for k, v in
                  (("gt", gt), ("gte", gte), ("lt", lt), ("lte", lte)) if v is not None}
        if not bounds:
            raise InvalidArgument(f"Field({self.key!r}).range: needs at least one bound")
        text = ", ".join(f"{k}={v!r}" for k, v in bounds.items())
        return _Simple(pb.Condition(range=pb.Range(key=self.key, **bounds)), f"Field({self.key!r}).range({text})")

    def between(self, low: float, high: float) -> Condition:
        """``low <= value <= high``."""
        return self.range(gte=low, lte=high)

    def __gt__(self, v: float) -> Condition:
        return self.range(gt=v)

    def __ge__(self, v: float) -> Condition:
        return self.range(gte=v)

    def __lt__(self, v: float) -> Condition:
        return self.range(lt=v)

    def __le__(self, v: float) -> Condition:
        return self.range(lte=v)

    def is_null(self) -> Condition:
        """The key exists with value null."""
        return _Simple(pb.Condition(is_null=pb.FieldKey(key=self.key)), f"Field({self.key!r}).is_null()")

    def is_empty(self) -> Condition:
        """The key is missing, null, or an empty list."""
        return _Simple(pb.Condition(is_empty=pb.FieldKey(key=self.key)), f"Field({self.key!r}).is_empty()")

    def _incomplete(self, *_: Any) -> Any:
        raise InvalidArgument(
            f"{self!r} is not a condition yet: compare it first, e.g. (Field({self.key!r}) == 'x') & ..."
        )

    __and__ = __rand__ = __or__ = __ror__ = __invert__ = __bool__ = _incomplete

    def __repr__(self) -> str:
        return f"Field({self.key!r})"


def HasId(*ids: PointIdLike) -> Condition:  # noqa: N802 - reads as a condition
    """The point's id is one of ``ids``."""
    if len(ids) == 1 and isinstance(ids[0], (list, tuple, set, frozenset)):
        ids = tuple(ids[0])
    if not ids:
        raise InvalidArgument("HasId: needs at least one id")
    return _Simple(pb.Condition(has_id=pb.HasId(ids=[_wire.point_id(i) for i in ids])), f"HasId{ids!r}")


class _Pending:
    """``cond & Field("x")`` waiting for its comparison: Python parses
    ``cond & Field("x") >= 1`` as ``(cond & Field("x")) >= 1``."""

    __slots__ = ("cond", "op", "field")

    def __init__(self, cond: Condition, op: str, field: Field) -> None:
        self.cond, self.op, self.field = cond, op, field

    def _done(self, right: Condition) -> Filter:
        return (self.cond & right) if self.op == "and" else (self.cond | right)

    def __eq__(self, v: Any) -> Filter:  # type: ignore[override]
        return self._done(self.field == v)

    def __ne__(self, v: Any) -> Filter:  # type: ignore[override]
        return self._done(self.field != v)

    def __ge__(self, v: Any) -> Filter:
        return self._done(self.field >= v)

    def __gt__(self, v: Any) -> Filter:
        return self._done(self.field > v)

    def __le__(self, v: Any) -> Filter:
        return self._done(self.field <= v)

    def __lt__(self, v: Any) -> Filter:
        return self._done(self.field < v)

    __hash__ = None  # type: ignore[assignment]


#: Anything the client accepts as a filter.
FilterLike = Union[Condition, Mapping[str, Any], pb.Filter]


def _as_condition(c: Any) -> Condition:
    if isinstance(c, Condition):
        return c
    if isinstance(c, Mapping):
        return _from_dict(c, "filter")
    if isinstance(c, pb.Filter):
        return _Simple(pb.Condition(filter=c), repr(c))
    if isinstance(c, pb.Condition):
        return _Simple(c, repr(c))
    if isinstance(c, (_Pending, Field)):
        raise InvalidArgument(f"incomplete condition {c!r}: compare the field (==, >=, any_of, ...)")
    raise InvalidArgument(f"not a filter condition: {c!r}")


def to_filter(f: Optional[FilterLike]) -> Optional[pb.Filter]:
    """Any accepted filter form as the proto message (``None`` stays ``None``)."""
    if f is None:
        return None
    if isinstance(f, pb.Filter):
        return f
    if isinstance(f, Filter):
        return f.to_proto()
    if isinstance(f, Condition):
        return f.to_proto()
    if isinstance(f, Mapping):
        return _from_dict(f, "filter").to_proto()
    return _as_condition(f).to_proto()


_CLAUSES = ("must", "should", "must_not")
_KINDS = ("keyword", "integer", "range", "is_null", "is_empty", "has_id", "filter")


def _from_dict(d: Mapping[str, Any], path: str) -> Filter:
    if not isinstance(d, Mapping):
        raise InvalidArgument(f"{path}: expected an object, got {d!r}")
    for k in d:
        if k not in _CLAUSES:
            raise InvalidArgument(f"{path}: unknown clause {k!r}; expected must, should or must_not")
    out = {}
    for clause in _CLAUSES:
        conds = d.get(clause) or []
        if not isinstance(conds, Sequence) or isinstance(conds, (str, bytes)):
            raise InvalidArgument(f"{path}.{clause}: expected a list of conditions")
        out[clause] = [_cond_from_dict(c, f"{path}.{clause}[{i}]") for i, c in enumerate(conds)]
    return Filter(**out)


def _cond_from_dict(c: Any, path: str) -> Condition:
    if not isinstance(c, Mapping):
        raise InvalidArgument(f"{path}: expected an object")
    kinds = [k for k in _KINDS if k in c]
    if len(kinds) != 1:
        raise InvalidArgument(
            f"{path}: expected exactly one of keyword, integer, range, is_null, is_empty, has_id or filter"
        )
    kind = kinds[0]
    v = c[kind]
    if kind == "filter":
        return _from_dict(v, f"{path}.filter")
    if kind == "has_id":
        if isinstance(v, Mapping):  # proto JSON: {"ids": [{"num": "1"}, {"uuid": "..."}]}
            return _proto_condition(c, path)
        if not isinstance(v, Sequence) or isinstance(v, str):
            raise InvalidArgument(f"{path}.has_id: expected a list of ids")
        try:
            return HasId(*v)
        except (InvalidArgument, ValueError) as e:
            raise InvalidArgument(f"{path}.has_id: {e}") from None
    if kind in ("is_null", "is_empty"):
        if isinstance(v, Mapping):  # proto JSON: {"key": k}
            return _proto_condition(c, path)
        f = Field(v if isinstance(v, str) and v else _fail(f"{path}.{kind}: expected a key"))
        return f.is_null() if kind == "is_null" else f.is_empty()
    if "key" not in c:  # proto JSON: {"keyword": {"key": k, "any": [...]}}
        return _proto_condition(c, path)
    key = c["key"]
    if not isinstance(key, str) or not key:
        raise InvalidArgument(f"{path}: \"key\" must be a non-empty string")
    if kind == "range":
        if not isinstance(v, Mapping) or set(v) - {"gt", "gte", "lt", "lte"}:
            raise InvalidArgument(f"{path}.range: expected an object of gt, gte, lt, lte")
        try:
            return Field(key).range(**v)
        except InvalidArgument as e:
            raise InvalidArgument(f"{path}.range: {e}") from None
    if not isinstance(v, Sequence) or isinstance(v, str) or not v:
        raise InvalidArgument(f"{path}.{kind}: expected a non-empty list")
    if kind == "keyword" and not all(isinstance(x, str) for x in v):
        raise InvalidArgument(f"{path}.keyword: expected strings")
    if kind == "integer" and not all(_is_int(x) for x in v):
        raise InvalidArgument(f"{path}.integer: expected integers")
    return Field(key).any_of(*v)


def _proto_condition(c: Mapping[str, Any], path: str) -> Condition:
    try:
        msg = json_format.ParseDict(dict(c), pb.Condition())
    except json_format.ParseError as e:
        raise InvalidArgument(f"{path}: {e}") from None
    return _Simple(msg, repr(dict(c)))


def _fail(msg: str) -> Any:
    raise InvalidArgument(msg)
