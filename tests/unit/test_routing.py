import pytest

from scheduling import registry, routing


def test_every_demo_work_type_routes_to_a_declared_queue():
    table = routing.routing_table()
    assert {"demo.noop", "demo.sleep", "demo.progress", "demo.fail", "demo.crash", "demo.cpu"} <= set(table)
    assert table["demo.cpu"] == "cpu"
    assert table["demo.sleep"] == "default"
    assert set(table.values()) <= set(routing.WORK_QUEUES)


def test_celery_queues_are_built_from_the_table():
    names = [queue.name for queue in routing.celery_task_queues()]
    assert names == [*routing.WORK_QUEUES, routing.SUPERVISOR_QUEUE]
    assert all(queue.routing_key == queue.name for queue in routing.celery_task_queues())
    assert routing.celery_task_routes() == {routing.TICK_TASK: {"queue": "supervisor", "routing_key": "supervisor"}}


def test_celery_app_uses_the_routing_table():
    from project.celery import app

    assert [q.name for q in app.conf.task_queues] == [q.name for q in routing.celery_task_queues()]
    assert app.conf.task_acks_late is True
    assert app.conf.task_reject_on_worker_lost is True
    assert app.conf.accept_content == ["json"]


def test_undeclared_queue_is_refused(monkeypatch):
    monkeypatch.setitem(
        registry._REGISTRY, "bad.type", registry.WorkTypeSpec(name="bad.type", handler=print, queue="nowhere")
    )
    with pytest.raises(LookupError, match="nowhere"):
        routing.routing_table()
