import pytest

from project.exceptions import ValidationError
from scheduling.registry import payload_validate, work_type_spec


def test_defaults_are_filled_in():
    assert payload_validate(work_type_spec("demo.sleep"), {}) == {"seconds": 1}
    assert payload_validate(work_type_spec("demo.progress"), {"steps": 3}) == {
        "steps": 3,
        "step_seconds": 0.5,
        "cost_per_step": 0,
    }


@pytest.mark.parametrize(
    ("work_type", "payload", "message"),
    [
        ("demo.sleep", {"seconds": "a while"}, "payload.seconds: 'a while' is not of type 'number'"),
        ("demo.sleep", {"seconds": -1}, "payload.seconds: -1 is less than the minimum of 0"),
        ("demo.sleep", {"sleep": 1}, "Additional properties are not allowed ('sleep' was unexpected)"),
        ("demo.cpu", {"n": 1.5}, "payload.n: 1.5 is not of type 'integer'"),
        ("demo.noop", [1, 2], "payload must be a JSON object, not list"),
    ],
)
def test_invalid_payloads_say_what_is_wrong(work_type, payload, message):
    with pytest.raises(ValidationError) as error:
        payload_validate(work_type_spec(work_type), payload)
    assert message in str(error.value)


def test_unknown_work_type_lists_the_known_ones():
    with pytest.raises(ValidationError, match=r"unknown work type 'demo\.nope' \(known: .*demo\.noop"):
        work_type_spec("demo.nope")
