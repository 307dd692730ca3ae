"""The arithmetic of ``kubeworkers stats``: windows, Prometheus' histogram quantile, folding minutes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubeworkers import stats
from kubeworkers.protocol import DURATION_BUCKETS_S, STATS_TTL_S, STATS_WINDOW_MAX_S
from kubeworkers.stats import Tally, fold, handler_stats, histogram_quantile, minutes, parse_window

BOUNDS = (1.0, 2.0, 4.0)


@pytest.mark.parametrize(("text", "seconds"), [
    ("1m", 60), ("15m", 900), ("1h", 3600), ("24h", 86400), ("1d", 86400), (" 2H ", 7200), ("120s", 120),
    ("300", 300), (600, 600), (3600.0, 3600),
])
def test_a_window_is_read_as_whole_minutes_of_seconds(text: str | int | float, seconds: int) -> None:
    assert parse_window(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "1x", "1.5h", "-1h", "0m", "30s", "90s", "25h", "2d", 59, True])
def test_a_window_that_is_not_whole_minutes_up_to_a_day_is_refused_with_what_is_allowed(text: object) -> None:
    with pytest.raises(ValueError, match="invalid window"):
        parse_window(text)  # type: ignore[arg-type]


def test_minutes_of_a_day_outlive_the_longest_window() -> None:
    assert STATS_TTL_S > STATS_WINDOW_MAX_S


def test_a_window_covers_the_current_minute_and_those_before_it() -> None:
    assert minutes(120 * 60 + 59.9, 180) == [118, 119, 120]
    assert len(minutes(1_800_000_000.0, 86400)) == 1440


def test_quantile_interpolates_within_the_bucket_its_rank_falls_in() -> None:
    # 10 observations: 4 in (0, 1], 4 in (1, 2], 2 in (2, 4]; the median ranks 5th: 1/4 into (1, 2].
    assert histogram_quantile(0.5, BOUNDS, [4, 4, 2, 0]) == pytest.approx(1.25)
    assert histogram_quantile(0.2, BOUNDS, [4, 4, 2, 0]) == pytest.approx(0.5)  # the first bucket starts at 0
    assert histogram_quantile(0.9, BOUNDS, [4, 4, 2, 0]) == pytest.approx(3.0)
    assert histogram_quantile(1.0, BOUNDS, [4, 4, 2, 0]) == pytest.approx(4.0)


def test_quantile_in_the_infinite_bucket_is_the_largest_finite_bound() -> None:
    assert histogram_quantile(0.95, BOUNDS, [1, 0, 0, 9]) == 4.0


def test_quantile_of_an_empty_histogram_is_none() -> None:
    assert histogram_quantile(0.5, BOUNDS, [0, 0, 0, 0]) is None


def test_quantile_refuses_a_q_outside_0_to_1_and_counts_that_do_not_fit_the_bounds() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        histogram_quantile(1.5, BOUNDS, [1, 0, 0, 0])
    with pytest.raises(ValueError, match="need 4 counts"):
        histogram_quantile(0.5, BOUNDS, [1, 0, 0])


@given(st.lists(st.integers(0, 50), min_size=len(DURATION_BUCKETS_S) + 1, max_size=len(DURATION_BUCKETS_S) + 1),
       st.floats(0.01, 1.0), st.floats(0.01, 1.0))
def test_quantiles_are_monotonic_and_within_the_bounds(counts: list[int], a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    low, high = histogram_quantile(lo, DURATION_BUCKETS_S, counts), histogram_quantile(hi, DURATION_BUCKETS_S, counts)
    if sum(counts) == 0:
        assert low is high is None
        return
    assert low is not None and high is not None
    assert 0 <= low <= high <= DURATION_BUCKETS_S[-1]


def test_minutes_fold_into_one_tally_per_handler() -> None:
    tallies = fold([
        {b"a|succeeded": b"2", b"a|dsum": b"0.5", b"a|b3": b"2", b"b|failed": b"1"},
        {"a|succeeded": "1", "a|retried": "1", "a|dsum": "0.25", "a|b3": "1", "a|b14": "1", "junk": "1"},
    ])
    assert set(tallies) == {"a", "b"}
    assert tallies["a"].outcomes == {"succeeded": 3, "retried": 1}
    assert tallies["a"].duration_sum_s == pytest.approx(0.75)
    assert tallies["a"].buckets[3] == 3 and tallies["a"].buckets[len(DURATION_BUCKETS_S)] == 1
    assert tallies["b"].outcomes == {"failed": 1}


def test_a_handlers_failure_rate_is_failed_jobs_over_ended_jobs_and_retries_are_not_jobs() -> None:
    tally = Tally(outcomes={"succeeded": 3, "failed": 1, "retried": 5}, duration_sum_s=4.5)
    tally.buckets[6] = 9
    h = handler_stats("a", tally, in_flight=2, queued=7)
    assert (h.jobs, h.failure_rate, h.duration_count, h.in_flight, h.queued) == (4, 0.25, 9, 2, 7)
    assert h.mean_duration_s == pytest.approx(0.5)
    assert h.p50_duration_s == pytest.approx(0.5 + 0.5 * 0.5)  # bucket (0.5, 1], rank 4.5 of 9


def test_a_handler_with_no_ended_job_has_no_rate_nor_durations() -> None:
    h = handler_stats("idle", Tally(), queued=3)
    assert (h.jobs, h.failure_rate, h.mean_duration_s, h.p50_duration_s, h.p95_duration_s) == (0, *[None] * 4)


def test_the_table_has_a_row_per_handler_with_readable_durations() -> None:
    tally = Tally(outcomes={"succeeded": 1}, duration_sum_s=0.02)
    tally.buckets[3] = 1
    shown = stats.table(stats.PoolStats(namespace="default", pool="demo", window_s=900, at=0.0,
                                        handlers=[handler_stats("a", tally)]))
    head, columns, row = shown.splitlines()
    assert head == "pool default/demo, last 15m"
    assert columns.split()[:2] == ["HANDLER", "JOBS"]
    assert row.split() == ["a", "1", "1", "0", "0.0%", "20ms", "30ms", "48ms", "0", "0"]
