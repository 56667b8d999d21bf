"""LangChain vector store over Shoal (``pip install 'shoal-client[langchain]'``).

    from shoal.langchain import ShoalVectorStore

    store = ShoalVectorStore("127.0.0.1:7470", "docs", embedding=my_embeddings)
    store.add_documents(docs)                                   # ids kept, or UUIDs made
    store.similarity_search("what is shoal?", k=4, filter={"lang": "en"})
    retriever = store.as_retriever(search_kwargs={"k": 4})

Each document is one point: ``{"page_content": text, "metadata": {...}, "doc_id": id}``
(the keys are configurable). LangChain ids are strings; a UUID string is used as the
point id as is, any other string is mapped to ``uuid5(NAMESPACE, id)`` and the
original is kept in the payload and returned.

Filters (``filter=``):

- a dict of metadata conditions, LangChain style: ``{"lang": "en"}``,
  ``{"lang": ["en", "fr"]}`` (any of), ``{"year": {"$gte": 2020, "$lt": 2025}}``, with
  ``$eq $ne $in $nin $gt $gte $lt $lte`` and ``{"$and": [...]}`` / ``{"$or": [...]}``;
- a Shoal filter (``shoal.Field(...)``, ``shoal.Filter``) or a dict in Shoal's JSON form
  (``{"must": [...]}``): keys are payload paths, so metadata fields are
  ``"metadata.<key>"`` (:func:`metadata_field` builds them).

The collection is created at the first write if it does not exist (dimension from
the embeddings; metric COSINE unless given). Reads are read-your-writes by default
(the client's session consistency), so a search right after ``add_documents`` sees them.
"""

from __future__ import annotations

import uuid
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Type, TypeVar, Union

import numpy as np

try:
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.vectorstores import VectorStore
    from langchain_core.vectorstores.utils import maximal_marginal_relevance
except ImportError as e:  # pragma: no cover
    raise ImportError("shoal.langchain needs langchain-core: pip install 'shoal-client[langchain]'") from e

from ._ids import NAMESPACE, point_id
from .aio import AsyncClient
from .client import Client
from .errors import AlreadyExists, NotFound
from .filters import Condition, Field, Filter, FilterLike
from .models import Metric, ScoredPoint
from .v1 import shoal_pb2 as pb

__all__ = ["ShoalVectorStore", "metadata_field", "NAMESPACE"]

VST = TypeVar("VST", bound="ShoalVectorStore")


def metadata_field(key: str, metadata_key: str = "metadata") -> Field:
    """A :class:`shoal.Field` on a document's metadata key."""
    return Field(f"{metadata_key}.{key}")


