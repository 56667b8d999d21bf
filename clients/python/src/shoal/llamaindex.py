"""LlamaIndex vector store over Shoal (``pip install 'shoal-client[llamaindex]'``).

    from llama_index.core import StorageContext, VectorStoreIndex
    from shoal.llamaindex import ShoalVectorStore

    store = ShoalVectorStore("docs", url="127.0.0.1:7470")
    index = VectorStoreIndex.from_documents(
        documents, storage_context=StorageContext.from_defaults(vector_store=store))
    index.as_retriever(similarity_top_k=4, filters=MetadataFilters(...)).retrieve("question")
    index.delete_ref_doc(doc_id)          # removes every node of that document

Each node is one point. Its payload is LlamaIndex's usual vector-store record
(``node_to_metadata_dict``): the node's metadata at the top level (so filters name
metadata keys directly), the serialised node in ``_node_content`` (text included),
and ``ref_doc_id`` / ``doc_id`` / ``document_id``. Node ids that are UUIDs are the
point ids; others map to ``uuid5(NAMESPACE, id)``.

``MetadataFilters`` map to Shoal filters: ``==`` (strings, integers; floats as a
closed range), ``!=``, ``>``, ``>=``, ``<``, ``<=``, ``in``, ``nin``, ``any``,
``all``, ``contains`` and ``is_empty``, combined with ``and`` / ``or`` / ``not`` and
nested. Text-match operators raise ``NotImplementedError``. Query modes: default and
``mmr``.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Union

import numpy as np

try:
    from llama_index.core.bridge.pydantic import PrivateAttr
    from llama_index.core.schema import BaseNode, MetadataMode
    from llama_index.core.vector_stores.types import (
        BasePydanticVectorStore,
        FilterCondition,
        FilterOperator,
        MetadataFilter,
        MetadataFilters,
        VectorStoreQuery,
        VectorStoreQueryMode,
        VectorStoreQueryResult,
    )
    from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict
    from llama_index.core.indices.query.embedding_utils import get_top_k_mmr_embeddings
except ImportError as e:  # pragma: no cover
    raise ImportError("shoal.llamaindex needs llama-index-core: pip install 'shoal-client[llamaindex]'") from e

from .aio import AsyncClient
from .client import Client
from .errors import AlreadyExists, NotFound
from .filters import Condition, Field, Filter, HasId
from ._ids import point_id
from .models import Metric, Record, ScoredPoint

__all__ = ["ShoalVectorStore", "to_shoal_filter"]


class ShoalVectorStore(BasePydanticVectorStore):
    """A LlamaIndex vector store over a Shoal collection.

    Args:
        collection_name: the collection (created at the first ``add`` if missing,
            its dimension taken from the nodes' embeddings).
        client: a :class:`shoal.Client`; or ``url`` (node address or addresses).
        aclient: an :class:`shoal.AsyncClient` for the async methods (default:
            ``client.async_client()``, sharing its session tokens).
        metric, shard_count, replication_factor: for creating the collection.
        ef: graph search candidate list (server default if ``None``).
        batch_size: nodes per upsert request.
    """

    stores_text: bool = True
    flat_metadata: bool = False

    collection_name: str
    metric: str = "COSINE"
    shard_count: Optional[int] = None
    replication_factor: Optional[int] = None
    ef: Optional[int] = None
    batch_size: int = 256

    _client: Client = PrivateAttr()
    _aclient: Optional[AsyncClient] = PrivateAttr(default=None)
    _ready: bool = PrivateAttr(default=False)

    def __init__(self, collection_name: str, client: Optional[Client] = None, *,
                 url: Union[str, Sequence[str], None] = None, aclient: Optional[AsyncClient] = None,
                 **kwargs: Any) -> None:
        super().__init__(collection_name=collection_name, **kwargs)  # type: ignore[call-arg]
        if client is None:
            client = Client(url or "127.0.0.1:7470")
        self._client = client
        self._aclient = aclient

    @classmethod
    def class_name(cls) -> str:
        return "ShoalVectorStore"

    @property
    def client(self) -> Client:
        return self._client

    @property
    def aclient(self) -> AsyncClient:
        if self._aclient is None:
            self._aclient = self._client.async_client()
        return self._aclient

    # ---- writes ----

    def _create_args(self, dim: int) -> dict:
        return dict(name=self.collection_name, dim=dim, metric=Metric.parse(self.metric),
                    shard_count=self.shard_count, replication_factor=self.replication_factor)

    def _points(self, nodes: Sequence[BaseNode]) -> List[tuple]:
        points = []
        for n in nodes:
            emb = n.get_embedding()
            payload = node_to_metadata_dict(n, remove_text=False, flat_metadata=self.flat_metadata)
            points.append((point_id(n.node_id), emb, payload))
        return points

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> List[str]:
        """Upserts nodes (with their embeddings); returns their ids."""
        if not nodes:
            return []
        if not self._ready:
            try:
                self._client.create_collection(**self._create_args(len(nodes[0].get_embedding())))
            except AlreadyExists:
                pass
            self._ready = True
        points = self._points(nodes)
        for s in range(0, len(points), self.batch_size):
            self._client.upsert(self.collection_name, points[s:s + self.batch_size])
        return [n.node_id for n in nodes]

    async def async_add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> List[str]:
        if not nodes:
            return []
        if not self._ready:
            try:
                await self.aclient.create_collection(**self._create_args(len(nodes[0].get_embedding())))
            except AlreadyExists:
                pass
            self._ready = True
        points = self._points(nodes)
        for s in range(0, len(points), self.batch_size):
            await self.aclient.upsert(self.collection_name, points[s:s + self.batch_size])
        return [n.node_id for n in nodes]

    def _match(self, node_ids: Optional[List[str]], filters: Optional[MetadataFilters],
               doc_ids: Optional[List[str]] = None) -> Optional[Condition]:
        parts: List[Condition] = []
        if node_ids:
            parts.append(HasId(*[point_id(i) for i in node_ids]))
        if doc_ids:
            parts.append(Field("ref_doc_id").any_of(*doc_ids))
        if filters is not None and filters.filters:
            parts.append(to_shoal_filter(filters))
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else Filter(must=parts)

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Deletes every node of the document ``ref_doc_id``."""
        self.delete_nodes(doc_ids=[ref_doc_id])

    async def adelete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        await self.adelete_nodes(doc_ids=[ref_doc_id])

    def delete_nodes(self, node_ids: Optional[List[str]] = None, filters: Optional[MetadataFilters] = None,
                     doc_ids: Optional[List[str]] = None, **delete_kwargs: Any) -> None:
        """Deletes nodes by id and/or matching ``filters`` (all given conditions hold)."""
        match = self._match(node_ids, filters, doc_ids)
        try:
            if match is None:
                return
            ids = [r.id for r in self._client.scroll(self.collection_name, filter=match, with_payload=False)]
            for s in range(0, len(ids), 1000):
                self._client.delete(self.collection_name, ids[s:s + 1000])
        except NotFound:
            pass

    async def adelete_nodes(self, node_ids: Optional[List[str]] = None, filters: Optional[MetadataFilters] = None,
                            doc_ids: Optional[List[str]] = None, **delete_kwargs: Any) -> None:
        match = self._match(node_ids, filters, doc_ids)
        try:
            if match is None:
                return
            ids = [r.id async for r in self.aclient.scroll(self.collection_name, filter=match, with_payload=False)]
            for s in range(0, len(ids), 1000):
                await self.aclient.delete(self.collection_name, ids[s:s + 1000])
        except NotFound:
            pass

    def clear(self) -> None:
        """Deletes the collection (it is created again by the next ``add``)."""
        try:
            self._client.delete_collection(self.collection_name)
        except NotFound:
            pass
        self._ready = False

    async def aclear(self) -> None:
        try:
            await self.aclient.delete_collection(self.collection_name)
        except NotFound:
            pass
        self._ready = False

    # ---- reads ----

    def _node(self, r: Union[Record, ScoredPoint]) -> BaseNode:
        node = metadata_dict_to_node(r.payload)
        if r.vector is not None:
            node.embedding = r.vector.tolist()
        return node

    def get_nodes(self, node_ids: Optional[List[str]] = None, filters: Optional[MetadataFilters] = None,
                  **kwargs: Any) -> List[BaseNode]:
        """Nodes by id and/or matching ``filters`` (all nodes if neither is given)."""
        try:
            if node_ids and not (filters and filters.filters):
                return [self._node(r) for r in self._client.get(self.collection_name,
                                                               [point_id(i) for i in node_ids])]
            return [self._node(r) for r in self._client.scroll(self.collection_name,
                                                              filter=self._match(node_ids, filters))]
        except NotFound:
            return []

    async def aget_nodes(self, node_ids: Optional[List[str]] = None, filters: Optional[MetadataFilters] = None,
                         **kwargs: Any) -> List[BaseNode]:
        try:
            if node_ids and not (filters and filters.filters):
                recs = await self.aclient.get(self.collection_name, [point_id(i) for i in node_ids])
                return [self._node(r) for r in recs]
            return [self._node(r) async for r in self.aclient.scroll(self.collection_name,
                                                                    filter=self._match(node_ids, filters))]
        except NotFound:
            return []

    def _search_args(self, query: VectorStoreQuery, kwargs: dict) -> dict:
        if query.query_embedding is None:
            raise ValueError("ShoalVectorStore.query needs query.query_embedding")
        if query.mode not in (VectorStoreQueryMode.DEFAULT, VectorStoreQueryMode.MMR):
            raise NotImplementedError(f"query mode {query.mode.value!r} is not supported (default, mmr)")
        mmr = query.mode == VectorStoreQueryMode.MMR
        top_k = query.similarity_top_k
        if mmr:
            top_k = kwargs.get("mmr_prefetch_k") or max(top_k * kwargs.get("mmr_prefetch_factor", 4), top_k)
        return dict(top_k=max(1, top_k), ef=kwargs.get("ef", self.ef), with_vector=mmr,
                    filter=self._match(query.node_ids, query.filters, query.doc_ids))

    def _result(self, query: VectorStoreQuery, hits: List[ScoredPoint]) -> VectorStoreQueryResult:
        if query.mode == VectorStoreQueryMode.MMR and hits:
            sims, ids = get_top_k_mmr_embeddings(
                query.query_embedding or [], [h.vector.tolist() for h in hits],  # type: ignore[union-attr]
                similarity_top_k=query.similarity_top_k, embedding_ids=list(range(len(hits))),
                mmr_threshold=query.mmr_threshold)
            hits = [hits[i] for i in ids]
            scores = list(sims)
        else:
            scores = [h.score for h in hits]
        nodes = [self._node(h) for h in hits]
        return VectorStoreQueryResult(nodes=nodes, similarities=scores, ids=[n.node_id for n in nodes])

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """The ``similarity_top_k`` nearest nodes (filters, doc_ids, node_ids, MMR)."""
        args = self._search_args(query, kwargs)
        try:
            hits = self._client.search(self.collection_name, query.query_embedding, **args)  # type: ignore[arg-type]
        except NotFound:
            hits = []
        return self._result(query, hits)

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        args = self._search_args(query, kwargs)
        try:
            hits = await self.aclient.search(self.collection_name, query.query_embedding, **args)  # type: ignore[arg-type]
        except NotFound:
            hits = []
        return self._result(query, hits)


# ---- MetadataFilters -> Shoal filters ------------------------------------------------------------

def to_shoal_filter(filters: MetadataFilters) -> Condition:
    """LlamaIndex ``MetadataFilters`` as a Shoal filter."""
    parts = [to_shoal_filter(f) if isinstance(f, MetadataFilters) else _one(f) for f in filters.filters]
    cond = filters.condition or FilterCondition.AND
    if cond == FilterCondition.AND:
        return parts[0] if len(parts) == 1 else Filter(must=parts)
    if cond == FilterCondition.OR:
        return Filter(should=parts)
    if cond == FilterCondition.NOT:
        return Filter(must_not=parts)
    raise NotImplementedError(f"filter condition {cond!r}")


def _one(f: MetadataFilter) -> Condition:
    field = Field(f.key)
    op = f.operator
    v: Any = f.value
    if op == FilterOperator.EQ:
        return field == v
    if op == FilterOperator.NE:
        return field != v
    if op == FilterOperator.GT:
        return field > v
    if op == FilterOperator.GTE:
        return field >= v
    if op == FilterOperator.LT:
        return field < v
    if op == FilterOperator.LTE:
        return field <= v
    if op in (FilterOperator.IN, FilterOperator.ANY):
        return field.any_of(*_listed(v))
    if op == FilterOperator.NIN:
        return ~field.any_of(*_listed(v))
    if op == FilterOperator.ALL:
        return Filter(must=[field.any_of(x) for x in _listed(v)])
    if op == FilterOperator.CONTAINS:
        return field.any_of(v)  # a list value matches if any element does
    if op == FilterOperator.IS_EMPTY:
        return field.is_empty()
    raise NotImplementedError(f"filter operator {op.value!r} is not supported by Shoal")


def _listed(v: Any) -> list:
    return list(v) if isinstance(v, (list, tuple, set)) else [v]
