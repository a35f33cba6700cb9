-- Device ingestion: the live twin (current state of every asset), time series, dead letters,
-- device events and device credentials.

-- One row per asset that has ever reported: its latest values by the device's own clock, and when we
-- last heard from it (by ours). Late messages never move ts backwards (see ingest/store.py).
CREATE TABLE twin (
    asset_id       text PRIMARY KEY,
    kind           text NOT NULL,
    ts             timestamptz NOT NULL,
    received_at    timestamptz NOT NULL,
    values         jsonb NOT NULL DEFAULT '{}'::jsonb,
    last_seen      timestamptz NOT NULL,
    connectivity   text NOT NULL DEFAULT 'online'
                   CHECK (connectivity IN ('online', 'offline', 'unreachable')),
    offline_since  timestamptz,
    stream_seq     bigint NOT NULL DEFAULT 0
) WITH (fillfactor = 70);
-- Only the kind is indexed: every message changes values and last_seen, and leaving them out of every
-- index lets PostgreSQL update the row in place (HOT), with the free space fillfactor leaves in each page.
CREATE INDEX twin_kind_idx ON twin (kind, asset_id);

-- Every accepted reading, by asset and device time. Partitioned by day so that retention drops whole
-- partitions. (asset_id, ts) is the reading's identity: a redelivered or duplicated message inserts
-- nothing twice.
CREATE TABLE readings (
    asset_id     text NOT NULL,
    ts           timestamptz NOT NULL,
    received_at  timestamptz NOT NULL,
    values       jsonb NOT NULL,
    PRIMARY KEY (asset_id, ts)
) PARTITION BY RANGE (ts);

-- Messages that could not be applied, with why and the bytes as received (cut at 64 KiB; the size
-- says how large the original was).
CREATE TABLE dead_letters (
    id            bigserial PRIMARY KEY,
    received_at   timestamptz NOT NULL DEFAULT now(),
    source        text NOT NULL,
    subject       text NOT NULL,
    device_id     text,
    asset_id      text,
    reason_code   text NOT NULL,
    reason        text NOT NULL,
    payload       bytea NOT NULL,
    payload_size  integer NOT NULL,
    stream_seq    bigint,
    stored_at     timestamptz,  -- when the broker stored the message: with stream_seq, names it for good
    -- a redelivered message is dead-lettered once, even if the stream was recreated since
    -- (NULLS NOT DISTINCT: PostgreSQL 15 and later)
    UNIQUE NULLS NOT DISTINCT (stream_seq, stored_at, asset_id, reason_code)
);
CREATE INDEX dead_letters_received_idx ON dead_letters (received_at DESC, id DESC);
CREATE INDEX dead_letters_device_idx ON dead_letters (device_id, id DESC);

-- Discrete events reported by devices (fault codes, alarms, door opened...), as reported.
CREATE TABLE device_events (
    asset_id     text NOT NULL,
    ts           timestamptz NOT NULL,
    code         text NOT NULL,
    received_at  timestamptz NOT NULL,
    severity     text,
    message      text,
    data         jsonb NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (asset_id, ts, code)
);

-- Credentials of devices and gateways for the HTTP ingest endpoint (and, later, MQTT). Only a hash
-- of the secret is kept: it is shown once, when issued.
CREATE TABLE device_credentials (
    id            text PRIMARY KEY,
    device_id     text NOT NULL REFERENCES assets (id),
    secret_hash   text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    text NOT NULL,
    revoked_at    timestamptz
);
CREATE INDEX device_credentials_device_idx ON device_credentials (device_id);

-- Ingest workers keep a cache of the registry and refresh what changed since their last look.
CREATE INDEX assets_updated_idx ON assets (updated_at);
