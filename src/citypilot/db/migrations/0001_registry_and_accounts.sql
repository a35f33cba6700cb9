-- Equipment registry, its append-only history, accounts and login sessions.
-- Geography without PostGIS: lat/lon for display, a core point in Lambert-93 metres (EPSG:2154)
-- with a GiST index for bounding-box, radius and nearest queries.

CREATE TABLE assets (
    id            text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$'),
    kind          text NOT NULL,
    name          text NOT NULL,
    commune       text NOT NULL,
    lat           double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon           double precision NOT NULL CHECK (lon BETWEEN -180 AND 180),
    pt            point NOT NULL,
    geometry      jsonb,
    address       text,
    service       text NOT NULL,
    manufacturer  text,
    model         text,
    installed_on  date,
    status        text NOT NULL CHECK (status IN ('planned', 'in_service', 'out_of_service', 'retired')),
    reported_by   text REFERENCES assets (id) DEFERRABLE INITIALLY DEFERRED,
    attributes    jsonb NOT NULL DEFAULT '{}'::jsonb,
    search_text   text NOT NULL,
    version       integer NOT NULL DEFAULT 1,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (reported_by IS NULL OR reported_by <> id)
);
CREATE INDEX assets_pt_gist ON assets USING gist (pt);
CREATE INDEX assets_kind_idx ON assets (kind, id);
CREATE INDEX assets_commune_idx ON assets (commune, id);
CREATE INDEX assets_status_idx ON assets (status, id);
CREATE INDEX assets_service_idx ON assets (service, id);
CREATE INDEX assets_reported_by_idx ON assets (reported_by) WHERE reported_by IS NOT NULL;
CREATE INDEX assets_search_idx ON assets USING gin (to_tsvector('simple', search_text));

-- Every change of an identity sheet, with who and when. Append-only: updates and deletes are refused.
CREATE TABLE asset_history (
    seq       bigserial PRIMARY KEY,
    asset_id  text NOT NULL,
    at        timestamptz NOT NULL DEFAULT now(),
    actor     text NOT NULL,
    action    text NOT NULL,
    source    text NOT NULL,
    note      text,
    changes   jsonb NOT NULL
);
CREATE INDEX asset_history_asset_idx ON asset_history (asset_id, seq);

CREATE FUNCTION citypilot_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER asset_history_append_only BEFORE UPDATE OR DELETE ON asset_history
    FOR EACH ROW EXECUTE FUNCTION citypilot_append_only();
CREATE TRIGGER asset_history_no_truncate BEFORE TRUNCATE ON asset_history
    FOR EACH STATEMENT EXECUTE FUNCTION citypilot_append_only();

CREATE TABLE users (
    username             text PRIMARY KEY CHECK (username ~ '^[a-z0-9][a-z0-9._-]{1,63}$'),
    display_name         text,
    role                 text NOT NULL,
    service              text,
    password_hash        text NOT NULL,
    disabled             boolean NOT NULL DEFAULT false,
    created_at           timestamptz NOT NULL DEFAULT now(),
    password_changed_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sessions (
    id          text PRIMARY KEY,
    username    text NOT NULL REFERENCES users (username),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    client      text
);
CREATE INDEX sessions_user_idx ON sessions (username);
