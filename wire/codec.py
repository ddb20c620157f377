"""The one JSON codec of the wire.

``encode`` turns a message model into compact UTF-8 JSON; ``decode`` turns a topic and payload bytes back
into the typed model, or raises :class:`WireError` naming the field and the reason.  ``decode`` never raises
anything else, whatever the bytes (a property the fuzz tests hold it to).
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from wire.topics import Kind, TopicError, TopicInfo, parse_topic

MAX_PAYLOAD = 1 << 20  # 1 MiB; the broker is configured with the same limit

M = TypeVar("M", bound=BaseModel)


class WireError(ValueError):
    """A payload or topic that does not fit the wire contract."""

    def __init__(self, topic: str, field: str, reason: str):
        self.topic = topic
        self.field = field
        self.reason = reason
        super().__init__(f"{topic}: {field}: {reason}")


def encode(msg: BaseModel) -> bytes:
    """Compact JSON of a message (fields in declaration order, no NaN)."""
    return msg.model_dump_json(exclude_none=True).encode()


def _field_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<payload>"


def validate_bytes(model: type[M], payload: bytes | bytearray | memoryview | str, where: str = "") -> M:
    """Parse ``payload`` as ``model``; raise :class:`WireError` on anything wrong with it."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8", "surrogatepass")
    if len(payload) > MAX_PAYLOAD:
        raise WireError(where, "<payload>", f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    try:
        return model.model_validate_json(bytes(payload), strict=True)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        raise WireError(where, _field_path(tuple(err.get("loc", ()))), err.get("msg", "invalid")) from None
    except (ValueError, RecursionError) as exc:  # pragma: no cover - pydantic wraps nearly everything
        raise WireError(where, "<payload>", f"not valid JSON: {exc}") from None


_KEY_FIELD = {
    Kind.TRACKS: "camera",
    Kind.SHELF_EVENTS: "shelf",
    Kind.LOADCELLS: "shelf",
    Kind.GATE_ENTRY: "gate",
    Kind.STATUS: "device",
    Kind.CART: "visit",
    Kind.RECEIPT: "visit",
    Kind.ACCOUNT: "account",
    Kind.CLOCK: "source",
}


def decode(topic: str, payload: bytes | bytearray | memoryview | str) -> tuple[TopicInfo, BaseModel]:
    """Parse a topic and its payload into ``(TopicInfo, message)``.

    The id in the topic must match the id in the payload (a camera cannot publish as another).
    """
    try:
        info = parse_topic(topic)
    except TopicError as exc:
        raise WireError(str(topic)[:200], "<topic>", str(exc)) from None
    msg = validate_bytes(info.spec.model, payload, topic)
    field = _KEY_FIELD[info.kind]
    if getattr(msg, field) != info.key:
        raise WireError(topic, field, f"{getattr(msg, field)!r} does not match the topic's {info.key!r}")
    return info, msg
