"""Reading the embedded broker's log for refused MQTT publishes (the lines as nats-server 2.15 writes them)."""

from __future__ import annotations

import asyncio

from citypilot.runtime.broker_violations import BrokerViolationWatch, dead_letter, parse

REFUSED = ('[17882] 2026/11/22 03:35:38.834510 [ERR] 127.0.0.1:42088 - mid:138 - "sensor-7" - Publish Violation'
           ' - Subject "citypilot.v1.SL-2.telemetry"')
OTHERS = [
    '[17882] 2026/11/22 03:35:38.837305 [ERR] 127.0.0.1:42088 - mid:138 - "sensor-7" - Subscription Violation'
    ' - Subject "citypilot.cmd.v1.SL-2", SID citypilot.cmd.v1.SL-2',
    '[17882] 2026/11/22 03:35:39.000001 [ERR] 127.0.0.1:50000 - cid:9 - "citypilot" - Publish Violation'
    ' - Subject "x.y"',  # a NATS-protocol client: citypilot's own processes, not a device
    "[17882] 2026/11/22 03:35:40.000000 [INF] Reloaded server configuration",
    "garbage",
]


def test_only_refused_mqtt_publishes_become_dead_letters_of_the_device_whose_topic_was_tried():
    refusals = parse([REFUSED, *OTHERS])
    assert len(refusals) == 1
    letter = dead_letter(refusals[0])
    assert (letter.reason_code, letter.source, letter.device_id, letter.subject, letter.payload) == (
        "wrong_topic", "mqtt", "SL-2", "citypilot.v1.SL-2.telemetry", b"")
    assert "'sensor-7'" in letter.reason and "127.0.0.1:42088" in letter.reason
    assert letter.stored_at is not None and letter.stored_at.microsecond == 834510  # tells two refusals apart


def test_the_log_is_read_from_where_it_was_and_again_from_the_top_after_a_truncation(tmp_path):
    log = tmp_path / "nats-server.log"
    log.write_text(REFUSED + "\n")
    watch = BrokerViolationWatch(log, pool=None)  # type: ignore[arg-type]

    async def start_and_stop() -> None:
        await watch.start()
        await watch.stop()

    asyncio.run(start_and_stop())
    assert watch._read() == ([], log.stat().st_size)  # what was there before start is not read
    with log.open("a") as out:
        out.write(OTHERS[0] + "\n" + REFUSED[:40])  # the last line still being written
    lines, offset = watch._read()
    assert lines == [OTHERS[0]] and offset == log.stat().st_size - 40
    log.write_text(REFUSED + "\n")  # copytruncate: shorter than where we were
    watch._offset = offset
    assert watch._read()[0] == [REFUSED]
