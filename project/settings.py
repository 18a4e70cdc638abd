"""Shepherd settings, driven by the environment (see `.env.example`).

Defaults give a platform that runs with no servers installed: SQLite under `var/`
and an embedded Valkey broker on a unix socket under `var/`. Production sets
`DATABASE_URL` (PostgreSQL) and `CELERY_BROKER_URL` (Redis/Valkey or RabbitMQ)
and loads `project.settings_production` on top.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import dj_database_url

from project.sqlite_fork import sqlite_memory_statistics_off

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("SHEPHERD_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return default if value in (None, "") else float(value)


def env_list(name: str, default: str) -> list[str]:
    return [part.strip() for part in env_str(name, default).split(",") if part.strip()]


def _local_secret_key() -> str:
    # A per-checkout key kept under var/, so sessions survive restarts without a
    # key ever being committed. Production must set DJANGO_SECRET_KEY.
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or _local_secret_key()
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "ninja",  # serves its Swagger UI from static files, not a CDN
    "django_htmx",
    "scheduling",
    "agents",
    "supervision",
    "api",
    "dashboard",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "dashboard.context_processors.links",
            ],
        },
    },
]


def database_from_url(url: str) -> dict:
    config = dj_database_url.parse(url)
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # Before any connection opens: see project/sqlite_fork.py (forked pool children hung).
        sqlite_memory_statistics_off()
        # Measured with a web view and a Celery task writing at once: default
        # SQLite failed 294 of 400 requests with "database is locked", WAL alone
        # 262, WAL + IMMEDIATE 0. IMMEDIATE takes the write lock at BEGIN, so a
        # writer waits (up to `timeout`) instead of failing on lock upgrade.
        config["OPTIONS"] = {
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
        # A file, not :memory:, so worker subprocesses in tests see the test database.
        name = Path(config["NAME"])
        config["TEST"] = {"NAME": str(name.with_name(f"test_{name.name}"))}
    else:
        config["CONN_MAX_AGE"] = env_int("DATABASE_CONN_MAX_AGE", 600)
        config["CONN_HEALTH_CHECKS"] = True
        # Django turns psycopg's prepared statements off (prepare_threshold None), and
        # then psycopg ignores even an explicit prepare=True, so the transitions'
        # statements (statements._pg_prepared_fetchall) were parsed and planned on
        # every execution (measured: 2,004 parses for 1,000 items). A threshold no
        # query reaches keeps the ORM's statements unprepared, as Django intends, and
        # lets the ones that ask be prepared once per connection.
        config["OPTIONS"] = {**config.get("OPTIONS", {}), "prepare_threshold": 2**31 - 1}
    return config


DATABASES = {
    "default": database_from_url(env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'shepherd.sqlite3'}")),
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
FORMAT_MODULE_PATH = ["project.formats"]

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:overview"
LOGOUT_REDIRECT_URL = "login"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("SHEPHERD_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# ---------------------------------------------------------------------------
# Celery. Each setting says why it is here.
# ---------------------------------------------------------------------------
EMBEDDED_BROKER_SOCKET = VAR_DIR / "valkey.sock"
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", f"redis+socket://{EMBEDDED_BROKER_SOCKET}")
# The database is the result store; Celery results would be a second truth.
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
# JSON only: no pickle from the broker, and messages carry ids, never objects.
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_EVENT_SERIALIZER = "json"
# Ack after the handler ran, and give the message back if the pool child dies,
# so a crash never loses a message; the fenced claim makes redelivery harmless.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# One reserved message per process: the DB holds the backlog, so prefetching
# more only strands messages in a dying worker.
CELERY_WORKER_PREFETCH_MULTIPLIER = env_int("CELERY_WORKER_PREFETCH_MULTIPLIER", 1)
# Task events feed Flower, and Flower turns them on in every worker while it runs
# (its enable_events, every few seconds), so workers need not send them unasked:
# measured, they cost an agent's main process ~1.5 ms CPU per task and sent events
# double each publish. The database, not events, is the record of every transition.
CELERY_WORKER_SEND_TASK_EVENTS = env_bool("CELERY_WORKER_SEND_TASK_EVENTS", False)
CELERY_TASK_SEND_SENT_EVENT = env_bool("CELERY_TASK_SEND_SENT_EVENT", False)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Redis redelivers an unacked message after visibility_timeout; it must exceed
# the largest budget or a long item would be delivered twice while it runs.
SHEPHERD_MAX_BUDGET_SECONDS = env_int("SHEPHERD_MAX_BUDGET_SECONDS", 6 * 3600)
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": SHEPHERD_MAX_BUDGET_SECONDS + 3600}
# Celery's Django fixup closes the DB connection after every task unless this is
# set (celery PR #9824 reverted reuse); measured ~4x throughput with reuse.
CELERY_DB_REUSE_MAX = env_int("CELERY_DB_REUSE_MAX", 1000)
# Every worker also consumes its own queue (<node name>.dq2): items that need
# capabilities are published straight to a live agent that has them.
CELERY_WORKER_DIRECT = True

# ---------------------------------------------------------------------------
# Shepherd clocks (DESIGN.md §6). Tests shrink them through the environment.
# ---------------------------------------------------------------------------
AGENT_HEARTBEAT_SECONDS = env_float("AGENT_HEARTBEAT_SECONDS", 5)
AGENT_DEAD_AFTER = env_float("AGENT_DEAD_AFTER", 15)
WORK_ITEM_LEASE_SECONDS = env_float("WORK_ITEM_LEASE_SECONDS", 30)
WORK_ITEM_LEASE_RENEW_SECONDS = env_float("WORK_ITEM_LEASE_RENEW_SECONDS", 5)
SUPERVISOR_INTERVAL_SECONDS = env_float("SUPERVISOR_INTERVAL_SECONDS", 5)
REDISPATCH_AFTER = env_float("REDISPATCH_AFTER", 60)
# Items in the broker per queue (queued + running): this many per live pool
# process serving the queue, capped at SHEPHERD_QUEUE_WINDOW. The DB holds the rest.
SHEPHERD_QUEUE_WINDOW_PER_PROCESS = env_int("SHEPHERD_QUEUE_WINDOW_PER_PROCESS", 2)
SHEPHERD_QUEUE_WINDOW = env_int("SHEPHERD_QUEUE_WINDOW", 500)
# Live capacity per queue is re-read at most this often per process.
SHEPHERD_CAPACITY_CACHE_SECONDS = env_float("SHEPHERD_CAPACITY_CACHE_SECONDS", 2)
# Aging: a pending item's effective priority rises one level per this many seconds
# waited (up to 9), so low priority work is never starved. 0 turns aging off.
SHEPHERD_PRIORITY_AGING_SECONDS = env_float("SHEPHERD_PRIORITY_AGING_SECONDS", 300)
RETRY_BACKOFF_BASE_SECONDS = env_float("RETRY_BACKOFF_BASE_SECONDS", 2)
RETRY_BACKOFF_MAX_SECONDS = env_float("RETRY_BACKOFF_MAX_SECONDS", 300)
# Modules that declare work types with @work_type; imported at startup.
SHEPHERD_WORK_TYPE_MODULES = env_list("SHEPHERD_WORK_TYPE_MODULES", "scheduling.demo")
# Escalations go to these addresses (Django's email settings) and this webhook
# (a JSON POST); a failing one is recorded on the escalation and never stops a tick.
SHEPHERD_ESCALATION_EMAILS = env_list("SHEPHERD_ESCALATION_EMAILS", "")
SHEPHERD_ESCALATION_WEBHOOK_URL = env_str("SHEPHERD_ESCALATION_WEBHOOK_URL", "")
SHEPHERD_ESCALATION_WEBHOOK_TIMEOUT = env_float("SHEPHERD_ESCALATION_WEBHOOK_TIMEOUT", 3)
EMAIL_BACKEND = env_str("DJANGO_EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env_str("DJANGO_EMAIL_HOST", "localhost")
DEFAULT_FROM_EMAIL = env_str("DJANGO_DEFAULT_FROM_EMAIL", "shepherd@localhost")
# Violation monitor: an item whose agent was lost this many times while running it
# is poison; a work type whose finished attempts in the window fail at this rate
# (with at least the minimum count) is paused.
SHEPHERD_POISON_AFTER_LOST = env_int("SHEPHERD_POISON_AFTER_LOST", 2)
SHEPHERD_FAILURE_RATE_WINDOW_SECONDS = env_float("SHEPHERD_FAILURE_RATE_WINDOW_SECONDS", 300)
SHEPHERD_FAILURE_RATE_MIN_ATTEMPTS = env_int("SHEPHERD_FAILURE_RATE_MIN_ATTEMPTS", 20)
SHEPHERD_FAILURE_RATE_THRESHOLD = env_float("SHEPHERD_FAILURE_RATE_THRESHOLD", 0.8)
# JSON API: requests per minute per token (a token may set its own), and the
# largest request body any view accepts (a batch of payloads is one body).
SHEPHERD_API_RATE_LIMIT_PER_MINUTE = env_int("SHEPHERD_API_RATE_LIMIT_PER_MINUTE", 600)
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("SHEPHERD_MAX_REQUEST_BYTES", 10 * 1024 * 1024)
# /metrics: scrapers send `Authorization: Bearer <SHEPHERD_METRICS_TOKEN>` or come
# from an allowed address (networks allowed; default this host only).
SHEPHERD_METRICS_TOKEN = env_str("SHEPHERD_METRICS_TOKEN", "")
SHEPHERD_METRICS_ALLOWED_IPS = env_list("SHEPHERD_METRICS_ALLOWED_IPS", "127.0.0.1,::1")
# Django's task API runs @task functions as Shepherd work items (scheduling.tasks_backend).
TASKS = {"default": {"BACKEND": "scheduling.tasks_backend.ShepherdBackend"}}
SHEPHERD_FLOWER_URL = env_str("SHEPHERD_FLOWER_URL", "http://127.0.0.1:5555/")
