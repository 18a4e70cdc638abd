"""The agent's publisher thread: refill messages go out after the task, in order, and
a pool process about to exit waits until they have."""

import threading
import time

from scheduling.services import release
from scheduling.services.release import Dispatch


def test_publisher_sends_every_message_per_queue_in_order_and_flush_waits(monkeypatch):
    sent: list[tuple[str, list[int]]] = []
    slow = threading.Event()

    def publish(*, queue, messages):
        slow.wait(0.2)  # a slow broker: flush must still wait for it
        sent.append((queue, [m.work_item_id for m in messages]))

    monkeypatch.setattr(release, "publish", publish)
    monkeypatch.setattr(release._Publisher, "_instance", None)
    for pk in range(1, 6):
        release.publish_soon(queue="default" if pk % 2 else "cpu", message=Dispatch(pk, 1))
    started = time.monotonic()
    release.publisher_flush(timeout=5)
    assert time.monotonic() - started < 5
    by_queue: dict[str, list[int]] = {}
    for queue, ids in sent:
        by_queue.setdefault(queue, []).extend(ids)
    assert by_queue == {"default": [1, 3, 5], "cpu": [2, 4]}


def test_flush_without_a_publisher_returns_at_once(monkeypatch):
    monkeypatch.setattr(release._Publisher, "_instance", None)
    started = time.monotonic()
    release.publisher_flush(timeout=5)
    assert time.monotonic() - started < 1
