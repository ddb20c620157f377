"""Stopping a long-running command on SIGINT or SIGTERM without a deadlock.

A Python signal handler runs on the main thread between two bytecodes -- possibly while that thread holds the
lock of the very ``threading.Event`` the handler means to set: ``Event.wait(timeout)`` re-acquires its
condition's lock as it times out, and a handler that calls ``event.set()`` right then waits for that lock
forever (seen: ``walkout fusion`` ignoring SIGTERM now and then, its main loop stuck in ``stop.wait()``).  The
handler hands the ``set()`` to a short-lived thread instead and returns at once.
"""

from __future__ import annotations

import threading


def set_from_signal(event: threading.Event) -> None:
    """Set ``event`` from a signal handler: on another thread, so the handler never waits for the event's lock
    (which the interrupted main thread may hold)."""
    threading.Thread(target=event.set, name="signal-stop", daemon=True).start()
