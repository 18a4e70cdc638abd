"""The Redis QoS guard: acks and restores on a channel whose connection is gone are
skipped instead of raising AttributeError out of the worker's event loop."""

from types import SimpleNamespace

from project.kombu_fixes import _skip_when_channel_closed


def _qos(transport):
    return SimpleNamespace(channel=SimpleNamespace(connection=transport))


def test_a_closed_channel_skips_the_call_and_a_live_one_makes_it():
    calls = []
    guarded = _skip_when_channel_closed(lambda self, tag: calls.append(tag) or "done", "ack")

    assert guarded(_qos(None), 1) is None  # the transport is gone
    assert guarded(_qos(SimpleNamespace(client=None)), 2) is None  # the transport lost its client
    assert guarded(_qos(SimpleNamespace(client=object())), 3) == "done"
    assert calls == [3]


def test_the_app_guards_the_redis_qos_once():
    from kombu.transport import redis

    import project.celery  # noqa: F401  (applies the guard)
    from project.kombu_fixes import redis_qos_tolerate_closed_channel

    ack = redis.QoS.ack
    redis_qos_tolerate_closed_channel()
    assert redis.QoS.ack is ack and ack.shepherd_guarded
    assert redis.QoS.restore_unacked.shepherd_guarded and redis.QoS.reject.shepherd_guarded
