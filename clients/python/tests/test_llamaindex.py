"""LlamaIndex: the vector store's add / delete / query with MetadataFilters (sync and
async), and VectorStoreIndex end to end over Shoal (build, retrieve, query engine,
delete by document, insert). Embeddings are deterministic (word hashing); the LLM is
LlamaIndex's MockLLM; the tokenizers are the ones llama-index-core ships."""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Generator, List

import numpy as np
import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import Document, Settings, StorageContext, VectorStoreIndex  # noqa: E402
from llama_index.core.base.embeddings.base import BaseEmbedding  # noqa: E402
from llama_index.core.llms.mock import MockLLM  # noqa: E402
from llama_index.core.node_parser import SentenceSplitter  # noqa: E402
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode  # noqa: E402
from llama_index.core.vector_stores.types import (  # noqa: E402
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)

import shoal  # noqa: E402
from shoal.llamaindex import ShoalVectorStore  # noqa: E402

DIM = 64


def _embed(text: str) -> List[float]:
    v = np.zeros(DIM, dtype=np.float32)
    for w in re.findall(r"\w+", text.lower()):
        h = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
        v[h % DIM] += 1.0 if (h >> 32) & 1 else -1.0
    n = np.linalg.norm(v)
    return (v / n if n else v + 1.0 / np.sqrt(DIM)).tolist()


class HashEmbedding(BaseEmbedding):
    """Deterministic bag-of-words embedding: texts sharing words are near."""

    def _get_query_embedding(self, query: str) -> List[float]:
        return _embed(query)

    async def _aget_query_embedding(self, query: str) -> List[float]:
        return _embed(query)

    def _get_text_embedding(self, text: str) -> List[float]:
        return _embed(text)


@pytest.fixture(scope="module")
def li_client(url: str) -> Generator[shoal.Client, None, None]:
    c = shoal.Client(url)
    yield c
    c.close()


@pytest.fixture()
def store(li_client: shoal.Client) -> Generator[ShoalVectorStore, None, None]:
    name = "li_" + uuid.uuid4().hex[:12]
    s = ShoalVectorStore(name, li_client, shard_count=2)
    yield s
    s.clear()


def _nodes() -> List[TextNode]:
    rows = [
        ("n1", "doc-a", "the quick brown fox", {"author": "ann", "year": 2019, "tags": ["animal", "fast"]}),
        ("n2", "doc-a", "jumps over the lazy dog", {"author": "ann", "year": 2020, "tags": ["animal"]}),
        ("n3", "doc-b", "shoal is a vector database", {"author": "bob", "year": 2024, "tags": ["db"]}),
        ("n4", "doc-b", "raft replicates every shard", {"author": "bob", "year": 2025, "tags": ["db", "raft"],
                                                          "score": 0.5}),
        ("n5", "doc-c", "pasta with tomato sauce", {"author": "cid", "year": 2021, "tags": []}),
    ]
    out = []
    for nid, doc, text, meta in rows:
        n = TextNode(id_=nid, text=text, metadata=meta, embedding=_embed(text))
        n.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=doc)
        out.append(n)
    return out


def _q(text: str, k: int = 5, filters: MetadataFilters | None = None, **kw) -> VectorStoreQuery:  # type: ignore[no-untyped-def]
    return VectorStoreQuery(query_embedding=_embed(text), similarity_top_k=k, filters=filters, **kw)


def _f(*filters, condition=FilterCondition.AND) -> MetadataFilters:  # type: ignore[no-untyped-def]
    return MetadataFilters(filters=list(filters), condition=condition)


