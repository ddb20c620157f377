"""Recorded sessions: one MCAP file (``session.mcap``) with the gate scans, the load-cell sample blocks and the
camera frames, the store description, camera and marker files and the scenario as attachments; the ground
truth beside it (``truth.json``, ``truth/``) and also attached as ``truth.json``.

Channels (JSON encoding, jsonschema schemas; readable with the ``mcap`` package and in Foxglove):

* ``walkout/v1/{store}/gate/{gate}/entry`` — :class:`wire.messages.GateEntryMsg`, via :func:`wire.codec.encode`;
* ``walkout/v1/{store}/shelf/{shelf}/loadcells`` — :class:`wire.messages.LoadCellMsg` blocks;
* ``walkout/v1/{store}/camera/{camera}/image`` — ``foxglove.CompressedImage`` (JPEG, base64 ``data``).

A message's log time is when it would have been published: the capture time for scans and frames, the end
of the block (last sample + one period) for load-cell blocks.  :class:`SessionWriter` writes in log-time
order; :class:`Session` reads it back.  See ``sim/README.md``.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from mcap.reader import make_reader
from mcap.writer import CompressionType, Writer

from calibration.camera import Camera, CameraFile
from calibration.config import load_yaml_fast, validate
from calibration.markers import MarkerLayout
from calibration.store import Store, store_from_dict
from wire.codec import WireError, decode, encode
from wire.messages import GateEntryMsg, LoadCellMsg
from wire.topics import PREFIX, Kind, TopicError, parse_topic, topic

log = logging.getLogger(__name__)

FORMAT = "walkout-sim-session/1"
IMAGE_SCHEMA = "foxglove.CompressedImage"
IMAGE_TOPIC = PREFIX + "/{store}/camera/{camera}/image"
_IMAGE_JSONSCHEMA = {
    "title": "foxglove.CompressedImage",
    "description": "A compressed image",
    "type": "object",
    "properties": {
        "timestamp": {"type": "object", "title": "time", "description": "Timestamp of image",
                      "properties": {"sec": {"type": "integer", "minimum": 0},
                                     "nsec": {"type": "integer", "minimum": 0, "maximum": 999999999}}},
        "frame_id": {"type": "string", "description": "Frame of reference for the image"},
        "data": {"type": "string", "contentEncoding": "base64", "description": "Compressed image data"},
        "format": {"type": "string", "description": "Image format: jpeg"},
    },
}


def ns(t: float) -> int:
    """Seconds since the epoch -> integer nanoseconds (rounded to the microsecond, so float noise never
    changes a byte)."""
    return round(t * 1e6) * 1000


def image_topic(store: str, camera: str) -> str:
    topic(Kind.TRACKS, store, camera)  # validates both ids the way the wire does
    return IMAGE_TOPIC.format(store=store, camera=camera)


class SessionWriter:
    """Writes one session MCAP.  Call :meth:`attach` for the files, then the message methods in log-time
    order, then :meth:`close`."""

    def __init__(self, out: str | Path | IO[bytes], store_id: str, start_epoch: float,
                 metadata: dict[str, str] | None = None):
        self._file = open(out, "wb") if isinstance(out, (str, Path)) else None  # noqa: SIM115
        self._w = Writer(self._file or out, compression=CompressionType.ZSTD, chunk_size=4 * 1024 * 1024)
        self._w.start(profile="", library="walkout-sim")
        self.store_id = store_id
        self.start_ns = ns(start_epoch)
        self._schemas: dict[str, int] = {}
        self._channels: dict[str, int] = {}
        self._seq: dict[str, int] = {}
        self.counts: dict[str, int] = {"gate": 0, "loadcells": 0, "image": 0}
        self._w.add_metadata("walkout.session", {"format": FORMAT, **(metadata or {})})

    def attach(self, name: str, data: bytes, media_type: str = "application/yaml") -> None:
        self._w.add_attachment(create_time=self.start_ns, log_time=self.start_ns, name=name,
                               media_type=media_type, data=data)

    def _channel(self, topic_name: str, schema_name: str, schema: dict) -> int:
        if topic_name not in self._channels:
            if schema_name not in self._schemas:
                self._schemas[schema_name] = self._w.register_schema(
                    name=schema_name, encoding="jsonschema",
                    data=json.dumps(schema, sort_keys=True).encode())
            self._channels[topic_name] = self._w.register_channel(
                topic=topic_name, message_encoding="json", schema_id=self._schemas[schema_name])
        return self._channels[topic_name]

    def _next_seq(self, source: str) -> int:
        n = self._seq.get(source, 0)
        self._seq[source] = n + 1
        return n

    def _write(self, channel: int, log_time_s: float, data: bytes, seq: int) -> None:
        t = ns(log_time_s)
        self._w.add_message(channel_id=channel, log_time=t, publish_time=t, data=data, sequence=seq)

    def gate_entry(self, t: float, gate: str, account: str, party_size: int) -> GateEntryMsg:
        source = f"sim-gate-{gate}"
        msg = GateEntryMsg(source=source, seq=self._next_seq(source), ts=round(t, 6), gate=gate,
                           account=account, party_size=party_size)
        ch = self._channel(topic(Kind.GATE_ENTRY, self.store_id, gate), "walkout.GateEntryMsg",
                           GateEntryMsg.model_json_schema())
        self._write(ch, t, encode(msg), msg.seq)
        self.counts["gate"] += 1
        return msg

    def loadcells(self, t0: float, shelf: str, rate_hz: float, lanes: list[str], samples: np.ndarray) -> None:
        """A block of samples ``(n, lanes)`` starting at ``t0``, logged when it is complete."""
        source = f"sim-loadcells-{shelf}"
        rows = np.round(samples, 1).tolist()  # 0.1 g: below the ADC step (0.24 g) and the noise
        msg = LoadCellMsg(source=source, seq=self._next_seq(source), ts=round(t0, 6), shelf=shelf,
                          rate_hz=rate_hz, lanes=lanes, samples=rows)
        ch = self._channel(topic(Kind.LOADCELLS, self.store_id, shelf), "walkout.LoadCellMsg",
                           LoadCellMsg.model_json_schema())
        self._write(ch, t0 + len(rows) / rate_hz, encode(msg), msg.seq)
        self.counts["loadcells"] += 1

    def image(self, t: float, camera: str, jpeg: bytes, frame_no: int) -> None:
        t_ns = ns(t)
        payload = {"timestamp": {"sec": t_ns // 1_000_000_000, "nsec": t_ns % 1_000_000_000},
                   "frame_id": camera, "data": base64.b64encode(jpeg).decode(), "format": "jpeg"}
        ch = self._channel(image_topic(self.store_id, camera), IMAGE_SCHEMA, _IMAGE_JSONSCHEMA)
        self._write(ch, t, json.dumps(payload, separators=(",", ":")).encode(), frame_no)
        self.counts["image"] += 1

    def close(self) -> None:
        self._w.finish()
        if self._file is not None:
            self._file.close()


# ------------------------------------------------------------------------------------------------ reading
@dataclass
class Image:
    camera: str
    t: float  # capture time, seconds since the epoch
    frame: int  # 1-based frame number (the MCAP message's sequence)
    jpeg: bytes

    def decode(self) -> np.ndarray:
        import cv2

        img = cv2.imdecode(np.frombuffer(self.jpeg, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"camera {self.camera} frame {self.frame}: not a decodable JPEG")
        return img


@dataclass
class Message:
    kind: str  # "gate" | "loadcells" | "image"
    topic: str
    log_time: float  # seconds since the epoch
    msg: object  # GateEntryMsg | LoadCellMsg | Image


class Session:
    """A recorded session: ``store``, ``cameras``, ``markers``, ``scenario``, ``truth`` and the messages."""

    def __init__(self, path: Path, attachments: dict[str, bytes], metadata: dict[str, str]):
        self.path = path
        self.attachments = attachments
        self.metadata = metadata
        store_data = load_yaml_fast(attachments["store.yaml"])
        self.store: Store = store_from_dict(store_data, f"{path}!store.yaml")
        self.cameras: dict[str, Camera] = {}
        for ref in self.store.cameras:
            name = ref.file
            if name not in attachments:
                raise ValueError(f"{path}: camera file {name!r} is not attached")
            f = validate(CameraFile, load_yaml_fast(attachments[name]), f"{path}!{name}")
            cam = Camera.from_pose(f.id, f.model, f.image_size, f.K, f.dist, f.pose.rvec, f.pose.tvec, fps=f.fps)
            self.cameras[ref.id] = cam
        self.markers: MarkerLayout | None = None
        if "markers.yaml" in attachments:
            self.markers = validate(MarkerLayout, load_yaml_fast(attachments["markers.yaml"]),
                                    f"{path}!markers.yaml")
        self.scenario: dict = load_yaml_fast(attachments.get("scenario.yaml", b"{}")) or {}
        beside = path.parent / "truth.json"
        if beside.is_file():
            self.truth: dict = json.loads(beside.read_text())
        elif "truth.json" in attachments:
            self.truth = json.loads(attachments["truth.json"])
        else:
            self.truth = {}

    @classmethod
    def open(cls, path: str | Path) -> Session:
        path = Path(path)
        if path.is_dir():
            path = path / "session.mcap"
        with open(path, "rb") as f:
            reader = make_reader(f)
            attachments = {a.name: bytes(a.data) for a in reader.iter_attachments()}
            metadata: dict[str, str] = {}
            for m in reader.iter_metadata():
                if m.name == "walkout.session":
                    metadata = dict(m.metadata)
        if metadata.get("format") != FORMAT:
            raise ValueError(f"{path}: not a walkout simulator session (format {metadata.get('format')!r})")
        return cls(path, attachments, metadata)

    @property
    def start_epoch(self) -> float:
        return float(self.metadata.get("start_epoch", "0"))

    def messages(self, kinds: tuple[str, ...] = ("gate", "loadcells", "image")) -> Iterator[Message]:
        """Messages of the given kinds in log-time order (ties in the order written)."""
        wanted = set(kinds)
        with open(self.path, "rb") as f:
            reader = make_reader(f)
            for schema, channel, m in reader.iter_messages(log_time_order=True):
                kind = _kind_of(channel.topic)
                if kind not in wanted:
                    continue
                t = m.log_time / 1e9
                if kind == "image":
                    payload = json.loads(m.data)
                    ts = payload["timestamp"]
                    yield Message(kind, channel.topic, t, Image(payload["frame_id"], ts["sec"] + ts["nsec"] / 1e9,
                                                                m.sequence, base64.b64decode(payload["data"])))
                else:
                    try:
                        _, msg = decode(channel.topic, m.data)
                    except WireError as exc:
                        log.warning("session %s: bad message on %s: %s", self.path, channel.topic, exc)
                        continue
                    yield Message(kind, channel.topic, t, msg)

    def gate_entries(self) -> list[GateEntryMsg]:
        return [m.msg for m in self.messages(("gate",))]

    def loadcell_blocks(self) -> Iterator[LoadCellMsg]:
        for m in self.messages(("loadcells",)):
            yield m.msg

    def images(self, camera: str | None = None) -> Iterator[Image]:
        for m in self.messages(("image",)):
            if camera is None or m.msg.camera == camera:
                yield m.msg

    def loadcell_arrays(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Every lane's stream as ``(t, grams)`` arrays (t in seconds since the epoch)."""
        parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        for blk in self.loadcell_blocks():
            s = np.asarray(blk.samples, float)
            t = blk.ts + np.arange(len(s)) / blk.rate_hz
            for j, lane in enumerate(blk.lanes):
                parts.setdefault(lane, []).append((t, s[:, j]))
        return {lane: (np.concatenate([p[0] for p in v]), np.concatenate([p[1] for p in v]))
                for lane, v in parts.items()}


_IMAGE_RE = re.compile("^" + re.escape(IMAGE_TOPIC).replace(r"\{store\}", "[^/]+").replace(r"\{camera\}", "[^/]+") + "$")
_KINDS = {Kind.GATE_ENTRY: "gate", Kind.LOADCELLS: "loadcells"}


def _kind_of(topic_name: str) -> str:
    try:
        return _KINDS.get(parse_topic(topic_name).kind, "other")
    except TopicError:
        return "image" if _IMAGE_RE.match(topic_name) else "other"
