"""The ingestion domain without servers: message validation, merging, subjects and deadlines."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citypilot.equipment.catalog import default_catalog
from citypilot.ingest import protocol
from citypilot.ingest.connectivity import deadlines
from citypilot.ingest.normalise import REASONS, AcceptedReading, AssetInfo, Limits, normalise
from citypilot.ingest.store import NEVER, StagedReading, merge_readings, twin_updates
from citypilot.ingest.worker import ack_info

NOW = dt.datetime(2026, 11, 21, 22, 0, tzinfo=dt.timezone.utc)
REGISTRY = {
    "CAB-1": AssetInfo("CAB-1", "lighting_cabinet", "in_service", None),
    "SL-1": AssetInfo("SL-1", "street_light", "in_service", "CAB-1"),
    "SL-2": AssetInfo("SL-2", "street_light", "in_service", "CAB-1"),
    "SL-9": AssetInfo("SL-9", "street_light", "in_service", "CAB-7"),
    "SL-OLD": AssetInfo("SL-OLD", "street_light", "retired", "CAB-1"),
    "BUS-1": AssetInfo("BUS-1", "bus", "in_service", None),
}


def run(device: str, payload: object, channel: str = "telemetry", **kwargs):
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return normalise(device, channel, raw, received_at=NOW, lookup=REGISTRY.get, catalog=default_catalog(),
                     limits=Limits(), **kwargs)


def reasons(outcome) -> list[tuple[str, str | None]]:
    return [(r.reason_code, r.asset_id) for r in outcome.rejections]


def test_a_single_reading_is_accepted_with_its_own_timestamp():
    outcome = run("SL-1", {"ts": "2026-11-21T22:59:30+01:00", "values": {"power_w": 38.5, "dimming_pct": 70}})
    assert outcome.rejections == []
    [reading] = outcome.readings
    assert (reading.asset_id, reading.kind) == ("SL-1", "street_light")
    assert reading.ts == dt.datetime(2026, 11, 21, 21, 59, 30, tzinfo=dt.timezone.utc)
    assert reading.values == {"power_w": 38.5, "dimming_pct": 70}


def test_a_reading_without_timestamp_takes_the_receive_time():
    [reading] = run("SL-1", {"values": {"power_w": 1}}).readings
    assert reading.ts == NOW


def test_a_gateway_batch_applies_good_readings_and_rejects_the_others_alone():
    outcome = run("CAB-1", {"ts": "2026-11-21T21:59:00Z", "readings": [
        {"asset": "SL-1", "values": {"power_w": 30}},
        {"asset": "SL-2", "values": {"power_w": -5}},
        {"asset": "SL-9", "values": {"power_w": 3}},
        {"asset": "BUS-1", "values": {"speed_kmh": 3}},
        {"asset": "GHOST", "values": {"power_w": 3}},
        {"asset": "SL-OLD", "values": {"power_w": 3}},
        {"values": {"mains": "ok"}},
    ]})
    assert [(r.asset_id, r.values) for r in outcome.readings] == [("SL-1", {"power_w": 30}), ("CAB-1", {"mains": "ok"})]
    assert reasons(outcome) == [("invalid_value", "SL-2"), ("not_reported_by", "SL-9"), ("not_reported_by", "BUS-1"),
                                ("unknown_device", "GHOST"), ("retired_device", "SL-OLD")]


@pytest.mark.parametrize("device, payload, code", [
    ("SL-1", b"{not json", "malformed"),
    ("SL-1", b"[1, 2]", "malformed"),
    ("SL-1", {"values": {"power_w": 1}, "extra": 1}, "malformed"),
    ("SL-1", {"values": {"power_w": 1}, "readings": []}, "malformed"),
    ("SL-1", {"ts": "2026-11-21T22:00:00", "values": {"power_w": 1}}, "malformed"),  # no time zone
    ("GHOST-1", {"values": {"power_w": 1}}, "unknown_device"),
    ("PS//1", {"values": {"occupied": True}}, "unknown_device"),
    ("SL-OLD", {"values": {"power_w": 1}}, "retired_device"),
    ("SL-1", {}, "schema"),
    ("SL-1", {"values": {}}, "schema"),
    ("SL-1", {"readings": []}, "schema"),
    ("SL-1", {"values": {"colour": "red"}}, "schema"),
    ("SL-1", {"values": {"power_w": "high"}}, "schema"),
    ("SL-1", {"type": "ParkingSpot", "values": {"power_w": 1}}, "schema"),
    ("SL-1", {"values": {"power_w": -1}}, "invalid_value"),
    ("SL-1", {"values": {"power_state": "blinking"}}, "invalid_value"),
    ("BUS-1", {"values": {"lat": 48.85, "lon": 2.35}}, "off_map"),
    ("BUS-1", {"values": {"lat": 47.32}}, "schema"),
    ("SL-1", {"ts": "2026-11-21T23:30:00Z", "values": {"power_w": 1}}, "future_timestamp"),
    ("SL-1", {"ts": "1999-01-01T00:00:00Z", "values": {"power_w": 1}}, "too_old"),
])
def test_every_bad_message_is_rejected_with_its_reason(device, payload, code):
    outcome = run(device, payload)
    assert outcome.readings == []
    assert [r.reason_code for r in outcome.rejections] == [code]
    assert code in REASONS


def test_oversized_and_wrong_topic_are_rejected_before_decoding():
    big = json.dumps({"values": {"power_w": 1}, "pad": "x" * 300_000}).encode()
    assert reasons(run("SL-1", big)) == [("oversized", None)]
    assert reasons(run("SL-1", {"values": {"power_w": 1}}, authenticated_device="SL-2")) == [("wrong_topic", None)]
    assert run("SL-1", {"values": {"power_w": 1}}, authenticated_device="SL-1").readings


def test_events_are_validated_and_may_be_about_a_reported_asset():
    outcome = run("CAB-1", {"ts": "2026-11-21T21:59:00Z", "code": "lamp_failure", "severity": "major", "asset": "SL-1"},
                  channel="event")
    [event] = outcome.events
    assert (event.asset_id, event.code, event.severity) == ("SL-1", "lamp_failure", "major")
    assert reasons(run("SL-1", {"code": "lamp_failure", "severity": "apocalyptic"}, channel="event")) == [("invalid_value", "SL-1")]
    assert reasons(run("SL-1", {"code": "Not A Code"}, channel="event")) == [("malformed", None)]
    assert reasons(run("CAB-1", {"code": "x", "asset": "BUS-1"}, channel="event")) == [("not_reported_by", "BUS-1")]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_are_applied_or_rejected_never_an_exception(payload):
    outcome = run("SL-1", payload)
    assert outcome.readings or outcome.rejections
    assert all(r.reason_code in REASONS for r in outcome.rejections)


def staged(asset: str, seconds: int, seq: int, **values) -> StagedReading:
    ts = NOW + dt.timedelta(seconds=seconds)
    return StagedReading(AcceptedReading(asset, "street_light", ts, values), NOW, seq)


def test_readings_of_one_instant_merge_and_the_later_delivery_wins():
    merged = merge_readings([staged("SL-1", 0, 2, power_w=5), staged("SL-1", 0, 1, power_w=4, dimming_pct=50),
                             staged("SL-1", 1, 3, power_w=6)])
    by_ts = {(m.reading.asset_id, m.reading.ts): m.reading.values for m in merged}
    assert by_ts == {("SL-1", NOW): {"power_w": 5, "dimming_pct": 50},
                     ("SL-1", NOW + dt.timedelta(seconds=1)): {"power_w": 6}}


def test_the_twin_takes_every_reading_of_a_batch_in_device_time_order():
    updates = twin_updates([staged("SL-1", 5, 1, power_w=9), staged("SL-1", 2, 2, fault="lamp_failure"),
                            staged("SL-1", 3, 3, power_w=7), staged("SL-2", 1, 4, power_w=1)])
    assert updates["SL-1"].values == {"fault": "lamp_failure", "power_w": 9}  # 9 is newer than 7
    assert updates["SL-1"].ts == NOW + dt.timedelta(seconds=5)
    assert updates["SL-2"].values == {"power_w": 1}


def test_subjects_and_topics():
    assert protocol.topic("SL-1", "telemetry") == "citypilot/v1/SL-1/telemetry"
    assert protocol.subject("SL-1", "telemetry") == "citypilot.v1.SL-1.telemetry"
    assert protocol.parse_subject("citypilot.v1.SL-1.telemetry") == ("SL-1", "telemetry")
    assert protocol.parse_subject("citypilot.v1.SL-1.cmd-ack") == ("SL-1", "cmd-ack")
    assert protocol.parse_subject("other.v1.SL-1.telemetry") is None
    assert protocol.parse_subject("citypilot.v1.SL-1") is None


def test_stream_sequence_and_time_come_from_the_ack_subject():
    assert ack_info("$JS.ACK.CITYPILOT_INGEST.ingest.1.12345.678.1763762400000000000.42") == (12345, 1763762400000000000)
    assert ack_info("$JS.ACK.hub.ACCHASH.CITYPILOT_INGEST.ingest.1.12345.678.1763762400000000000.42.tok") == \
        (12345, 1763762400000000000)
    for stray in (None, "", "_INBOX.abc", "$JS.ACK.x.y", "$JS.ACK.S.C.1.notanumber.2.3.4"):
        assert ack_info(stray) is None


def test_offline_deadlines_follow_the_catalogue():
    limits = deadlines(default_catalog(), grace_percent=50, min_grace_s=10)
    assert limits["bus"] == 15.0            # 5 s + max(10 s, 2.5 s)
    assert limits["street_light"] == 1350.0  # 900 s + 450 s
    assert limits["lighting_cabinet"] == 450.0
    assert all(isinstance(v, float) for v in limits.values())


def test_never_is_older_than_any_reading():
    assert NEVER < dt.datetime(1900, 1, 1, tzinfo=dt.timezone.utc)


def test_readings_older_than_the_stored_state_stay_out_of_the_twin():
    """A late reading and a newer one in the same batch: only the newer one reaches the live state."""
    stored = NOW
    updates = twin_updates([staged("SL-1", -300, 1, power_w=3.0), staged("SL-1", 1, 2, dimming_pct=41),
                            staged("SL-2", -10, 3, power_w=9.0)], {"SL-1": stored, "SL-2": stored})
    assert updates["SL-1"].values == {"dimming_pct": 41}
    assert "SL-2" not in updates  # only late readings: history and a sign of life, not the live state
    same_instant = twin_updates([staged("SL-1", 0, 1, power_w=5.0)], {"SL-1": stored})
    assert same_instant["SL-1"].values == {"power_w": 5.0}  # the same instant merges


def test_one_reading_per_asset_a_gateways_batch_follows_the_same_rules():
    """The path for batches where no asset repeats (a cabinet's lights): late readings stay out, the
    same instant merges, an asset never seen before is taken as it comes."""
    updates = twin_updates([staged("SL-1", -300, 1, power_w=3.0), staged("SL-2", 0, 2, power_w=5.0),
                            staged("SL-3", 7, 3, power_w=1.0)], {"SL-1": NOW, "SL-2": NOW})
    assert "SL-1" not in updates
    assert updates["SL-2"].values == {"power_w": 5.0} and updates["SL-3"].values == {"power_w": 1.0}
    assert updates["SL-3"].seq == 3
