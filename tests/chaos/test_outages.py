"""Stop the broker, restart the database: agents carry on without being restarted.

The servers stopped are the test's own (tests/chaos/faults.py): the shared
PostgreSQL cluster, Redis server and RabbitMQ node are never stopped.
"""

import copy
import time
from urllib.parse import urlparse

import pytest
from django.core.management import call_command
from django.db import connections

from agents.models import Agent
from project import settings_test
from project.dbclock import db_now
from scheduling.models import Attempt, WorkItem
from tests.chaos.faults import ThrowawayPostgres, VhostOutage, throwaway_redis
from tests.chaos.ledger import assert_none_lost_or_twice, finished, patience, record, scale, tally, tolerant
from tests.conftest import IN_CI, wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(patience(300) + scale(0, 120))]


@pytest.fixture
def broker_outage(embedded_broker, broker_url, tmp_path):
    """(something with stop() and start(), extra environment for the platform)."""
    if settings_test.BACKEND == "embedded":
        yield embedded_broker, {}  # already this session's own server
        if embedded_broker.process is None:
            embedded_broker.start()
    elif settings_test.BACKEND == "postgres-redis":
        server, url = throwaway_redis(tmp_path)
        server.start()
        yield server, {"SHEPHERD_TEST_REDIS_URL": url}
        server.stop()
    else:
        outage = VhostOutage(urlparse(broker_url).path.lstrip("/"))
        yield outage, {}
        outage.start()  # connections allowed again, whatever happened


def _run_load(platform, *, size: int, prefix: str):
    """Two agents, the supervisor, `size` one-second items; returns once the first has succeeded
    (early: stopping a RabbitMQ vhost takes rabbitmqctl a few seconds)."""
    workers = [platform.start_worker(f"{prefix}-{n}", queues="default", concurrency=3) for n in range(2)]
    agents = [platform.agent_for(proc) for proc in workers]
    platform.start_supervisor_loop()
    ids = platform.submit("demo.sleep", '{"seconds": 1}', size)
    wait_until(
        lambda: WorkItem.objects.filter(pk__in=ids, status="succeeded").exists(),
        timeout=patience(60),
        what="the load to get going",
        logs=platform,
    )
    return ids, workers, agents


def _assert_same_agents_carried_on(workers, agents, ids, since):
    """No agent was restarted or re-registered, and they ran items after the fault."""
    assert all(proc.alive() for proc in workers)
    assert Agent.objects.count() == len(agents)
    assert {a.status for a in Agent.objects.all()} == {"online"}
    after = Attempt.objects.filter(work_item__in=ids, started_at__gt=since)
    assert set(after.values_list("agent_id", flat=True)) == {a.pk for a in agents}
    first = after.order_by("started_at").values_list("started_at", flat=True).first()
    return (first - since).total_seconds()


def test_broker_stopped_under_load_then_started_again(platform, broker_outage):
    server, env = broker_outage
    platform.env.update(env)
    size, outage_s = scale(60, 200), scale(5, 30)
    ids, workers, agents = _run_load(platform, size=size, prefix="broker")

    server.stop()
    time.sleep(outage_s)  # the fault itself lasts this long
    restored_at = db_now()
    server.start()

    wait_until(lambda: finished(ids), timeout=patience(120) + outage_s, what="every item to finish", logs=platform)
    back_to_work = _assert_same_agents_carried_on(workers, agents, ids, restored_at)
    counts = tally(ids)
    assert_none_lost_or_twice(counts, succeeded=size)
    record(f"broker down {outage_s}s under load", counts, back_to_work, recovery_bound_s=None)


@pytest.fixture
def private_postgres():
    if settings_test.BACKEND == "embedded":
        pytest.skip("restarting PostgreSQL needs a PostgreSQL backend (the embedded backend runs on SQLite)")
    cluster = ThrowawayPostgres()
    if cluster.bin is None:
        if IN_CI:
            pytest.fail("no /usr/lib/postgresql/*/bin/initdb: cannot make a private cluster to restart")
        pytest.skip("no /usr/lib/postgresql/*/bin/initdb: cannot make a private cluster to restart")
    cluster.create()
    yield cluster
    cluster.destroy()


@pytest.fixture
def platform_on_private_postgres(private_postgres, platform):
    """The platform, and this test's own queries, on the private cluster."""
    connection = connections["default"]
    saved = copy.deepcopy(connection.settings_dict)
    connection.close()
    connection.settings_dict.update(HOST="127.0.0.1", PORT=str(private_postgres.port), NAME="postgres")
    try:
        call_command("migrate", verbosity=0, interactive=False)
        platform.env.update(SHEPHERD_TEST_DATABASE_URL=private_postgres.url, SHEPHERD_TEST_DB_NAME="postgres")
        yield platform
        platform.stop_all()  # before the cluster goes, so their logs say nothing odd
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)


def test_postgres_restarted_under_load(platform_on_private_postgres, private_postgres):
    platform = platform_on_private_postgres
    size = scale(60, 200)
    ids, workers, agents = _run_load(platform, size=size, prefix="pg")

    connections["default"].close()
    private_postgres.stop("immediate")  # a crash: every session is cut
    private_postgres.start()
    restored_at = wait_until(tolerant(db_now), timeout=60, what="the database back")

    wait_until(tolerant(lambda: finished(ids)), timeout=patience(120), what="every item to finish", logs=platform)
    back_to_work = _assert_same_agents_carried_on(workers, agents, ids, restored_at)
    counts = tally(ids)
    assert_none_lost_or_twice(counts, succeeded=size)
    record("postgres restart (crash) under load", counts, back_to_work, recovery_bound_s=None)
