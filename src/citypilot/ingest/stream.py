"""The ingest stream and its consumer on JetStream, created or brought up to date at start.

Work-queue retention: a message stays in the stream until a worker acknowledges it, after its batch
is committed to PostgreSQL; when the database is slow, messages wait on disk (bounded by
``max_bytes``), not in memory. One durable push consumer delivers to a queue group shared by every
worker: each message goes to one worker; the server hands out at most ``MAX_ACK_PENDING``
unacknowledged messages (back-pressure); a worker that dies leaves its unacknowledged messages to be
redelivered to the others after ``ACK_WAIT_S``. (A push consumer rather than pull fetches: nats-py's
fetch costs a task and a timer per message, a quarter of a worker's time.)
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from .protocol import CONSUMER, STREAM, STREAM_SUBJECTS

ACK_WAIT_S = 10.0  # a worker holding a batch longer (database down) reports progress every second
MAX_ACK_PENDING = 20_000
DELIVER_SUBJECT = "citypilot.ingest.deliver"
DELIVER_GROUP = "ingest-workers"


def stream_config(max_bytes: int, replicas: int = 1) -> StreamConfig:
    return StreamConfig(
        num_replicas=replicas,
        name=STREAM, subjects=list(STREAM_SUBJECTS), retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE, max_bytes=max_bytes, discard=DiscardPolicy.NEW,
        max_msg_size=1024 * 1024, duplicate_window=120.0,
        description="citypilot device messages awaiting ingestion",
    )


def consumer_config() -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=CONSUMER, ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
        ack_wait=ACK_WAIT_S, max_deliver=-1, max_ack_pending=MAX_ACK_PENDING,
        deliver_subject=DELIVER_SUBJECT, deliver_group=DELIVER_GROUP,
        description="citypilot ingest workers (shared queue group)",
    )


async def ensure_stream(js: JetStreamContext, max_bytes: int, replicas: int = 1) -> None:
    config = stream_config(max_bytes, replicas)
    try:
        await js.stream_info(STREAM)
    except NotFoundError:
        await js.add_stream(config)
    else:
        await js.update_stream(config)
    try:
        info = await js.consumer_info(STREAM, CONSUMER)
    except NotFoundError:
        await js.add_consumer(STREAM, consumer_config())
    else:
        if info.config.deliver_subject != DELIVER_SUBJECT:  # an earlier pull consumer: replace it
            await js.delete_consumer(STREAM, CONSUMER)
            await js.add_consumer(STREAM, consumer_config())
