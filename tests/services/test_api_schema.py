"""Schemathesis against the generated OpenAPI schema, in process (WSGI): every
operation with generated valid and invalid input must never answer 5xx, and
every answer must match the documented status codes and shapes. Bounded so CI
stays short; derandomized so a failure reproduces."""

from __future__ import annotations

import pytest
import schemathesis
from django.contrib.auth import get_user_model
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from api.services import api_token_create
from api.views import api
from scheduling import services

schema = schemathesis.openapi.from_dict(api.get_openapi_schema())
schema.app = get_wsgi_application()


@pytest.fixture
def in_test_transaction():
    # As Django's test client does: a request must not close the connection that
    # holds the test's transaction.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def bearer(db, in_test_transaction):
    user = get_user_model().objects.create_user("fuzzer", is_staff=False)
    # A few real items so generated ids sometimes hit rows of the caller's own.
    services.work_items_submit_ids(work_type="demo.noop", payloads=[{}] * 3, submitted_by=user)
    _, raw = api_token_create(user=user, name="schemathesis", rate_limit_per_minute=1_000_000)
    return {"Authorization": f"Bearer {raw}"}


@pytest.mark.django_db
@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_api_conforms_to_its_schema(case, bearer):
    # A schema-valid body may still name an unknown work type or carry a payload
    # its work type's own JSON Schema rejects: that is a documented 422, so the
    # "valid data must be accepted" check cannot apply. Every other check does.
    # Generated cases carry a random bearer value; swap in a real one. A negative
    # case that dropped the header stays without it and must get a 401.
    headers = bearer if "Authorization" in (case.headers or {}) else {}
    case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])
