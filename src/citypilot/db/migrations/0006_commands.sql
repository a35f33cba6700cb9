-- Commands to equipment: a batch is what an operator asked, each asset gets its own command (its id is
-- what the device sees and acknowledges). See commands/lifecycle.py for the states.

CREATE TABLE command_batches (
    id               text PRIMARY KEY,
    kind             text NOT NULL,
    command          text NOT NULL,
    params           jsonb NOT NULL DEFAULT '{}'::jsonb,
    reason           text NOT NULL,
    selector         jsonb NOT NULL DEFAULT '{}'::jsonb,
    status           text NOT NULL CHECK (status IN ('pending_confirmation', 'pending_approval', 'authorised',
                                                     'finished', 'cancelled')),
    requested_by     text NOT NULL,
    requested_role   text NOT NULL,
    requested_at     timestamptz NOT NULL DEFAULT now(),
    confirmed_by     text,
    confirmed_at     timestamptz,
    approval_needed  boolean NOT NULL DEFAULT false,
    approved_by      text,
    approved_at      timestamptz,
    authorised_at    timestamptz,
    finished_at      timestamptz,
    expires_at       timestamptz,
    idempotency_key  text,
    parent_command   text,           -- a follow-up (bollards rising again) names the command it follows
    total            integer NOT NULL,
    UNIQUE (requested_by, idempotency_key)
);
CREATE INDEX command_batches_requested_idx ON command_batches (requested_at DESC);
CREATE INDEX command_batches_pending_idx ON command_batches (status) WHERE status IN ('pending_confirmation', 'pending_approval', 'authorised');

CREATE TABLE commands (
    id               text PRIMARY KEY,
    batch_id         text NOT NULL REFERENCES command_batches (id),
    asset_id         text NOT NULL,
    device_id        text NOT NULL,   -- who receives it: the asset, or the gateway it reports through
    kind             text NOT NULL,
    command          text NOT NULL,
    params           jsonb NOT NULL DEFAULT '{}'::jsonb,
    status           text NOT NULL CHECK (status IN ('requested', 'sent', 'done', 'rejected', 'failed', 'timed_out',
                                                     'expired', 'refused', 'cancelled')),
    reason           text,            -- why it was refused, or what the device said
    attempts         integer NOT NULL DEFAULT 0,
    max_attempts     integer NOT NULL DEFAULT 1,
    created_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz,
    next_attempt_at  timestamptz,
    answered_at      timestamptz,
    expires_at       timestamptz,
    answer           jsonb,           -- the device's acknowledgement as received
    follow_up        jsonb,           -- {"command": "raise", "after_s": 600}: sent by the control centre once done
    follow_up_at     timestamptz,
    follow_up_done   boolean NOT NULL DEFAULT false
);
CREATE INDEX commands_batch_idx ON commands (batch_id, status);
CREATE INDEX commands_due_idx ON commands (next_attempt_at) WHERE status = 'sent';
CREATE INDEX commands_follow_up_idx ON commands (follow_up_at) WHERE follow_up_at IS NOT NULL AND NOT follow_up_done;
CREATE INDEX commands_asset_idx ON commands (asset_id, created_at DESC);
