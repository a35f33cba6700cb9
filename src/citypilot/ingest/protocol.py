"""The device protocol's names: MQTT topics, the NATS subjects they become, the stream and consumer.

NATS's MQTT listener turns the topic ``citypilot/v1/SL-1/telemetry`` into the subject
``citypilot.v1.SL-1.telemetry`` (``/`` becomes ``.``), which is why asset ids never contain a dot.
Documented for integrators in docs/protocol.md.
"""

from __future__ import annotations

TOPIC_ROOT = "citypilot/v1"
SUBJECT_ROOT = "citypilot.v1"

# What devices send. Everything under citypilot/v1/ is captured by the ingest stream: a message on
# another channel is dead-lettered, never silently dropped. ``cmd-ack`` (a device's answer to a
# command) goes through the same stream to the command store; commands *to* devices go out on their
# own root, citypilot/cmd/v1/{device}, so that the ingest stream never captures them.
INBOUND_CHANNELS = ("telemetry", "state", "event")
COMMAND_ACK_CHANNEL = "cmd-ack"
RESERVED_UPLINK_CHANNELS = (COMMAND_ACK_CHANNEL,)
COMMAND_TOPIC = "citypilot/cmd/v1/{device}"

STREAM = "CITYPILOT_INGEST"
STREAM_SUBJECTS = [f"{SUBJECT_ROOT}.>"]

# Partitioning by device (NATS >= 2.10): the stream stores citypilot.v1.{device}.{channel} as
# citypilot.in.{partition}.{device}.{channel}, the partition a hash of the device id, so that every
# message of one device goes through the one consumer of its partition, in order.
PARTITIONS = 16
PARTITIONED_ROOT = "citypilot.in"

# Published by the ingest workers after each committed batch, for the rules, the UI and later issues:
# one message per kind and batch, a JSON array of {asset, ts, changed, back_online, new}.
TWIN_DELTA_SUBJECT = "citypilot.twin.{kind}"
CONNECTIVITY_SUBJECT = "citypilot.connectivity.{kind}.{asset}"
DEVICE_EVENT_SUBJECT = "citypilot.device-event.{kind}.{asset}"

# Header set by the HTTP ingest endpoint: the device whose credentials were presented.
AUTHENTICATED_DEVICE_HEADER = "Citypilot-Device"
SOURCE_HEADER = "Citypilot-Source"


def topic(device_id: str, channel: str) -> str:
    return f"{TOPIC_ROOT}/{device_id}/{channel}"


def subject(device_id: str, channel: str) -> str:
    return f"{SUBJECT_ROOT}.{device_id}.{channel.replace('/', '.')}"


def parse_subject(value: str) -> tuple[str, str] | None:
    """(device id, channel) of a subject under citypilot.v1, or of its partitioned form under
    citypilot.in.{partition}; None if it is neither. The channel may be one devices are not allowed to
    use: the worker dead-letters those."""
    parts = value.split(".")
    if len(parts) >= 5 and f"{parts[0]}.{parts[1]}" == PARTITIONED_ROOT and parts[2].isdigit():
        return parts[3], ".".join(parts[4:])
    if len(parts) < 4 or f"{parts[0]}.{parts[1]}" != SUBJECT_ROOT:
        return None
    return parts[2], ".".join(parts[3:])


def device_subject(value: str) -> str:
    """The subject as the device published it (citypilot.v1...), whether or not the stream partitioned it:
    what dead letters show, so that an integrator recognises their topic."""
    parts = value.split(".")
    if len(parts) >= 5 and f"{parts[0]}.{parts[1]}" == PARTITIONED_ROOT and parts[2].isdigit():
        return ".".join([SUBJECT_ROOT, *parts[3:]])
    return value
