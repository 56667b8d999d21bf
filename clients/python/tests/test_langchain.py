"""LangChain: the standard `VectorStoreIntegrationTests` suite of langchain-tests
(sync and async) against a live node, plus filters, MMR, scores and the retriever."""

from __future__ import annotations

import uuid
from typing import Generator

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_tests")

from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import DeterministicFakeEmbedding  # noqa: E402
from langchain_tests.integration_tests.vectorstores import VectorStoreIntegrationTests  # noqa: E402

import shoal  # noqa: E402
from shoal.langchain import ShoalVectorStore, metadata_field  # noqa: E402


@pytest.fixture(scope="module")
def lc_client(url: str) -> Generator[shoal.Client, None, None]:
    c = shoal.Client(url)
    yield c
    c.close()


class TestShoalStandard(VectorStoreIntegrationTests):
    """The frameworks' own suite: every test gets a fresh, empty collection."""

    @pytest.fixture()
    def vectorstore(self, lc_client: shoal.Client) -> Generator[ShoalVectorStore, None, None]:  # type: ignore[override]
        name = "lc_" + uuid.uuid4().hex[:12]
        store = ShoalVectorStore(lc_client, name, self.get_embeddings())
        try:
            yield store
        finally:
            try:
                lc_client.delete_collection(name)
            except shoal.NotFound:
                pass


@pytest.fixture()
def store(lc_client: shoal.Client) -> Generator[ShoalVectorStore, None, None]:
    name = "lc_" + uuid.uuid4().hex[:12]
    s = ShoalVectorStore(lc_client, name, DeterministicFakeEmbedding(size=16), shard_count=2)
    texts = ["apples", "bananas", "cherries", "dates", "elderberries", "figs"]
    metas = [{"lang": "en", "year": 2019 + i, "tags": ["fruit", "t%d" % (i % 2)]} for i in range(6)]
    metas[1]["lang"] = "fr"
    s.add_texts(texts, metas, ids=[f"doc-{i}" for i in range(6)])
    yield s
    lc_client.delete_collection(name)


def test_metadata_filters(store: ShoalVectorStore) -> None:
    got = store.similarity_search("apples", k=6, filter={"lang": "fr"})
    assert [d.id for d in got] == ["doc-1"]
    got = store.similarity_search("apples", k=6, filter={"year": {"$gte": 2022}})
    assert sorted(d.id for d in got) == ["doc-3", "doc-4", "doc-5"]
    got = store.similarity_search("apples", k=6, filter={"$or": [{"lang": "fr"}, {"year": {"$lt": 2020}}]})
    assert sorted(d.id for d in got) == ["doc-0", "doc-1"]
    got = store.similarity_search("apples", k=6, filter={"tags": {"$nin": ["t1"]}, "lang": ["en", "de"]})
    assert sorted(d.id for d in got) == ["doc-0", "doc-2", "doc-4"]
    # Shoal's own filters, on payload paths.
    got = store.similarity_search("apples", k=6, filter=metadata_field("year").between(2020, 2021))
    assert sorted(d.id for d in got) == ["doc-1", "doc-2"]
    got = store.similarity_search("x", k=6, filter={"must": [{"key": "metadata.lang", "keyword": ["fr"]}]})
    assert [d.id for d in got] == ["doc-1"]


def test_scores_and_relevance(store: ShoalVectorStore) -> None:
    (doc, score), *_ = store.similarity_search_with_score("cherries", k=3)
    assert doc.page_content == "cherries" and score == pytest.approx(1.0, abs=1e-5)
    rel = store.similarity_search_with_relevance_scores("cherries", k=2)
    assert rel[0][0].page_content == "cherries" and rel[0][1] == pytest.approx(1.0, abs=1e-5)
    assert 0.0 <= rel[1][1] <= 1.0


def test_mmr_and_retriever(store: ShoalVectorStore) -> None:
    mmr = store.max_marginal_relevance_search("figs", k=3, fetch_k=6)
    assert len(mmr) == 3 and mmr[0].page_content == "figs"
    assert len({d.id for d in mmr}) == 3
    retriever = store.as_retriever(search_kwargs={"k": 2, "filter": {"lang": "en"}})
    docs = retriever.invoke("dates")
    assert docs[0].page_content == "dates" and all(d.metadata["lang"] == "en" for d in docs)
    mmr_ret = store.as_retriever(search_type="mmr", search_kwargs={"k": 2, "fetch_k": 5})
    assert len(mmr_ret.invoke("apples")) == 2


async def test_async_extras(store: ShoalVectorStore) -> None:
    docs = await store.asimilarity_search("bananas", k=1, filter={"lang": "fr"})
    assert docs == [Document(id="doc-1", page_content="bananas",
                             metadata={"lang": "fr", "year": 2020, "tags": ["fruit", "t1"]})]
    mmr = await store.amax_marginal_relevance_search("figs", k=2, fetch_k=6)
    assert mmr[0].page_content == "figs"
    await store.adelete(["doc-0"])
    assert await store.aget_by_ids(["doc-0", "doc-2"]) == [store.get_by_ids(["doc-2"])[0]]
    await store.adelete()  # everything
    assert store.similarity_search("apples", k=3) == []


def test_from_texts_and_delete_all(url: str) -> None:
    name = "lc_" + uuid.uuid4().hex[:12]
    s = ShoalVectorStore.from_texts(["a", "b", "c"], DeterministicFakeEmbedding(size=8), url=url,
                                    collection_name=name, metric="L2")
    try:
        assert s.client.get_collection(name).metric is shoal.Metric.L2
        assert s.similarity_search("b", k=1)[0].page_content == "b"
        rel = s.similarity_search_with_relevance_scores("b", k=1)
        assert rel[0][1] == pytest.approx(1.0, abs=1e-5)
        s.delete()
        assert s.client.count(name) == 0
    finally:
        s.client.delete_collection(name)
        s.client.close()
