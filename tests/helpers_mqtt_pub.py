"""A device process for the last-will test (run as ``python -m tests.helpers_mqtt_pub``): connects, prints
``connected`` once its ``online`` status is acknowledged, and publishes shelf events until it is killed."""

from __future__ import annotations

import argparse
import sys
import time

from tests.fixtures_mqtt import shelf_event
from wire.mqtt import MqttTransport
from wire.topics import Kind


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--store", required=True)
    ap.add_argument("--device", required=True)
    args = ap.parse_args(argv)
    t = MqttTransport(
        args.store, args.device, "shelf", args.host, args.port, version="test-1", config_hash="abc123"
    )
    t.start()
    while not (t.wait_ready(1.0) and t.flush(1.0)):  # connected and the "online" status acknowledged
        pass
    print("connected", flush=True)
    i = 0
    while True:
        t.publish(Kind.SHELF_EVENTS, args.device, shelf_event(t, i))
        i += 1
        time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main())
