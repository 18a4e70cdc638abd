"""The agent's publisher thread: refill messages go out after the task, in order, and
a pool process about to exit waits until they have."""

import threading

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
    release.publisher_flush(timeout=5)
    # Each publish takes 0.2 s, so all five are in only if flush waited for them.
    by_queue: dict[str, list[int]] = {}
    for queue, ids in sent:
        by_queue.setdefault(queue, []).extend(ids)
    assert by_queue == {"default": [1, 3, 5], "cpu": [2, 4]}


def test_flush_without_a_publisher_starts_none(monkeypatch):
    monkeypatch.setattr(release._Publisher, "_instance", None)
    release.publisher_flush(timeout=5)
    assert release._Publisher.running_here() is None
