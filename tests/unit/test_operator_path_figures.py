"""The per-Job Redis figures of the operator-path benchmark (benchmarks/bench_jobs_e2e.py) and the
before/after tables of benchmarks/bench_operator_ab.py, from made-up readings."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.bench_operator_ab import command_table, label_of, mean_calls, split_cpu, table
from benchmarks.measure import commandstats_counts, redis_per_job
from benchmarks.suites import k8s_path

pytestmark = pytest.mark.unit


def test_commandstats_counts_keeps_calls_and_usec_of_the_command_lines_only() -> None:
    # What redis-py's info("commandstats") returns: every field parsed, numbers as numbers.
    info = {"cmdstat_xadd": {"calls": 3, "usec": 12, "usec_per_call": 4.0, "rejected_calls": 0, "failed_calls": 0},
            "cmdstat_xinfo|groups": {"calls": 2, "usec": 5, "usec_per_call": 2.5}}
    assert commandstats_counts(info) == {"cmdstat_xadd": {"calls": 3.0, "usec": 12.0},
                                         "cmdstat_xinfo|groups": {"calls": 2.0, "usec": 5.0}}
    assert commandstats_counts({"errorstat_ERR": {"count": 1}}) == {}


def test_redis_per_job_divides_the_window_by_the_jobs_and_leaves_out_the_benchmarks_own_reads() -> None:
    before = {"cmdstat_evalsha": {"calls": 10.0, "usec": 100.0}, "cmdstat_info": {"calls": 4.0, "usec": 40.0}}
    after = {"cmdstat_evalsha": {"calls": 2010.0, "usec": 5100.0}, "cmdstat_info": {"calls": 6.0, "usec": 60.0},
             "cmdstat_xack": {"calls": 1000.0, "usec": 900.0}, "cmdstat_xadd": {"calls": 3000.0, "usec": 6000.0}}
    figures = redis_per_job(1000, cpu_before=2.0, cpu_after=2.05, stats_before=before, stats_after=after)
    assert figures["redis_cpu_us_per_job"] == pytest.approx(50.0)
    assert figures["redis_commands_per_job"] == pytest.approx(3.0 + 2.0 + 1.0)
    # Busiest by calls first; `info` (the benchmark's) is not there.
    assert list(figures["redis_commands_by_command"]) == ["xadd", "evalsha", "xack"]
    assert figures["redis_commands_by_command"]["evalsha"] == {"calls_per_job": 2.0, "usec_per_job": 5.0}


def test_redis_per_job_of_no_jobs_does_not_divide_by_zero() -> None:
    assert redis_per_job(0, 1.0, 1.0, {}, {})["redis_cpu_us_per_job"] == 0.0


def run(tree: str | None, redis_us: float, calls: dict[str, float], load: tuple[float, float]) -> dict[str, Any]:
    return {"operator_tree": tree, "redis_cpu_us_per_job": redis_us, "redis_commands_per_job": sum(calls.values()),
            "operator_cpu_ms_per_job": 9.5, "jobs_per_second": 30.0,
            "redis_core_share": redis_us * 30.0 / 1e6, "operator_core_share": 0.285, "load_average_1m": list(load),
            "redis_commands_by_command": {k: {"calls_per_job": v, "usec_per_job": 1.0} for k, v in calls.items()}}


RUNS = [run("/old", 120.0, {"xadd": 3.0, "persist": 1.0}, (2.0, 2.5)),
        run(None, 100.0, {"xadd": 3.0}, (2.5, 3.0)),
        run("/old", 130.0, {"xadd": 3.0, "persist": 1.0}, (3.0, 3.5)),
        run(None, 110.0, {"xadd": 3.5}, (3.5, 2.0))]


def test_runs_with_another_tree_are_before_and_this_trees_are_after() -> None:
    assert [label_of(r) for r in RUNS] == ["before", "after", "before", "after"]


def test_the_table_shows_each_run_of_a_side_in_the_order_run() -> None:
    lines = table(RUNS).splitlines()
    assert lines[2] == ("| before | 120 · 130 | 4.0 · 4.0 | 9.50 · 9.50 | 30.0 · 30.0 | 0.004, 0.28 · 0.004, 0.28 "
                        "| 2.0 to 2.5 · 3.0 to 3.5 |")
    assert lines[3].startswith("| after | 100 · 110 | 3.0 · 3.5 |")


def test_commands_by_command_are_means_over_the_runs_and_a_command_one_side_lacks_is_zero_there() -> None:
    assert mean_calls(RUNS, "after") == {"xadd": 3.25}
    rows = command_table(RUNS).splitlines()[2:]
    assert rows == ["| `xadd` | 3.00 | 3.25 |", "| `persist` | 1.00 | 0.00 |", "| all | 4.00 | 3.25 |"]


def test_the_k8s_path_doc_names_the_commands_run_at_least_the_threshold_busiest_first() -> None:
    by = {"hset": {"calls_per_job": 3.08}, "xadd": {"calls_per_job": 3.08}, "scan": {"calls_per_job": 0.004}}
    assert k8s_path.commands_line(by) == "`hset` 3.08, `xadd` 3.08"



def test_split_cpu_separates_what_runs_by_the_second_from_what_each_job_adds() -> None:
    # 20 ms of CPU per second of run plus 200 µs per Job, exactly.
    runs = [{"seconds_to_all_succeeded": wall, "jobs": jobs, "redis_cpu_seconds": 0.02 * wall + 200e-6 * jobs}
            for wall, jobs in [(20.0, 1000), (30.0, 1000), (25.0, 1000), (6.0, 100)]]
    split = split_cpu(runs)
    assert split is not None
    assert split[0] == pytest.approx(0.02)
    assert split[1] == pytest.approx(200.0)


def test_split_cpu_cannot_tell_the_parts_apart_from_one_run_or_proportional_ones() -> None:
    one = {"seconds_to_all_succeeded": 20.0, "jobs": 1000, "redis_cpu_seconds": 0.6}
    assert split_cpu([one]) is None
    assert split_cpu([one, {**one, "seconds_to_all_succeeded": 40.0, "jobs": 2000}]) is None