def test_add_query_and_filters(store: ShoalVectorStore) -> None:
    ids = store.add(_nodes())
    assert ids == ["n1", "n2", "n3", "n4", "n5"]
    res = store.query(_q("shoal is a vector database", k=2))
    assert res.ids[0] == "n3" and res.nodes[0].get_content() == "shoal is a vector database"
    assert res.nodes[0].metadata["author"] == "bob" and res.nodes[0].ref_doc_id == "doc-b"
    assert res.similarities[0] == pytest.approx(1.0, abs=1e-5)

    def ids_for(filters: MetadataFilters) -> List[str]:
        return sorted(store.query(_q("anything", k=5, filters=filters)).ids)

    assert ids_for(_f(MetadataFilter(key="author", value="ann"))) == ["n1", "n2"]
    assert ids_for(_f(MetadataFilter(key="year", value=2024, operator=FilterOperator.GTE))) == ["n3", "n4"]
    assert ids_for(_f(MetadataFilter(key="year", value=2020, operator=FilterOperator.LT),
                      MetadataFilter(key="author", value="ann"))) == ["n1"]
    assert ids_for(_f(MetadataFilter(key="author", value="cid"),
                      MetadataFilter(key="year", value=2019), condition=FilterCondition.OR)) == ["n1", "n5"]
    assert ids_for(_f(MetadataFilter(key="author", value=["ann", "cid"], operator=FilterOperator.IN))) == \
        ["n1", "n2", "n5"]
    assert ids_for(_f(MetadataFilter(key="author", value=["ann", "cid"], operator=FilterOperator.NIN))) == \
        ["n3", "n4"]
    assert ids_for(_f(MetadataFilter(key="author", value="bob", operator=FilterOperator.NE))) == ["n1", "n2", "n5"]
    assert ids_for(_f(MetadataFilter(key="tags", value="db", operator=FilterOperator.CONTAINS))) == ["n3", "n4"]
    assert ids_for(_f(MetadataFilter(key="tags", value=["db", "raft"], operator=FilterOperator.ALL))) == ["n4"]
    assert ids_for(_f(MetadataFilter(key="tags", value=["fast", "raft"], operator=FilterOperator.ANY))) == \
        ["n1", "n4"]
    assert ids_for(_f(MetadataFilter(key="tags", value=None, operator=FilterOperator.IS_EMPTY))) == ["n5"]
    assert ids_for(_f(MetadataFilter(key="score", value=0.5))) == ["n4"]
    nested = _f(_f(MetadataFilter(key="author", value="ann")), MetadataFilter(key="year", value=2024),
                condition=FilterCondition.OR)
    assert ids_for(nested) == ["n1", "n2", "n3"]
    assert ids_for(_f(MetadataFilter(key="author", value="ann"), condition=FilterCondition.NOT)) == \
        ["n3", "n4", "n5"]
    # doc_ids and node_ids restrict the query too
    assert sorted(store.query(_q("x", doc_ids=["doc-b"])).ids) == ["n3", "n4"]
    assert sorted(store.query(_q("x", node_ids=["n2", "n5"])).ids) == ["n2", "n5"]
    with pytest.raises(NotImplementedError):
        store.query(_q("x", filters=_f(MetadataFilter(key="author", value="a", operator=FilterOperator.TEXT_MATCH))))


def test_delete_get_nodes_and_mmr(store: ShoalVectorStore) -> None:
    store.add(_nodes())
    assert [n.node_id for n in store.get_nodes(node_ids=["n4", "n1"])] == ["n4", "n1"]
    got = store.get_nodes(filters=_f(MetadataFilter(key="author", value="bob")))
    assert sorted(n.node_id for n in got) == ["n3", "n4"]
    store.delete("doc-a")  # by document
    assert sorted(n.node_id for n in store.get_nodes()) == ["n3", "n4", "n5"]
    store.delete_nodes(node_ids=["n5"])
    store.delete_nodes(filters=_f(MetadataFilter(key="year", value=2025)))
    assert [n.node_id for n in store.get_nodes()] == ["n3"]
    store.add(_nodes())
    mmr = store.query(_q("the quick brown fox", k=3, mode=VectorStoreQueryMode.MMR, mmr_threshold=0.5))
    assert mmr.ids[0] == "n1" and len(mmr.ids) == 3 and len(set(mmr.ids)) == 3
    store.clear()
    assert store.get_nodes() == []
    assert store.query(_q("fox")).ids == []


