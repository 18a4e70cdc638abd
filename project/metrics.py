"""`/metrics` in Prometheus text format, computed from the database at scrape time,
so every scrape agrees whichever process answers it (no per-process counters).

Access: a bearer token (SHEPHERD_METRICS_TOKEN) or a client address in
SHEPHERD_METRICS_ALLOWED_IPS (default: this host only).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterator

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from agents.selectors import agents_overview
from scheduling.models import IN_FLIGHT_STATUSES, WorkItemStatus
from scheduling.routing import work_queue_names
from scheduling.selectors import (
    attempt_counts_by_type_outcome,
    attempt_run_time_histogram,
    queue_wait_histogram,
    work_item_counts_by_queue_type_state,
)
from supervision.selectors import (
    escalations_open_by_problem,
    intervention_counts,
    supervisor_last_run,
    supervisor_ticks_count,
)

# Seconds; covers a no-op item (milliseconds) up to a long run (hours).
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 1800, 7200)


def _histogram(name: str, documentation: str, found: dict) -> HistogramMetricFamily:
    buckets = [(floatToGoString(bound), count) for bound, count in found["buckets"]] + [("+Inf", found["count"])]
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=found["sum_seconds"])


class ShepherdCollector:
    def collect(self) -> Iterator[Metric]:
        yield from self._work_items()
        yield from self._attempts()
        yield from self._agents()
        yield from self._supervisor()

    def _work_items(self) -> Iterator[Metric]:
        rows = work_item_counts_by_queue_type_state()
        by_queue_state = {(q, s): 0 for q in work_queue_names() for s in WorkItemStatus.values}
        in_flight = dict.fromkeys(work_queue_names(), 0)
        by_type_state: dict[tuple[str, str], int] = {}
        for row in rows:
            key = (row["queue"], row["status"])
            by_queue_state[key] = by_queue_state.get(key, 0) + row["n"]
            if row["status"] in IN_FLIGHT_STATUSES:
                in_flight[row["queue"]] = in_flight.get(row["queue"], 0) + row["n"]
            type_key = (row["work_type_id"], row["status"])
            by_type_state[type_key] = by_type_state.get(type_key, 0) + row["n"]
        items = GaugeMetricFamily("shepherd_work_items", "Work items per state and queue.", labels=["state", "queue"])
        for (queue, state), n in sorted(by_queue_state.items()):
            items.add_metric([state, queue], n)
        yield items
        flight = GaugeMetricFamily(
            "shepherd_queue_in_flight", "Items in the broker window (queued + running) per queue.", labels=["queue"]
        )
        for queue, n in sorted(in_flight.items()):
            flight.add_metric([queue], n)
        yield flight
        per_type = GaugeMetricFamily(
            "shepherd_work_items_by_type",
            "Work items per work type and state; succeeded are completions, dead are failures.",
            labels=["work_type", "state"],
        )
        for (work_type, state), n in sorted(by_type_state.items()):
            per_type.add_metric([work_type, state], n)
        yield per_type

    def _attempts(self) -> Iterator[Metric]:
        attempts = CounterMetricFamily(
            "shepherd_attempts", "Attempts per work type and outcome.", labels=["work_type", "outcome"]
        )
        for row in sorted(attempt_counts_by_type_outcome(), key=lambda r: (r["work_item__work_type_id"], r["outcome"])):
            attempts.add_metric([row["work_item__work_type_id"], row["outcome"]], row["n"])
        yield attempts
        yield _histogram(
            "shepherd_queue_wait_seconds",
            "Time from submission to the first attempt's start.",
            queue_wait_histogram(DURATION_BUCKETS),
        )
        yield _histogram(
            "shepherd_attempt_run_seconds",
            "Run time of finished attempts (claim to finish).",
            attempt_run_time_histogram(DURATION_BUCKETS),
        )

    def _agents(self) -> Iterator[Metric]:
        agents = agents_overview()
        ages = GaugeMetricFamily(
            "shepherd_agent_heartbeat_age_seconds",
            "Seconds since each agent's last heartbeat (database clock).",
            labels=["agent", "status"],
        )
        per_status: dict[str, int] = {}
        for agent in agents:
            ages.add_metric([agent["name"], agent["status"]], agent["heartbeat_age_seconds"])
            per_status[agent["status"]] = per_status.get(agent["status"], 0) + 1
        yield ages
        counts = GaugeMetricFamily(
            "shepherd_agents", "Agents per status (live, and stopped within the hour).", labels=["status"]
        )
        for status, n in sorted(per_status.items()):
            counts.add_metric([status], n)
        yield counts

    def _supervisor(self) -> Iterator[Metric]:
        run = supervisor_last_run()
        if run is not None:
            yield GaugeMetricFamily(
                "shepherd_supervisor_last_tick_age_seconds", "Seconds since the last tick started.", run["age_seconds"]
            )
            if run["duration_seconds"] is not None:
                yield GaugeMetricFamily(
                    "shepherd_supervisor_last_tick_duration_seconds",
                    "How long the last finished tick took.",
                    run["duration_seconds"],
                )
            yield GaugeMetricFamily(
                "shepherd_supervisor_silent", "1 when no tick ran for over three intervals.", int(run["silent"])
            )
        yield CounterMetricFamily("shepherd_supervisor_ticks", "Supervisor ticks recorded.", supervisor_ticks_count())
        interventions = CounterMetricFamily(
            "shepherd_interventions",
            "Supervisor interventions per monitor, action and outcome.",
            labels=["monitor", "action", "outcome"],
        )
        for row in intervention_counts():
            interventions.add_metric([row["monitor"], row["action"], row["outcome"]], row["n"])
        yield interventions
        escalations = GaugeMetricFamily(
            "shepherd_escalations_open",
            "Unresolved escalations (open or acknowledged) per problem.",
            labels=["problem"],
        )
        for problem, n in sorted(escalations_open_by_problem().items()):
            escalations.add_metric([problem], n)
        yield escalations


def _client_allowed(request: HttpRequest) -> bool:
    token = settings.SHEPHERD_METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if token and hmac.compare_digest(header.encode(), f"Bearer {token}".encode()):
        return True
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(net, strict=False) for net in settings.SHEPHERD_METRICS_ALLOWED_IPS)


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not _client_allowed(request):
        response = HttpResponse("metrics need SHEPHERD_METRICS_TOKEN or an allowed address\n", status=403)
        response["Content-Type"] = "text/plain"
        return response
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ShepherdCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
