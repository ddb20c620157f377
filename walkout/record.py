"""Recording a store's topics to MCAP (``walkout record``), readable by ``walkout replay`` and Foxglove.

File layout (``walkout-recording/1``):

* one channel per MQTT topic, ``json`` message encoding, its schema the topic's pydantic model as
  ``jsonschema`` named ``walkout.{Model}`` (``walkout.TracksMsg`` ...), payloads as on the wire
  (:func:`wire.codec.encode`);
* ``log_time``: when the recorder received the message; ``publish_time``: its capture time (``ts``);
  ``sequence``: its ``seq`` (modulo 2^32);
* optional camera frames on ``walkout/v1/{store}/camera/{camera}/image`` as ``foxglove.CompressedImage``
  (JSON, base64 JPEG), like the simulator's sessions;
* attachments ``store.yaml`` and the camera files it references (same names), so the file is
  self-contained;
* metadata ``walkout.recording``: ``format``, ``store``, ``start``, ``end`` (seconds since the epoch, receive
  time), ``messages``.

:class:`RecordingWriter` writes such a file from any thread; :class:`Recorder` subscribes a transport to
every kind of topic of a store and writes what arrives; :class:`FrameTap` keeps every Nth frame of camera
sources.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from mcap.writer import CompressionType, Writer
from pydantic import BaseModel

from calibration.store import Store, base_dir_of
from wire.codec import encode
from wire.topics import TOPICS, Kind, TopicInfo, topic
from wire.transport import Transport

log = logging.getLogger(__name__)

FORMAT = "walkout-recording/1"


def ns(t: float) -> int:
    return max(0, round(t * 1e6) * 1000)


def store_attachments(store: Store, store_path: Path | None) -> dict[str, bytes]:
    """``store.yaml`` and its camera files (names as the store references them) for a recording."""
    out: dict[str, bytes] = {}
    base = base_dir_of(store) or (store_path.parent if store_path else None)
    if store_path is not None and store_path.is_file():
        out["store.yaml"] = store_path.read_bytes()
    else:
        import yaml

        out["store.yaml"] = yaml.safe_dump(store.model_dump(mode="json"), sort_keys=False).encode()
    if base is not None:
        for ref in store.cameras:
            p = base / ref.file
            if p.is_file():
                out[ref.file] = p.read_bytes()
            else:
                log.warning("camera file %s not found; not attached", p)
    return out


class RecordingWriter:
    """A recording MCAP being written (thread-safe).  Close it to write the index and the metadata."""

    def __init__(self, path: str | Path, store_id: str, attachments: dict[str, bytes] | None = None):
        self.path = Path(path)
        self.store_id = store_id
        self._file = self.path.open("wb")
        self._w = Writer(self._file, compression=CompressionType.ZSTD, chunk_size=2 * 1024 * 1024)
        self._w.start(profile="", library="walkout-record")
        self._lock = threading.Lock()
        self._schemas: dict[str, int] = {}
        self._channels: dict[str, int] = {}
        self.counts: dict[str, int] = {}
        self.start: float | None = None
        self.end: float | None = None
        now = ns(time.time())
        for name, data in (attachments or {}).items():
            media = "application/yaml" if name.endswith((".yaml", ".yml")) else "application/octet-stream"
            self._w.add_attachment(create_time=now, log_time=now, name=name, media_type=media, data=data)
        self.closed = False

    def _channel(self, topic_name: str, schema_name: str, schema: dict) -> int:
        ch = self._channels.get(topic_name)
        if ch is None:
            sid = self._schemas.get(schema_name)
            if sid is None:
                sid = self._schemas[schema_name] = self._w.register_schema(
                    name=schema_name, encoding="jsonschema", data=json.dumps(schema, sort_keys=True).encode())
            ch = self._channels[topic_name] = self._w.register_channel(
                topic=topic_name, message_encoding="json", schema_id=sid)
        return ch

    def _add(self, channel: int, kind: str, log_time: float, publish_time: float, data: bytes, seq: int) -> None:
        if self.closed:
            return
        self._w.add_message(channel_id=channel, log_time=ns(log_time), publish_time=ns(publish_time), data=data,
                            sequence=int(seq) % (1 << 32))
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.start = log_time if self.start is None else min(self.start, log_time)
        self.end = log_time if self.end is None else max(self.end, log_time)

    def message(self, kind: Kind, key: str, msg: BaseModel, log_time: float) -> None:
        """A wire message of ``kind`` for the topic's id ``key``; publish time is its ``ts``."""
        spec = TOPICS[kind]
        name = topic(kind, self.store_id, key)
        with self._lock:
            ch = self._channel(name, f"walkout.{spec.model.__name__}", spec.model.model_json_schema())
            self._add(ch, kind.value, log_time, float(msg.ts), encode(msg), msg.seq)  # type: ignore[attr-defined]

    def image(self, camera: str, ts: float, jpeg: bytes, frame_no: int, log_time: float | None = None) -> None:
        from sim.session import _IMAGE_JSONSCHEMA, IMAGE_SCHEMA, image_topic

        t = ns(ts)
        payload = {"timestamp": {"sec": t // 1_000_000_000, "nsec": t % 1_000_000_000}, "frame_id": camera,
                   "data": base64.b64encode(jpeg).decode(), "format": "jpeg"}
        with self._lock:
            ch = self._channel(image_topic(self.store_id, camera), IMAGE_SCHEMA, _IMAGE_JSONSCHEMA)
            self._add(ch, "image", log_time if log_time is not None else ts, ts,
                      json.dumps(payload, separators=(",", ":")).encode(), frame_no)

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            meta = {"format": FORMAT, "store": self.store_id, "messages": str(sum(self.counts.values()))}
            if self.start is not None:
                meta.update(start=repr(self.start), end=repr(self.end))
            meta.update({f"count.{k}": str(v) for k, v in sorted(self.counts.items())})
            self._w.add_metadata("walkout.recording", meta)
            self._w.finish()
            self._file.close()
            self.closed = True


class Recorder:
    """Writes every message of every topic kind of the transport's store as it arrives.  Subscribe before
    the transport starts (a persistent session delivers what it queued at once)."""

    def __init__(self, transport: Transport, writer: RecordingWriter, kinds: Sequence[Kind] = tuple(Kind)):
        self.transport = transport
        self.writer = writer
        self.received = 0
        for kind in kinds:
            transport.subscribe(kind, self._on_message)

    def _on_message(self, info: TopicInfo, msg: BaseModel) -> None:
        self.writer.message(info.kind, info.key, msg, time.time())
        self.received += 1


class FrameTap:
    """Keeps every ``every``-th frame of each camera source in the recording (a thread)."""

    def __init__(self, sources: list, writer: RecordingWriter, every: int, quality: int = 70):
        self.sources = sources
        self.writer = writer
        self.every = max(1, int(every))
        self.quality = quality
        self.kept = 0
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="frame-tap", daemon=True)

    def start(self) -> FrameTap:
        self._thread.start()
        return self

    def _run(self) -> None:
        from edge.sources import frame_batches

        seen: dict[str, int] = {}
        try:
            for batch in frame_batches(self.sources, self.stop, speed=1.0):
                for f in batch:
                    n = seen.get(f.camera, 0)
                    seen[f.camera] = n + 1
                    if n % self.every or f.image is None:
                        continue
                    ok, buf = cv2.imencode(".jpg", f.image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
                    if ok:
                        self.writer.image(f.camera, f.ts, np.asarray(buf).tobytes(), int(f.index), time.time())
                        self.kept += 1
        except Exception:
            log.exception("frame tap stopped")

    def close(self, timeout: float = 5.0) -> None:
        self.stop.set()
        for s in self.sources:
            s.close()
        self._thread.join(timeout)
