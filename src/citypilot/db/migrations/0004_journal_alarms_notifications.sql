-- The event journal, alarms and the notification outbox (issue: events, alarms and the live feed).

-- The journal: everything that happens in the urban space, append-only. Ids are given by a trigger
-- under the lock of journal_head's single row, held to the end of the inserting transaction: ids are
-- committed in order, so a reader that has seen id N has seen everything before it (the live feed
-- resumes from an id without a gap). Each entry carries the hash of the previous one (a chain that
-- `citypilot audit verify` checks): changing or deleting an entry breaks the chain after it.
CREATE TABLE journal (
    id           bigint PRIMARY KEY,
    at           timestamptz NOT NULL,               -- when it happened (device time for device events)
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    domain       text NOT NULL,                      -- the kind's domain (lighting, traffic...) or 'operations'
    type         text NOT NULL,                      -- alarm.raised, device.event, connectivity.offline...
    severity     text,
    asset_id     text,
    kind         text,
    commune      text,
    lat          double precision,
    lon          double precision,
    pt           point,                              -- Lambert-93 metres, like assets.pt
    alarm_id     bigint,
    actor        text NOT NULL,                      -- a user name, or 'system' / 'device'
    restricted   boolean NOT NULL DEFAULT false,     -- public-safety: police, supervisors and admins only
    service      text,                               -- the service in charge, when there is one
    summary      text NOT NULL,
    data         jsonb NOT NULL DEFAULT '{}'::jsonb,
    prev_hash    bytea NOT NULL,
    hash         bytea NOT NULL
);
CREATE INDEX journal_at_idx ON journal (at);
CREATE INDEX journal_asset_idx ON journal (asset_id, id) WHERE asset_id IS NOT NULL;
CREATE INDEX journal_commune_idx ON journal (commune, id) WHERE commune IS NOT NULL;
CREATE INDEX journal_domain_type_idx ON journal (domain, type, id);
CREATE INDEX journal_alarm_idx ON journal (alarm_id, id) WHERE alarm_id IS NOT NULL;
CREATE INDEX journal_pt_gist ON journal USING gist (pt) WHERE pt IS NOT NULL;

CREATE TABLE journal_head (
    one        boolean PRIMARY KEY DEFAULT true CHECK (one),
    last_id    bigint NOT NULL,
    last_hash  bytea NOT NULL
);
INSERT INTO journal_head VALUES (true, 0, decode(repeat('00', 32), 'hex'));

-- What the hash covers, as text: the verifier (citypilot audit verify) rebuilds the same string.
CREATE FUNCTION citypilot_journal_canonical(j journal) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT concat_ws(chr(31), j.id::text,
                     to_char(j.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                     j.domain, j.type, coalesce(j.severity, ''), coalesce(j.asset_id, ''),
                     coalesce(j.alarm_id::text, ''), j.actor, j.restricted::text, coalesce(j.service, ''),
                     j.summary, j.data::text)
$$;

CREATE FUNCTION citypilot_journal_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    head journal_head%ROWTYPE;
BEGIN
    SELECT * INTO head FROM journal_head WHERE one FOR UPDATE;
    NEW.id := head.last_id + 1;
    NEW.prev_hash := head.last_hash;
    NEW.hash := sha256(head.last_hash || convert_to(citypilot_journal_canonical(NEW), 'UTF8'));
    UPDATE journal_head SET last_id = NEW.id, last_hash = NEW.hash WHERE one;
    RETURN NEW;
END $$;
CREATE TRIGGER journal_chain BEFORE INSERT ON journal FOR EACH ROW EXECUTE FUNCTION citypilot_journal_chain();
CREATE TRIGGER journal_append_only BEFORE UPDATE OR DELETE ON journal
    FOR EACH ROW EXECUTE FUNCTION citypilot_append_only();
CREATE TRIGGER journal_no_truncate BEFORE TRUNCATE ON journal
    FOR EACH STATEMENT EXECUTE FUNCTION citypilot_append_only();

-- Wake the live feeds once per inserting statement (they read what is new themselves).
CREATE FUNCTION citypilot_journal_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('citypilot_journal', '');
    RETURN NULL;
END $$;
CREATE TRIGGER journal_notify AFTER INSERT ON journal FOR EACH STATEMENT EXECUTE FUNCTION citypilot_journal_notify();

-- Alarms: one row per (source, type), deduplicated; a raise after it cleared is a new occurrence of
-- the same alarm. Every transition is also a journal entry.
CREATE TABLE alarms (
    id               bigserial PRIMARY KEY,
    source           text NOT NULL,                  -- the asset id, or 'commune:<name>' for a storm
    type             text NOT NULL,
    rule_id          text NOT NULL,
    asset_id         text,
    kind             text,
    domain           text NOT NULL,
    service          text,
    notify           text[] NOT NULL DEFAULT '{}',   -- the services told
    commune          text,
    lat              double precision,
    lon              double precision,
    pt               point,
    restricted       boolean NOT NULL DEFAULT false,
    severity         text NOT NULL CHECK (severity IN ('critical', 'major', 'minor', 'warning')),
    state            text NOT NULL CHECK (state IN ('raised', 'acknowledged', 'cleared', 'closed')),
    title            text NOT NULL,
    occurrence       integer NOT NULL DEFAULT 1,     -- 1 + times raised again after clearing
    count            integer NOT NULL DEFAULT 1,     -- every raise, repeats included
    first_seen       timestamptz NOT NULL,           -- of the alarm, over all its occurrences
    raised_at        timestamptz NOT NULL,           -- start of the current occurrence
    last_seen        timestamptz NOT NULL,           -- latest raise (device time)
    acknowledged_at  timestamptz,
    acknowledged_by  text,
    cleared_at       timestamptz,
    cleared_by       text,
    clear_reason     text,
    closed_at        timestamptz,
    closed_by        text,
    shelved_until    timestamptz,
    shelved_by       text,
    shelve_reason    text,
    escalated_at     timestamptz,
    parent_id        bigint REFERENCES alarms (id),  -- folded into a correlation or storm alarm
    comments         integer NOT NULL DEFAULT 0,
    data             jsonb NOT NULL DEFAULT '{}'::jsonb,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source, type)
);
CREATE INDEX alarms_open_idx ON alarms (state, severity, id) WHERE state <> 'closed';
CREATE INDEX alarms_asset_idx ON alarms (asset_id) WHERE asset_id IS NOT NULL;
CREATE INDEX alarms_parent_idx ON alarms (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX alarms_commune_idx ON alarms (commune, id);
CREATE INDEX alarms_pt_gist ON alarms USING gist (pt) WHERE pt IS NOT NULL;

-- Outbound notifications (webhooks, e-mail): an outbox written in the alarm's transaction, sent by
-- one dispatcher with retries. ``key`` makes a notification idempotent (alarm, occurrence, event, channel).
CREATE TABLE notifications (
    id               bigserial PRIMARY KEY,
    key              text NOT NULL UNIQUE,
    channel          text NOT NULL,
    alarm_id         bigint REFERENCES alarms (id),
    service          text,
    severity         text NOT NULL,
    event            text NOT NULL,                  -- raised | escalated | cleared
    payload          jsonb NOT NULL,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz
);
CREATE INDEX notifications_due_idx ON notifications (next_attempt_at) WHERE status = 'pending';
CREATE INDEX notifications_alarm_idx ON notifications (alarm_id);
