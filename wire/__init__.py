"""The wire contract: topics, payload models, the JSON codec and the MQTT transport."""

from wire.codec import WireError, decode, encode, validate_bytes
from wire.topics import TOPICS, Kind, TopicError, TopicInfo, parse_topic, subscription, topic

__all__ = [
    "TOPICS", "Kind", "TopicError", "TopicInfo", "WireError",
    "decode", "encode", "parse_topic", "subscription", "topic", "validate_bytes",
]
