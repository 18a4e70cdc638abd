"""A workaround for kombu 5.7.0's Redis transport, applied when the Celery app loads.

When a worker loses its Redis connection while it holds unacknowledged messages,
Celery releases the connection (consumer.on_connection_error_after_connected).
Closing the channel then tries to put those messages back (QoS.restore_unacked),
and the tasks still running ack theirs on that channel when they end (QoS.ack).
By then the channel's transport, or the transport's client, is gone, so building a
Redis client raises AttributeError ("'NoneType' object has no attribute
'hostname'" or "... 'client'", the error of celery/kombu#582 on another path)
instead of a connection error. Celery only tolerates connection errors there, so
the worker exited with "Unrecoverable error" instead of reconnecting (seen in the
broker-outage chaos test, about one run in three on Redis).

Nothing can be restored or acked on a closed channel anyway. The messages stay in
Redis's unacked set until its visibility timeout, and the database decides: a
finished item's redelivery loses its fenced claim, and an item whose message is
lost stays queued until the dispatch monitor publishes it again."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("shepherd.agent")


def _channel_closed(qos: Any) -> bool:
    transport = qos.channel.connection
    return transport is None or transport.client is None


def _skip_when_channel_closed(method: Callable[..., Any], what: str) -> Callable[..., Any]:
    @functools.wraps(method)
    def guarded(self, *args: Any, **kwargs: Any) -> Any:
        if _channel_closed(self):
            logger.warning("broker connection already closed: %s skipped; the database decides", what)
            return None
        return method(self, *args, **kwargs)

    guarded.shepherd_guarded = True  # type: ignore[attr-defined]
    return guarded


def redis_qos_tolerate_closed_channel() -> None:
    from kombu.transport import redis

    for name, what in (("restore_unacked", "restoring unacked messages"), ("ack", "ack"), ("reject", "reject")):
        method = getattr(redis.QoS, name)
        if not getattr(method, "shepherd_guarded", False):
            setattr(redis.QoS, name, _skip_when_channel_closed(method, what))
