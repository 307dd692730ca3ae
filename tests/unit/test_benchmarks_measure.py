"""The benchmarks' arithmetic and report plumbing: the figures are printed, never asserted, so these keep
the code that makes them honest (percentiles, per-job CPU, ratios, doc blocks, the probe's wire format)."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

from benchmarks import report
from benchmarks.measure import (
    Snapshot,
    commandstats_delta,
    drain_figures,
    markdown_table,
    median_figures,
    percentile,
    ratio,
    verdict,
)
from benchmarks.probe import Probe, cpu_seconds
from benchmarks.suites import k8s_path, throughput

pytestmark = pytest.mark.unit


def test_percentile_interpolates_between_closest_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 0.0) == 1.0
    assert percentile(values, 1.0) == 4.0
    assert percentile(values, 0.5) == 2.5
    assert percentile([7.0], 0.99) == 7.0


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError):
        percentile([], 0.5)


def test_drain_figures_count_only_the_window_between_first_and_last_run() -> None:
    first = Snapshot(n=1, t=100.0, cpu=2.0, redis_cpu=10.0)
    last = Snapshot(n=1001, t=101.0, cpu=2.05, redis_cpu=10.02)
    f = drain_figures(1001, spawned_at=99.5, first=first, last=last)
    assert f["drain_per_s"] == pytest.approx(1000.0)
    assert f["drain_with_startup_per_s"] == pytest.approx(1001 / 1.5)
    assert f["startup_s"] == pytest.approx(0.5)
    assert f["worker_cpu_us_per_job"] == pytest.approx(50.0)
    assert f["redis_cpu_us_per_job"] == pytest.approx(20.0)
    assert f["worker_core_share"] == pytest.approx(0.05)


def test_median_figures_take_each_figure_on_its_own_and_skip_non_numbers() -> None:
    runs: list[dict[str, Any]] = [{"a": 1.0, "b": 30.0, "c": {}}, {"a": 3.0, "b": 10.0}, {"a": 2.0, "b": 20.0}]
    assert median_figures(runs) == {"a": 2.0, "b": 20.0}


def test_ratio_is_missing_when_a_side_is_missing_or_zero() -> None:
    assert ratio(10.0, 4.0) == 2.5
    assert ratio(None, 4.0) is None
    assert ratio(10.0, 0.0) is None


def test_kubeworkers_ratios_say_above_one_when_it_leads() -> None:
    ours = {"drain_per_s": 10_000.0, "drain_with_startup_per_s": 5_000.0, "submit_per_s": 40_000.0,
            "worker_cpu_us_per_job": 40.0, "redis_cpu_us_per_job": 20.0}
    theirs = {"drain_per_s": 1_000.0, "drain_with_startup_per_s": 1_000.0, "submit_per_s": 4_000.0,
              "worker_cpu_us_per_job": 400.0, "redis_cpu_us_per_job": 200.0}
    r = throughput.ratios(ours, theirs)
    assert r["drain"] == 10.0
    assert r["drain_with_startup"] == 5.0
    assert r["worker_cpu"] == 10.0
    assert r["total_cpu"] == 10.0


def test_commandstats_delta_gives_calls_and_microseconds_per_job_busiest_first() -> None:
    before = {"cmdstat_xadd": {"calls": 10, "usec": 100}, "cmdstat_hset": {"calls": 5, "usec": 5}}
    after = {"cmdstat_xadd": {"calls": 30, "usec": 140}, "cmdstat_hset": {"calls": 45, "usec": 85},
             "cmdstat_evalsha": {"calls": 1, "usec": 200}, "cmdstat_ping": {"calls": 0, "usec": 0}}
    d = commandstats_delta(before, after, jobs=20)
    assert list(d) == ["evalsha", "hset", "xadd"]
    assert d["hset"] == {"calls_per_job": 2.0, "usec_per_job": 4.0, "usec_per_call": 2.0}
    assert d["evalsha"]["usec_per_call"] == 200.0


def test_markdown_table_right_aligns_figures() -> None:
    table = markdown_table(["system", "jobs/s"], [["a", "1"]])
    assert table.splitlines() == ["| system | jobs/s |", "|---|---:|", "| a | 1 |"]


def test_a_suite_rewrites_only_its_own_block_of_the_doc() -> None:
    text = "# B\n\nprose\n\n<!-- latency:begin -->\nold\n<!-- latency:end -->\n\nmore prose\n"
    out = report.replace_block(text, "latency", "new table")
    assert out == "# B\n\nprose\n\n<!-- latency:begin -->\nnew table\n<!-- latency:end -->\n\nmore prose\n"
    appended = report.replace_block(out, "scaling", "curve")
    assert appended.endswith("<!-- scaling:begin -->\ncurve\n<!-- scaling:end -->\n")
    assert "new table" in appended


def test_probe_reports_the_first_and_the_last_run_in_drain_mode() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        probe = Probe({"KW_BENCH_MODE": "drain", "KW_BENCH_JOBS": "3", "KW_BENCH_PORT": str(sock.getsockname()[1])})
        for _ in range(3):
            probe.tick()
        got = [Snapshot.of(json.loads(sock.recvfrom(4096)[0])) for _ in range(2)]
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.recvfrom(4096)
    assert [s.n for s in got] == [1, 3]
    assert got[1].t >= got[0].t and got[1].cpu >= got[0].cpu


def test_probe_does_nothing_outside_a_benchmark() -> None:
    probe = Probe({})
    probe.tick()  # no socket target, no error


def test_cpu_seconds_reads_this_process() -> None:
    assert cpu_seconds("self") > 0


def test_verdict_says_met_or_by_how_much_a_target_is_missed() -> None:
    assert verdict(25.0, 20.0, at_least=True) == "met"
    assert verdict(20.0, 20.0, at_least=True) == "met"
    assert verdict(10.0, 20.0, at_least=True) == "missed (50% of the target)"
    assert verdict(20.0, 20.0, at_least=False) == "met"
    assert verdict(40.0, 20.0, at_least=False) == "missed (2.0x the limit)"
    assert verdict(None, 20.0, at_least=False) == "not measured"


def test_operator_memory_per_1000_jobs_is_the_growth_between_the_small_and_the_large_run() -> None:
    runs = [{"jobs": 1000, "operator_peak_rss_mib": 120.0}, {"jobs": 10000, "operator_peak_rss_mib": 165.0}]
    assert k8s_path.marginal_rss_per_1000(runs) == pytest.approx(5.0)
    assert k8s_path.marginal_rss_per_1000(runs[:1]) is None
