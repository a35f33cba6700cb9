"""How workers share the partitions of the ingest stream (the decision; the locks are tested for real in
tests/integration/test_ingest.py), and the partitioned subjects."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from citypilot.ingest import protocol
from citypilot.ingest.partitions import plan
from citypilot.ingest.stream import MISFIT, Layout


def test_a_lone_worker_takes_every_partition():
    assert plan(set(), members=1, partitions=16).take == 16


def test_a_worker_joining_makes_the_holder_give_back_half_the_highest_first():
    decision = plan(set(range(16)), members=2, partitions=16)
    assert decision.take == 0 and decision.give_back == list(range(8, 16))  # partition 0 (and the misfit) stays


def test_three_workers_share_sixteen_without_anyone_over_its_share():
    assert plan({0, 1, 2, 3, 4, 5}, members=3, partitions=16).give_back == []
    assert plan({6, 7, 8, 9}, members=3, partitions=16).take == 2


@given(st.integers(1, 20), st.integers(1, 32), st.sets(st.integers(0, 31)))
def test_the_plan_never_asks_for_more_than_a_fair_share(members, partitions, owned):
    owned = {p for p in owned if p < partitions}
    decision = plan(owned, members, partitions)
    share = -(-partitions // members)
    assert len(owned) - len(decision.give_back) + decision.take <= share
    assert set(decision.give_back) <= owned
    assert decision.take == 0 or not decision.give_back


def test_the_partitioned_subject_still_names_the_device_and_the_channel():
    assert protocol.parse_subject("citypilot.in.7.SL-1.telemetry") == ("SL-1", "telemetry")
    assert protocol.parse_subject("citypilot.v1.SL-1.telemetry") == ("SL-1", "telemetry")
    assert protocol.parse_subject("citypilot.in.x.SL-1.telemetry") is None
    assert protocol.device_subject("citypilot.in.12.SL-1.state") == "citypilot.v1.SL-1.state"
    assert protocol.device_subject("citypilot.v1.SL-1") == "citypilot.v1.SL-1"


def test_each_partition_has_its_own_filter_and_the_misfit_consumer_takes_the_rest():
    layout = Layout(16, transform=True)
    assert layout.filter_subject(3) == "citypilot.in.3.>"
    assert layout.filter_subject(MISFIT) == "citypilot.v1.>" and layout.owner_of(MISFIT) == 0
    assert len(layout.consumers()) == 17
    single = Layout(1, transform=False)
    assert single.consumers() == [0] and single.filter_subject(0) == "citypilot.v1.>"
