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
