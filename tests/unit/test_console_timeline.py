"""The pools page's replicas-and-backlog timeline: the operator's ring buffer (model/console_timeline.py)
and the SVG geometry (kubeworkers/console/timeline.py)."""

from __future__ import annotations

import re

import pytest
from kubeworkers.console import timeline
from kubeworkers.console.backend import Sample
from kubeworkers_operator.model.console_timeline import Point, Ring, Timelines


def test_the_ring_keeps_the_newest_points_oldest_first() -> None:
    ring = Ring(3)
    for t in range(5):
        ring.add(Point(float(t), t, t, 10 * t))
    assert [p.at for p in ring.points()] == [2.0, 3.0, 4.0]
    ring.add(Point(1.0, 0, 0, 0))  # a clock step back is ignored
    assert [p.at for p in ring.points()] == [2.0, 3.0, 4.0]
    with pytest.raises(ValueError):
        Ring(0)


def test_timelines_are_per_pool_and_forget_a_pool_not_seen_for_a_ring() -> None:
    lines = Timelines(capacity=2)
    lines.add(("ns", "a"), Point(100.0, 1, 1, 0))
    lines.add(("ns", "b"), Point(200.0, 2, 2, 5))
    assert lines.points(("ns", "a")) == [Point(100.0, 1, 1, 0)]
    assert lines.points(("ns", "c")) == []
    lines.forget_older_than(150.0)
    assert set(lines.rings) == {("ns", "b")}


def test_points_span_the_box_time_left_to_right_value_bottom_to_top() -> None:
    pts = timeline.points([0.0, 5.0, 10.0], [0.0, 2.0, 4.0], 100, 20)
    assert pts == [(0.0, 20.0), (50.0, 10.0), (100.0, 0.0)]
    # A shared top (replicas ready and desired on one scale) and an all-zero series.
    assert timeline.points([0.0, 10.0], [1.0, 2.0], 100, 20, top=4) == [(0.0, 15.0), (100.0, 10.0)]
    assert timeline.points([0.0, 10.0], [0.0, 0.0], 100, 20) == [(0.0, 20.0), (100.0, 20.0)]
    assert timeline.points([7.0], [3.0], 100, 20) == [(100.0, 0.0)]
    assert timeline.points([], [], 100, 20) == []


def test_steps_hold_each_value_until_the_next_sample() -> None:
    assert timeline.steps([(0.0, 20.0), (50.0, 10.0), (100.0, 10.0)]) == [
        (0.0, 20.0), (50.0, 20.0), (50.0, 10.0), (100.0, 10.0), (100.0, 10.0)]


def test_the_svg_draws_ready_desired_and_backlog_and_says_it_in_words() -> None:
    samples = [Sample(0.0, 1, 2, 0), Sample(60.0, 2, 2, 40), Sample(120.0, 2, 4, 80)]
    svg = timeline.svg(samples, width=120, height=22)
    lines = dict(re.findall(r'<polyline class=(\w+) points="([^"]+)"', svg))
    assert set(lines) == {"ready", "desired", "backlog"}
    # Replicas share one scale (top 4): desired ends at the top, ready at half height; y has a 1px pad.
    assert lines["desired"].split()[-1] == "120.0,1.0"
    assert lines["ready"].split()[-1] == "120.0,11.0"
    assert lines["backlog"].split()[0] == "0.0,21.0" and lines["backlog"].split()[-1] == "120.0,1.0"
    assert "now 2 ready of 4, backlog 80" in svg and "over the last 2 min" in svg
    assert "style=" not in svg and "<script" not in svg
    assert timeline.svg([]) == ""


def test_the_pools_page_shows_the_apiserver_columns_and_only_the_conditions_that_say_something_is_wrong() -> None:
    from kubeworkers.console import pages
    from kubeworkers.console.backend import PoolKube

    ok = PoolKube(ready=1, desired=2, min_replicas=0, max_replicas=5, last_scale_reason="scaled 1 -> 2: backlog 9",
                  conditions=[("Available", "True", "WorkersReady", "1 of 1 ready"),
                              ("PodsFailing", "False", "NoFailures", "fine")])
    cell = pages._replicas_cell(ok)
    assert cell == "<td class=replicas>1/2 (0-5)</td>"
    bad = PoolKube(ready=0, desired=1, conditions=[("Available", "False", "NoReadyWorkers", "none <of> 1"),
                                                   ("PodsFailing", "True", "CrashLoop", "pod x crashes")])
    cell = pages._replicas_cell(bad)
    assert "Available: NoReadyWorkers: none &lt;of&gt; 1" in cell and "PodsFailing: CrashLoop" in cell
    assert pages._decision(ok, 0.0) == "scaled 1 -&gt; 2: backlog 9"
    assert pages._decision(None, 0.0) == "none yet"
