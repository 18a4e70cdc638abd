"""Request and response shapes of the JSON API; the OpenAPI schema is generated from these."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from ninja import Field, Schema
from pydantic import AwareDatetime, BeforeValidator, ConfigDict, StrictInt

# Long enough for any real batch, short enough to bound one request's work.
MAX_BATCH_ITEMS = 10_000


def _iso_text_only(value: Any) -> Any:
    # Pydantic would read a number as a Unix timestamp; the schema promises an
    # ISO 8601 string, so anything else is the client's mistake.
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 date-time string with a time zone")
    return value


IsoDatetime = Annotated[AwareDatetime, BeforeValidator(_iso_text_only)]


def _json_number_only(value: Any) -> Any:
    # Lax validation would turn "5" (or true) into a number; JSON numbers only.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a JSON number")
    return value


Number = Annotated[float, BeforeValidator(_json_number_only)]


class StrictIn(Schema):
    # Unknown fields are a client bug worth reporting, not something to drop silently.
    model_config = ConfigDict(extra="forbid")


class ErrorBody(Schema):
    status: int
    code: str = Field(description="Stable machine-readable code, e.g. illegal_transition.")
    message: str
    details: Any = None


class ErrorOut(Schema):
    error: ErrorBody


class WorkTypeOut(Schema):
    name: str
    queue: str
    description: str
    priority: int
    max_attempts: int
    budget_seconds: int | None
    capabilities: list[str]
    paused: bool
    payload_schema: dict[str, Any]


class SubmitOptions(StrictIn):
    work_type: str = Field(min_length=1, max_length=100, examples=["demo.sleep"])
    budget_seconds: StrictInt | None = Field(None, gt=0, description="Run time per attempt (default: the type's).")
    budget_seconds_total: StrictInt | None = Field(None, gt=0, description="Run time across attempts.")
    budget_cost: Number | None = Field(None, gt=0, description="Charged cost across attempts (ctx.charge).")
    priority: StrictInt | None = Field(None, ge=0, le=9, description="0-9, higher first; default: the work type's.")
    not_before: IsoDatetime | None = Field(None, description="Do not start before this time (ISO 8601 with zone).")
    complete_by: IsoDatetime | None = Field(None, description="Deadline (ISO 8601 with zone).")
    requirements: list[Annotated[str, Field(max_length=130)]] = Field(
        default_factory=list,
        max_length=20,
        description="Capabilities an agent needs beyond the work type's, e.g. ['gpu', 'mem_gb=16'].",
    )


class ItemSubmitIn(SubmitOptions):
    payload: dict[str, Any] = Field(default_factory=dict, description="Must satisfy the work type's payload schema.")


class BatchSubmitIn(SubmitOptions):
    payloads: list[dict[str, Any]] = Field(min_length=1, description=f"At most {MAX_BATCH_ITEMS} payloads.")


class BatchOut(Schema):
    ids: list[int]
    count: int
    created: bool = Field(description="False when the Idempotency-Key matched an earlier batch.")


class AttemptOut(Schema):
    number: int
    agent: str | None
    outcome: str
    started_at: datetime
    finished_at: datetime | None
    error: str
    cost: float


class ItemOut(Schema):
    id: int
    work_type: str
    queue: str
    status: str
    blocked_reason: str = Field(
        description="Why a pending item waits: dependencies, not_before, paused, no_capable_agent, "
        "concurrency_limit, rate_limited, queue_full, or ready; empty once it left pending."
    )
    requirements: list[str] = Field(description="Capabilities an agent needs to run it.")
    priority: int
    attempt: int
    max_attempts: int
    progress: float
    progress_message: str
    submitted_by: str | None
    idempotency_key: str
    created_at: datetime
    not_before: datetime | None
    complete_by: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    cost_total: float
    agent: str | None = Field(description="Agent holding the current attempt.")
    progress_at: datetime | None = Field(description="Last progress change (the stall clock).")
    heartbeat_at: datetime | None = Field(description="Last lease renewal by the running attempt (the item clock).")
    agent_heartbeat_at: datetime | None = Field(description="The holding agent's last heartbeat (the agent clock).")


class ItemDetailOut(ItemOut):
    payload: dict[str, Any]
    result: Any
    error: str
    attempts: list[AttemptOut]


class ItemPageOut(Schema):
    items: list[ItemOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page.")


class AgentOut(Schema):
    id: int
    name: str
    status: str
    pid: int | None
    hostname: str
    queues: list[str]
    concurrency: int
    capabilities: Any
    heartbeat_age_seconds: float


class SupervisorOut(Schema):
    id: int
    started_at: datetime
    finished_at: datetime | None
    findings: int
    actions: int
    released: int
    error: bool
    age_seconds: float
    duration_seconds: float | None
    silent: bool


class StatusOut(Schema):
    counts: dict[str, int] = Field(description="Items per state (for non-staff: their own items).")
    queues: dict[str, dict[str, int]]
    agents: list[AgentOut]
    supervisor: SupervisorOut | None


class RequestItemIn(StrictIn):
    key: str = Field(min_length=1, max_length=100, description="Unique within the request; used by depends_on.")
    work_type: str = Field(min_length=1, max_length=100)
    payload: dict[str, Any] = Field(default_factory=dict)
    priority: StrictInt | None = Field(None, ge=0, le=9)
    depends_on: list[str] = Field(default_factory=list, description="Keys of items that must succeed first.")


class RequestIn(StrictIn):
    name: str = Field("", max_length=200)
    items: list[RequestItemIn] = Field(min_length=1, description="At most 10,000 items; no cycles.")


class RequestNodeOut(Schema):
    id: int
    key: str
    work_type: str
    status: str
    progress: float
    depends_on: list[int]


class RequestOut(Schema):
    id: int
    name: str
    state: str = Field(description="pending, running, succeeded, failed or cancelled (rolled up).")
    progress: float
    counts: dict[str, int]
    items: list[RequestNodeOut]
