"""Stopping a command from a signal handler: the handler must not wait for the lock of the event it sets."""

from __future__ import annotations

import threading

from walkout.signals import set_from_signal


def test_a_stop_set_from_a_signal_handler_does_not_wait_for_the_events_lock():
    """The main thread was inside ``stop.wait()``, re-acquiring the event's lock, when the signal came: a
    handler calling ``stop.set()`` there waits for that lock forever (``walkout fusion`` ignored SIGTERM so).
    ``set_from_signal`` returns at once and the event is set as soon as the lock is free."""
    stop = threading.Event()
    with stop._cond:  # the lock the interrupted main thread holds
        set_from_signal(stop)  # stop.set() here would block for good
        assert not stop.is_set()
    assert stop.wait(5.0)


def test_a_blocked_set_is_what_it_avoids():
    """The hazard itself: ``Event.set`` needs the event's lock (a thread stands in for the handler, so the test
    cannot hang)."""
    stop = threading.Event()
    with stop._cond:
        t = threading.Thread(target=stop.set, daemon=True)
        t.start()
        t.join(0.3)
        assert t.is_alive() and not stop.is_set()
    t.join(5.0)
    assert stop.is_set()
