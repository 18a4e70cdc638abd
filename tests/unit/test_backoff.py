import pytest

from scheduling.backoff import retry_delay_seconds


@pytest.mark.parametrize(
    ("attempt", "low", "high"),
    [(1, 1.0, 2.0), (2, 2.0, 4.0), (3, 4.0, 8.0), (4, 8.0, 16.0), (10, 30.0, 60.0)],
)
def test_exponential_with_equal_jitter_and_cap(attempt, low, high):
    delays = [retry_delay_seconds(attempt=attempt, base=2, cap=60, rand=lambda r=r: r) for r in (0.0, 0.5, 1.0)]
    assert delays[0] == pytest.approx(low)
    assert delays[2] == pytest.approx(high)
    assert low < delays[1] < high


def test_jitter_spreads_retries():
    delays = {round(retry_delay_seconds(attempt=3, base=2, cap=60), 6) for _ in range(50)}
    assert len(delays) > 40
