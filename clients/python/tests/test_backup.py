"""Backups from Python against one real node: create (all or some collections),
list, download to a file, restore from the file under another name and from the
node's own backup by name, damaged archives refused naming the file, delete; and
the asyncio client's twins."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import shoal


def _fill(c: shoal.Client, name: str, n: int = 300) -> np.ndarray:
    c.create_collection(name, dim=4, metric="L2", shard_count=2)
    rng = np.random.default_rng(3)
    vectors = rng.random((n, 4), dtype=np.float32)
    c.upsert(name, ids=list(range(n)), vectors=vectors, payloads=[{"i": i} for i in range(n)])
    return vectors


def _all(c: shoal.Client, name: str) -> dict:
    out = {}
    for r in c.scroll(name, with_vector=True, with_payload=True, consistency="strong"):
        out[r.id] = (list(np.asarray(r.vector)), r.payload)
    return out


def test_backup_download_restore_and_damage(url: str, name: str, tmp_path: Path) -> None:
    with shoal.Client(url) as c:
        _fill(c, name)
        other = name + "_b"
        _fill(c, other, 50)
        info = c.create_backup([name], name=f"bk-{name}")
        assert info.name == f"bk-{name}"
        assert [x.name for x in info.collections] == [name]
        assert info.points == 300 and info.bytes > 0
        assert all(len(s["sha256"]) == 64 for s in info.collections[0].shards)
        assert f"bk-{name}" in [b.name for b in c.list_backups()]
        with pytest.raises(shoal.AlreadyExists):
            c.create_backup([name], name=f"bk-{name}")
        with pytest.raises(shoal.NotFound):
            c.create_backup(["no_such_collection"], name=f"bk2-{name}")

        archive = tmp_path / "b.tar"
        size = c.download_backup(f"bk-{name}", archive)
        assert size == archive.stat().st_size > info.bytes

        restored = c.restore_backup(archive, rename=name + "_copy")
        assert [(r.name, r.points) for r in restored] == [(name + "_copy", 300)]
        assert _all(c, name + "_copy") == _all(c, name)
        restored = c.restore_backup(name=f"bk-{name}", rename=name + "_byname", replication_factor=1)
        assert restored[0].points == 300
        with pytest.raises(shoal.AlreadyExists):
            c.restore_backup(archive)

        damaged = tmp_path / "bad.tar"
        data = bytearray(archive.read_bytes())
        data[len(data) // 2] ^= 0x20
        damaged.write_bytes(bytes(data))
        with pytest.raises(shoal.InvalidArgument) as e:
            c.restore_backup(damaged, rename=name + "_bad")
        assert ".points" in str(e.value)
        assert name + "_bad" not in [x.name for x in c.list_collections()]

        c.delete_backup(f"bk-{name}")
        with pytest.raises(shoal.NotFound):
            c.download_backup(f"bk-{name}", tmp_path / "gone.tar")
        assert not (tmp_path / "gone.tar").exists() and not (tmp_path / "gone.tar.partial").exists()
        with pytest.raises(shoal.InvalidArgument):
            c.restore_backup()


async def test_async_backups(url: str, name: str, tmp_path: Path) -> None:
    with shoal.Client(url) as c:
        _fill(c, name, 100)
    async with shoal.AsyncClient(url) as a:
        info = await a.create_backup([name], name=f"abk-{name}")
        assert info.points == 100
        assert f"abk-{name}" in [b.name for b in await a.list_backups()]
        archive = tmp_path / "a.tar"
        assert await a.download_backup(f"abk-{name}", archive) == archive.stat().st_size
        restored = await a.restore_backup(archive, rename=name + "_acopy")
        assert restored[0].points == 100
        await a.delete_backup(f"abk-{name}")
        assert await a.count(name + "_acopy", consistency="strong") == 100
