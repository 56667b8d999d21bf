"""The README's examples run as written against a live node."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_rag_example_runs(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_URL", url)
    rag = _blocks()[0]
    assert "client.upload(\"chunks\"" in rag
    exec(compile(rag, "README.md (RAG example)", "exec"), {})


def test_client_tour_and_async_examples_run(url: str) -> None:
    tour, asy = _blocks()[1], _blocks()[2]
    exec(compile(tour.replace("127.0.0.1:7470", url), "README.md (client)", "exec"), {})
    exec(compile(asy.replace("127.0.0.1:7470", url), "README.md (async)", "exec"), {})


def test_langchain_example_runs(url: str) -> None:
    pytest.importorskip("langchain_core")
    block = next(b for b in _blocks() if "shoal.langchain" in b)
    exec(compile(block.replace("127.0.0.1:7470", url), "README.md (langchain)", "exec"), {})


def test_cluster_administration_example_names_real_methods() -> None:
    """That block changes a cluster's shape (drains a node), so it is only compiled,
    and every client method it calls must exist on both clients."""
    import shoal

    block = next(b for b in _blocks() if "drain_node" in b)
    compile(block, "README.md (cluster administration)", "exec")
    for method in set(re.findall(r"client\.(\w+)\(", block)):
        assert hasattr(shoal.Client, method) and hasattr(shoal.AsyncClient, method), method


def test_security_example_names_real_arguments() -> None:
    """That block needs a TLS node with keys, so it is only compiled, and every
    keyword it passes must be an argument of both clients."""
    import inspect

    import shoal

    block = next(b for b in _blocks() if "root_certificates=" in b)
    compile(block, "README.md (security)", "exec")
    for kw in set(re.findall(r"(\w+)=", block)):
        for cls in (shoal.Client, shoal.AsyncClient):
            if kw in ("client_certificate", "client_key", "tls_server_name", "api_key", "root_certificates"):
                assert kw in inspect.signature(cls.__init__).parameters, (cls, kw)
