"""The stream of what the ingest workers and offline detection report (twin deltas, device events,
connectivity transitions), kept by JetStream for the alarm engine.

The workers publish these on core NATS after each commit (``ingest/protocol.py``); capturing the same
subjects in a stream makes them durable without changing the publishers: the engine consumes them
through a durable consumer and acknowledges a batch only after its alarms are committed, so an engine
that dies (or a leader that changes) loses nothing: the next one resumes where the last acknowledged.
Limits retention (an hour, a size cap): if no engine runs for longer, the engine's start-up
reconciliation over the twin catches up on states; only device events older than that are missed.
"""

from __future__ import annotations

from nats.aio.client import Client as NATS
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

STREAM = "CITYPILOT_CHANGES"
SUBJECTS = ["citypilot.twin.>", "citypilot.connectivity.>", "citypilot.device-event.>"]
CONSUMER = "alarm-engine"
# Outside citypilot.>: a push consumer's messages keep their original subjects (citypilot.twin...), so
# a deliver subject under citypilot.> would show every change twice to whoever listens to citypilot.>.
DELIVER_SUBJECT = "_citypilot.alarms.deliver"
ACK_WAIT_S = 30.0
MAX_ACK_PENDING = 2_000


async def ensure_changes_stream(nc: NATS, max_bytes: int = 1024**3, replicas: int = 1) -> None:
    js = nc.jetstream()
    config = StreamConfig(name=STREAM, subjects=SUBJECTS, retention=RetentionPolicy.LIMITS, storage=StorageType.FILE,
                          max_bytes=max_bytes, max_age=3600.0, discard=DiscardPolicy.OLD, num_replicas=replicas,
                          max_msg_size=1024 * 1024, description="twin deltas, device events and connectivity, for the alarm engine")
    try:
        await js.stream_info(STREAM)
    except NotFoundError:
        await js.add_stream(config)
    else:
        await js.update_stream(config)
    try:
        info = await js.consumer_info(STREAM, CONSUMER)
    except NotFoundError:
        info = None
    if info is not None and info.config.deliver_subject != DELIVER_SUBJECT:  # made by an earlier version
        await js.delete_consumer(STREAM, CONSUMER)
        info = None
    if info is None:
        # First start: what is already in the stream is older than the reconciliation that follows.
        await js.add_consumer(STREAM, ConsumerConfig(
            durable_name=CONSUMER, ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.NEW, ack_wait=ACK_WAIT_S,
            max_deliver=-1, max_ack_pending=MAX_ACK_PENDING, deliver_subject=DELIVER_SUBJECT,
            description="citypilot alarm engine (one leader at a time)"))