class ShoalVectorStore(VectorStore):
    """A LangChain ``VectorStore`` over a Shoal collection.

    Args:
        client: a :class:`shoal.Client`, or node address(es) to make one.
        collection_name: the collection (created at the first write if missing).
        embedding: the LangChain ``Embeddings`` to embed texts and queries with.
        async_client: for the async methods; by default ``client.async_client()``
            (same nodes, shared session tokens).
        metric, shard_count, replication_factor: for creating the collection.
        content_key, metadata_key, id_key: payload keys of the text, the metadata and
            the LangChain id.
        ef: the graph search's candidate list (server default if ``None``).
        consistency: reads' consistency (default: the client's, i.e. session).
        batch_size: points per upsert request when adding many texts.
    """

    def __init__(
        self,
        client: Union[Client, str, Sequence[str]],
        collection_name: str,
        embedding: Embeddings,
        *,
        async_client: Optional[AsyncClient] = None,
        metric: Union[str, Metric] = Metric.COSINE,
        shard_count: Optional[int] = None,
        replication_factor: Optional[int] = None,
        content_key: str = "page_content",
        metadata_key: str = "metadata",
        id_key: str = "doc_id",
        ef: Optional[int] = None,
        consistency: Optional[str] = None,
        batch_size: int = 256,
    ) -> None:
        self.client = client if isinstance(client, Client) else Client(client)
        self._async_client = async_client
        self.collection_name = collection_name
        self.embedding = embedding
        self.metric = Metric.parse(metric)
        self.shard_count = shard_count
        self.replication_factor = replication_factor
        self.content_key = content_key
        self.metadata_key = metadata_key
        self.id_key = id_key
        self.ef = ef
        self.consistency = consistency
        self.batch_size = batch_size
        self._ready = False

    @property
    def embeddings(self) -> Embeddings:
        return self.embedding

    @property
    def async_client(self) -> AsyncClient:
        if self._async_client is None:
            self._async_client = self.client.async_client()
        return self._async_client

    # ---- collection ----

    def _create_args(self, dim: int) -> Dict[str, Any]:
        return dict(name=self.collection_name, dim=dim, metric=self.metric, shard_count=self.shard_count,
                    replication_factor=self.replication_factor)

    def _ensure(self, dim: int) -> None:
        if self._ready:
            return
        try:
            self.client.create_collection(**self._create_args(dim))
        except AlreadyExists:
            pass
        self._ready = True

    async def _aensure(self, dim: int) -> None:
        if self._ready:
            return
        try:
            await self.async_client.create_collection(**self._create_args(dim))
        except AlreadyExists:
            pass
        self._ready = True

    # ---- conversion ----

    def _points(self, texts: List[str], vectors: List[List[float]], metadatas: Optional[List[dict]],
                ids: Optional[Sequence[Optional[str]]]) -> Tuple[List[str], List[Tuple[str, Any, dict]]]:
        """Points for the texts; ``ids`` may hold ``None`` for documents without an id
        (LangChain's ``add_documents`` passes them so): those get random UUIDs."""
        n = len(texts)
        if metadatas is not None and len(metadatas) != n:
            raise ValueError(f"{len(metadatas)} metadatas for {n} texts")
        if ids is not None and len(ids) != n:
            raise ValueError(f"{len(ids)} ids for {n} texts")
        out_ids: List[str] = [
            (str(ids[k]) if ids is not None and ids[k] is not None else str(uuid.uuid4())) for k in range(n)
        ]
        points = []
        for k in range(n):
            payload = {
                self.content_key: texts[k],
                self.metadata_key: dict(metadatas[k]) if metadatas is not None and metadatas[k] else {},
                self.id_key: out_ids[k],
            }
            points.append((point_id(out_ids[k]), vectors[k], payload))
        return out_ids, points

    def _document(self, payload: Mapping[str, Any], pid: Any) -> Document:
        doc_id = payload.get(self.id_key)
        return Document(
            id=str(doc_id) if doc_id is not None else str(pid),
            page_content=payload.get(self.content_key, ""),
            metadata=dict(payload.get(self.metadata_key) or {}),
        )

    def _filter(self, f: Any) -> Optional[FilterLike]:
        return translate_filter(f, self.metadata_key)

    def _read_kwargs(self, kwargs: Dict[str, Any]) -> Dict[str, Any]:
        return dict(
            ef=kwargs.pop("ef", self.ef),
            filter=self._filter(kwargs.pop("filter", None)),
            consistency=kwargs.pop("consistency", self.consistency),
        )

    # ---- writes ----

    def add_texts(self, texts: Iterable[str], metadatas: Optional[List[dict]] = None, *,
                  ids: Optional[List[str]] = None, **kwargs: Any) -> List[str]:
        """Embeds and upserts ``texts``; returns their ids (given ones kept)."""
        texts = list(texts)
        if not texts:
            return []
        vectors = self.embedding.embed_documents(texts)
        self._ensure(len(vectors[0]))
        out_ids, points = self._points(texts, vectors, metadatas, ids)
        for s in range(0, len(points), self.batch_size):
            self.client.upsert(self.collection_name, points[s:s + self.batch_size])
        return out_ids

    async def aadd_texts(self, texts: Iterable[str], metadatas: Optional[List[dict]] = None, *,
                         ids: Optional[List[str]] = None, **kwargs: Any) -> List[str]:
        texts = list(texts)
        if not texts:
            return []
        vectors = await self.embedding.aembed_documents(texts)
        await self._aensure(len(vectors[0]))
        out_ids, points = self._points(texts, vectors, metadatas, ids)
        for s in range(0, len(points), self.batch_size):
            await self.async_client.upsert(self.collection_name, points[s:s + self.batch_size])
        return out_ids

    def delete(self, ids: Optional[List[str]] = None, **kwargs: Any) -> Optional[bool]:
        """Deletes documents by id (all documents if ``ids`` is None); missing ids are
        ignored."""
        try:
            if ids is None:
                ids = [str(r.id) for r in self.client.scroll(self.collection_name, with_payload=False)]
                pids = ids
            else:
                pids = [point_id(i) for i in ids]
            for s in range(0, len(pids), 1000):
                self.client.delete(self.collection_name, pids[s:s + 1000])
        except NotFound:
            pass
        return True

    async def adelete(self, ids: Optional[List[str]] = None, **kwargs: Any) -> Optional[bool]:
        try:
            if ids is None:
                pids = [str(r.id) async for r in self.async_client.scroll(self.collection_name, with_payload=False)]
            else:
                pids = [point_id(i) for i in ids]
            for s in range(0, len(pids), 1000):
                await self.async_client.delete(self.collection_name, pids[s:s + 1000])
        except NotFound:
            pass
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> List[Document]:
        """Documents by id, in the order asked; missing ids are left out."""
        if not ids:
            return []
        try:
            recs = self.client.get(self.collection_name, [point_id(i) for i in ids],
                                   consistency=self.consistency)
        except NotFound:
            return []
        return [self._document(r.payload, r.id) for r in recs]

    async def aget_by_ids(self, ids: Sequence[str], /) -> List[Document]:
        if not ids:
            return []
        try:
            recs = await self.async_client.get(self.collection_name, [point_id(i) for i in ids],
                                               consistency=self.consistency)
        except NotFound:
            return []
        return [self._document(r.payload, r.id) for r in recs]

    # ---- search ----

    def _hits(self, hits: List[ScoredPoint]) -> List[Tuple[Document, float]]:
        return [(self._document(h.payload, h.id), h.score) for h in hits]

    def similarity_search_with_score_by_vector(self, embedding: List[float], k: int = 4,
                                               **kwargs: Any) -> List[Tuple[Document, float]]:
        """(document, score) pairs, nearest first; the score follows the metric
        (cosine similarity by default: larger is nearer)."""
        try:
            hits = self.client.search(self.collection_name, embedding, top_k=k, **self._read_kwargs(kwargs))
        except NotFound:
            return []
        return self._hits(hits)

    async def asimilarity_search_with_score_by_vector(self, embedding: List[float], k: int = 4,
                                                      **kwargs: Any) -> List[Tuple[Document, float]]:
        try:
            hits = await self.async_client.search(self.collection_name, embedding, top_k=k,
                                                  **self._read_kwargs(kwargs))
        except NotFound:
            return []
        return self._hits(hits)

    def similarity_search_with_score(self, query: str, k: int = 4, **kwargs: Any) -> List[Tuple[Document, float]]:
        return self.similarity_search_with_score_by_vector(self.embedding.embed_query(query), k, **kwargs)

    async def asimilarity_search_with_score(self, query: str, k: int = 4,
                                            **kwargs: Any) -> List[Tuple[Document, float]]:
        vec = await self.embedding.aembed_query(query)
        return await self.asimilarity_search_with_score_by_vector(vec, k, **kwargs)

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> List[Document]:
        """The ``k`` documents nearest to ``query`` (``filter=``, ``ef=``, ``consistency=``)."""
        return [d for d, _ in self.similarity_search_with_score(query, k, **kwargs)]

    async def asimilarity_search(self, query: str, k: int = 4, **kwargs: Any) -> List[Document]:
        return [d for d, _ in await self.asimilarity_search_with_score(query, k, **kwargs)]

    def similarity_search_by_vector(self, embedding: List[float], k: int = 4, **kwargs: Any) -> List[Document]:
        return [d for d, _ in self.similarity_search_with_score_by_vector(embedding, k, **kwargs)]

    async def asimilarity_search_by_vector(self, embedding: List[float], k: int = 4,
                                           **kwargs: Any) -> List[Document]:
        return [d for d, _ in await self.asimilarity_search_with_score_by_vector(embedding, k, **kwargs)]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        if self.metric is Metric.L2:
            return self._euclidean_relevance_score_fn
        # COSINE similarity (and DOT of normalised embeddings) in [-1, 1] -> [0, 1].
        return lambda s: (1.0 + s) / 2.0

    def _mmr(self, query: List[float], hits: List[ScoredPoint], k: int, lambda_mult: float) -> List[Document]:
        if not hits:
            return []
        vectors = np.stack([h.vector for h in hits if h.vector is not None])
        chosen = maximal_marginal_relevance(np.asarray(query, dtype=np.float32), vectors,  # type: ignore[arg-type]
                                            k=k, lambda_mult=lambda_mult)  # (it takes arrays: np.array(...) inside)
        return [self._document(hits[i].payload, hits[i].id) for i in chosen]

    def max_marginal_relevance_search_by_vector(self, embedding: List[float], k: int = 4, fetch_k: int = 20,
                                                lambda_mult: float = 0.5, **kwargs: Any) -> List[Document]:
        """``k`` documents chosen among the ``fetch_k`` nearest for both similarity to
        the query and diversity among themselves."""
        try:
            hits = self.client.search(self.collection_name, embedding, top_k=max(k, fetch_k), with_vector=True,
                                      **self._read_kwargs(kwargs))
        except NotFound:
            return []
        return self._mmr(embedding, hits, k, lambda_mult)

    async def amax_marginal_relevance_search_by_vector(self, embedding: List[float], k: int = 4,
                                                       fetch_k: int = 20, lambda_mult: float = 0.5,
                                                       **kwargs: Any) -> List[Document]:
        try:
            hits = await self.async_client.search(self.collection_name, embedding, top_k=max(k, fetch_k),
                                                  with_vector=True, **self._read_kwargs(kwargs))
        except NotFound:
            return []
        return self._mmr(embedding, hits, k, lambda_mult)

    def max_marginal_relevance_search(self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5,
                                      **kwargs: Any) -> List[Document]:
        return self.max_marginal_relevance_search_by_vector(self.embedding.embed_query(query), k, fetch_k,
                                                            lambda_mult, **kwargs)

    async def amax_marginal_relevance_search(self, query: str, k: int = 4, fetch_k: int = 20,
                                             lambda_mult: float = 0.5, **kwargs: Any) -> List[Document]:
        vec = await self.embedding.aembed_query(query)
        return await self.amax_marginal_relevance_search_by_vector(vec, k, fetch_k, lambda_mult, **kwargs)

    # ---- constructors ----

    @classmethod
    def from_texts(cls: Type[VST], texts: List[str], embedding: Embeddings, metadatas: Optional[List[dict]] = None,
                   *, ids: Optional[List[str]] = None, client: Union[Client, str, Sequence[str], None] = None,
                   url: Union[str, Sequence[str], None] = None, collection_name: Optional[str] = None,
                   **kwargs: Any) -> VST:
        """A store over ``collection_name`` (a random name if omitted) holding ``texts``."""
        store = cls(client or url or "127.0.0.1:7470", collection_name or f"langchain_{uuid.uuid4().hex}",
                    embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    @classmethod
    async def afrom_texts(cls: Type[VST], texts: List[str], embedding: Embeddings,
                          metadatas: Optional[List[dict]] = None, *, ids: Optional[List[str]] = None,
                          client: Union[Client, str, Sequence[str], None] = None,
                          url: Union[str, Sequence[str], None] = None, collection_name: Optional[str] = None,
                          **kwargs: Any) -> VST:
        store = cls(client or url or "127.0.0.1:7470", collection_name or f"langchain_{uuid.uuid4().hex}",
                    embedding, **kwargs)
        await store.aadd_texts(texts, metadatas, ids=ids)
        return store


# ---- LangChain-style metadata filters ---------------------------------------------------------

_OPS = ("$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte")


def translate_filter(f: Any, metadata_key: str = "metadata") -> Optional[FilterLike]:
    """A LangChain-style metadata filter (or a Shoal filter, passed through) as a Shoal filter."""
    if f is None:
        return None
    if isinstance(f, (Condition, pb.Filter)):
        return f
    if not isinstance(f, Mapping):
        raise ValueError(f"unsupported filter {f!r}")
    if not f:
        return None
    if set(f) <= {"must", "should", "must_not"}:
        return f  # Shoal's JSON form, payload paths
    return _dict_filter(f, metadata_key)


def _dict_filter(f: Mapping[str, Any], mk: str) -> Condition:
    conds: List[Condition] = []
    for key, v in f.items():
        if key in ("$and", "$or"):
            parts = [_dict_filter(x, mk) for x in v]
            conds.append(Filter(must=parts) if key == "$and" else Filter(should=parts))
            continue
        if key.startswith("$"):
            raise ValueError(f"unsupported filter operator {key!r}")
        field = Field(f"{mk}.{key}")
        if isinstance(v, Mapping):
            for op, arg in v.items():
                conds.append(_op(field, op, arg))
        elif isinstance(v, (list, tuple, set)):
            conds.append(field.any_of(*v))
        else:
            conds.append(field == v)
    return conds[0] if len(conds) == 1 else Filter(must=conds)


def _op(field: Field, op: str, arg: Any) -> Condition:
    if op == "$eq":
        return field == arg
    if op == "$ne":
        return field != arg
    if op == "$in":
        return field.any_of(*arg)
    if op == "$nin":
        return ~field.any_of(*arg)
    if op == "$gt":
        return field > arg
    if op == "$gte":
        return field >= arg
    if op == "$lt":
        return field < arg
    if op == "$lte":
        return field <= arg
    raise ValueError(f"unsupported filter operator {op!r}; expected one of {', '.join(_OPS)}")