async def test_async_store(store: ShoalVectorStore) -> None:
    assert await store.async_add(_nodes()) == ["n1", "n2", "n3", "n4", "n5"]
    res = await store.aquery(_q("raft replicates", k=1, filters=_f(MetadataFilter(key="author", value="bob"))))
    assert res.ids == ["n4"]
    await store.adelete("doc-b")
    assert sorted(n.node_id for n in await store.aget_nodes()) == ["n1", "n2", "n5"]
    await store.adelete_nodes(node_ids=["n1"])
    assert [n.node_id for n in await store.aget_nodes(node_ids=["n1", "n2"])] == ["n2"]
    await store.aclear()
    assert (await store.aquery(_q("fox"))).ids == []


def test_vector_store_index_end_to_end(li_client: shoal.Client) -> None:
    name = "li_" + uuid.uuid4().hex[:12]
    store = ShoalVectorStore(name, li_client)
    Settings.llm = MockLLM()
    embed = HashEmbedding()
    docs = [
        Document(text="Shoal is a sharded vector database. Every shard is a Raft group.",
                 metadata={"topic": "db"}, doc_id="shoal-doc"),
        Document(text="Tomatoes, basil and olive oil make a simple pasta sauce.",
                 metadata={"topic": "food"}, doc_id="pasta-doc"),
        Document(text="The fox is quick and brown. The dog is lazy.", metadata={"topic": "animals"},
                 doc_id="fox-doc"),
    ]
    try:
        index = VectorStoreIndex.from_documents(
            docs, storage_context=StorageContext.from_defaults(vector_store=store), embed_model=embed,
            transformations=[SentenceSplitter(chunk_size=64, chunk_overlap=0)])
        assert li_client.count(name) >= 3
        hits = index.as_retriever(similarity_top_k=1).retrieve("which database uses raft shard")
        assert hits[0].node.ref_doc_id == "shoal-doc"
        filtered = index.as_retriever(
            similarity_top_k=3, filters=_f(MetadataFilter(key="topic", value="food"))).retrieve("database")
        assert {h.node.ref_doc_id for h in filtered} == {"pasta-doc"}
        response = index.as_query_engine(similarity_top_k=1).query("pasta sauce tomatoes")
        assert response.source_nodes[0].node.ref_doc_id == "pasta-doc"
        assert str(response)  # MockLLM echoes the prompt

        index.delete_ref_doc("shoal-doc")
        hits = index.as_retriever(similarity_top_k=5).retrieve("which database uses raft shard")
        assert "shoal-doc" not in {h.node.ref_doc_id for h in hits}
        index.insert(Document(text="Raft elects a leader per shard.", doc_id="raft-doc"))
        hits = index.as_retriever(similarity_top_k=1).retrieve("raft leader shard")
        assert hits[0].node.ref_doc_id == "raft-doc"
    finally:
        store.clear()


async def test_vector_store_index_async(li_client: shoal.Client) -> None:
    name = "li_" + uuid.uuid4().hex[:12]
    store = ShoalVectorStore(name, li_client)
    try:
        index = VectorStoreIndex(
            nodes=[], storage_context=StorageContext.from_defaults(vector_store=store),
            embed_model=HashEmbedding(), use_async=True)
        await index.ainsert_nodes(_nodes())
        hits = await index.as_retriever(similarity_top_k=2).aretrieve("lazy dog jumps")
        assert hits[0].node.node_id == "n2"
        await index.adelete_ref_doc("doc-a")
        hits = await index.as_retriever(similarity_top_k=5).aretrieve("lazy dog jumps")
        assert {h.node.ref_doc_id for h in hits} == {"doc-b", "doc-c"}
    finally:
        await store.aclear()
