"""walkout.mcap_scan reads what the mcap library reads, in the same order, whatever the file's shape."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcap.reader import make_reader
from mcap.writer import CompressionType, IndexType, Writer

from walkout import mcap_scan
from walkout.mcap_scan import scan_messages


def _library(path: Path, keep=None) -> list[tuple]:
    with open(path, "rb") as f:
        out = []
        for schema, channel, m in make_reader(f).iter_messages(log_time_order=True):
            name = schema.name if schema is not None else ""
            if keep is None or keep(channel.topic, name):
                out.append((channel.topic, name, m.log_time, m.data))
        return out


def _write(path: Path, times: list[tuple[str, int]], compression: CompressionType, chunk_size: int,
           index: IndexType = IndexType.ALL) -> None:
    """Messages on topics ``a`` (schema ``json``), ``img`` (schema ``image``) and ``raw`` (no schema), written in
    the given order with the given log times."""
    with open(path, "wb") as f:
        w = Writer(f, compression=compression, chunk_size=chunk_size, index_types=index)
        w.start()
        js = w.register_schema("json", "jsonschema", b"{}")
        im = w.register_schema("image", "jsonschema", b"{}")
        ch = {"a": w.register_channel("a", "json", js), "img": w.register_channel("img", "json", im),
              "raw": w.register_channel("raw", "json", 0)}
        for k, (topic, t) in enumerate(times):
            data = (b"x" * 400 if topic == "img" else b"") + f'{{"k": {k}}}'.encode()
            w.add_message(ch[topic], log_time=t, data=data, publish_time=t, sequence=k)
        w.finish()


def _in_order(n: int, back: bool = False) -> list[tuple[str, int]]:
    """Three messages at each time (ties, across chunk boundaries too); ``back``: now and then one a little
    earlier than the one before it."""
    topics = ("a", "img", "raw", "a")
    return [(topics[k % 4], 10**6 + 1000 * (k // 3) - (50 if back and k % 7 == 3 else 0)) for k in range(n)]


@pytest.mark.parametrize(("compression", "chunk_size", "back"), [
    (CompressionType.ZSTD, 2000, False),
    (CompressionType.NONE, 2000, False),
    (CompressionType.LZ4, 2000, False),  # read through the library
    (CompressionType.ZSTD, 1 << 20, True),  # one chunk, sorted by time
])
def test_the_same_messages_in_the_same_order_as_the_library(tmp_path: Path, monkeypatch, compression,
                                                            chunk_size, back):
    p = tmp_path / "f.mcap"
    _write(p, _in_order(300, back), compression, chunk_size)
    with open(p, "rb") as f:
        assert len(make_reader(f).get_summary().chunk_indexes) > (1 if chunk_size < 10000 else 0)
    fallbacks = _count_fallbacks(monkeypatch)
    got = [tuple(m) for m in scan_messages(p)]
    assert got == _library(p)
    assert len(got) == 300
    assert fallbacks == ([1] if compression is CompressionType.LZ4 else [])


def _count_fallbacks(monkeypatch) -> list[int]:
    calls: list[int] = []
    library = mcap_scan._library_scan

    def counted(*args):
        calls.append(1)
        return library(*args)

    monkeypatch.setattr(mcap_scan, "_library_scan", counted)
    return calls


def test_left_out_channels_are_not_read_and_the_rest_keeps_its_order(tmp_path: Path, monkeypatch):
    p = tmp_path / "f.mcap"
    times = [("img", k) for k in range(40)] + _in_order(100) + [("img", 10**8 + k) for k in range(40)]
    _write(p, times, CompressionType.ZSTD, 1500)

    def keep(topic: str, schema: str) -> bool:
        return schema != "image"

    read: list[int] = []
    chunk_messages = mcap_scan._chunk_messages
    monkeypatch.setattr(mcap_scan, "_chunk_messages", lambda f, ci, w: read.append(1) or chunk_messages(f, ci, w))
    got = [tuple(m) for m in scan_messages(p, keep)]
    assert got == _library(p, keep)
    with open(p, "rb") as f:
        assert 0 < len(read) < len(make_reader(f).get_summary().chunk_indexes) - 2  # frames-only chunks skipped
    assert {m[0] for m in got} == {"a", "raw"}
    assert {m[1] for m in got} == {"json", ""}


@pytest.mark.parametrize(("shape", "index"), [
    ("chunks overlap in time", IndexType.ALL),
    ("no chunk index", IndexType.NONE),
    ("chunks not indexed by channel", IndexType.CHUNK),
])
def test_other_files_are_read_with_the_same_result(tmp_path: Path, monkeypatch, shape: str, index: IndexType):
    p = tmp_path / "f.mcap"
    times = _in_order(200)
    if shape == "chunks overlap in time":
        times = times[:100] + [(t, s - 40_000) for t, s in times[100:]]  # the second half goes back in time
    elif shape == "no chunk index":
        times = _in_order(200, back=True)
    _write(p, times, CompressionType.ZSTD, 1500, index)
    fallbacks = _count_fallbacks(monkeypatch)
    got = [tuple(m) for m in scan_messages(p)]
    assert fallbacks == ([] if index is IndexType.CHUNK else [1])
    assert got == _library(p)
    assert len(got) > 50
    assert [m[2] for m in got] == sorted(m[2] for m in got)
