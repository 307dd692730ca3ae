"""Hostile input, as properties (issue 14 item 5): the stream message codec, the worker's settle
writes and the scaling decision, under whatever hypothesis draws.

- any stream entry either decodes to a valid :class:`JobMessage` or raises ``ValueError`` (the
  worker then fails or drops it with a reason): never another exception, never a half-built message;
- a message survives its own encoding unchanged, whatever text its fields hold;
- a settle batch always encodes to JSON that decodes to the same writes;
- the scaling decision stays within the pool's bounds, never below its busy workers, and never
  reaches zero while anything waits or runs, whatever the load numbers.
The status folding and Job transitions have their own properties (test_status_folding.py,
test_status_transitions.py); handler behaviours run for real in
tests/integration/test_worker_handler_properties.py.
"""

from __future__ import annotations

import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st
from kubeworkers import wire
from kubeworkers.protocol import JobMessage, Priority
from kubeworkers_operator.autoscaling.decision import Load, ScalerState, decide
from kubeworkers_operator.autoscaling.policy import AutoscalingPolicy

texts = st.text(max_size=40)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
raw_bytes = st.binary(max_size=200)
field_values = st.one_of(raw_bytes, texts.map(str.encode), json_values.map(lambda v: json.dumps(v).encode()))


@settings(max_examples=400)
@given(st.dictionaries(st.sampled_from([b"v", b"m", b"j", b"u", b"h", b"x"]) | raw_bytes, field_values, max_size=6))
def test_any_stream_entry_decodes_to_a_valid_message_or_a_value_error(fields: dict[bytes, bytes]) -> None:
    try:
        msg = JobMessage.from_fields(fields)
    except ValueError:
        return
    assert isinstance(msg, JobMessage) and isinstance(msg.job_id, str) and isinstance(msg.input, dict)


@settings(max_examples=300)
@given(
    st.fixed_dictionaries({
        "namespace": texts, "pool": texts, "handler": texts, "job_id": texts,
        "input": st.dictionaries(texts, json_values, max_size=4),
        "priority": st.sampled_from(list(Priority)),
        "max_attempts": st.integers(1, 1000),
    })
)
def test_a_message_survives_its_own_encoding_whatever_its_text(fields: dict[str, object]) -> None:
    msg = JobMessage.model_validate({**fields, "uid": fields["job_id"]})
    encoded = {k.encode(): v.encode() for k, v in msg.to_fields().items()}
    assert JobMessage.from_fields(encoded) == msg


@given(st.lists(st.tuples(st.integers(1, 4), texts, texts, texts, st.booleans()), max_size=20))
def test_a_settle_batch_encodes_to_json_that_reads_back_as_the_same_writes(
    items: list[tuple[int, str, str, str, bool]],
) -> None:
    writes = [wire.requeue(s, entry, job_id, message, uncount=uncount, owner="w")
              for s, entry, job_id, message, uncount in items]
    assert json.loads(wire.encode_writes(writes)) == writes


counts = st.integers(0, 10**9)
rates = st.floats(0, 1e9, allow_nan=False) | st.just(math.inf)
durations = st.none() | st.floats(-1e9, 1e9, allow_nan=False)


@settings(max_examples=500)
@given(
    backlog=counts, in_flight=counts, rate=rates, duration=durations, busy=st.integers(0, 1000),
    retries=st.integers(0, 10**6), lo=st.integers(0, 50), span=st.integers(0, 100),
    concurrency=st.integers(1, 1000), current=st.integers(0, 200), now=st.floats(0, 1e9),
)
def test_the_scaling_decision_stays_in_bounds_and_never_strands_work_whatever_the_load(
    *, backlog: int, in_flight: int, rate: float, duration: float | None, busy: int, retries: int,
    lo: int, span: int, concurrency: int, current: int, now: float,
) -> None:
    policy = AutoscalingPolicy(min_replicas=lo, max_replicas=lo + span, concurrency=concurrency)
    load = Load(backlog=backlog, in_flight=in_flight, arrival_rate=rate, duration_estimate=duration,
                busy_workers=busy, live_workers=busy, retries_waiting=retries)
    decision = decide(load, policy, current, ScalerState(), now)
    hi = lo + span
    assert lo <= decision.desired <= hi, "outside minReplicas..maxReplicas"
    # Only maxReplicas itself may take a pool below its busy workers (they then drain, not die).
    assert decision.desired >= min(busy, current, hi), "a scale-down below the busy workers"
    if not load.idle and hi > 0:
        assert decision.desired >= 1, "work waits or runs, yet the pool went to zero"
    assert decision.reason
