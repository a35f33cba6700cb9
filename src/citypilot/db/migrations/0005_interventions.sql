-- Interventions (issue: citizens' requests, the switchboard, work orders, dispatch, field tablets).

-- Clients of the Open311 API (a city's app, a partner's portal): a key is needed to create a request.
-- Only a hash of the key is kept: it is shown once, when issued.
CREATE TABLE open311_clients (
    id          text PRIMARY KEY,                 -- o311_<12 hex>, the key's public part
    name        text NOT NULL,
    key_hash    text NOT NULL,                    -- SHA-256 of the whole key
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text NOT NULL,
    revoked_at  timestamptz
);

-- A problem in public space that citizens reported (a defective light, a pothole). Several reports of
-- one problem (near-duplicates) are linked to one request: the later reporters follow it.
CREATE TABLE service_requests (
    id              bigserial PRIMARY KEY,
    service_code    text NOT NULL,
    service         text NOT NULL,                -- the city service in charge (lighting, roads...)
    status          text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    status_notes    text,
    description     text CHECK (length(description) <= 4000),
    lat             double precision NOT NULL,
    lon             double precision NOT NULL,
    pt              point NOT NULL,               -- Lambert-93 metres
    commune         text NOT NULL,
    address         text,
    address_id      text,
    zipcode         text,
    attributes      jsonb NOT NULL DEFAULT '{}'::jsonb,
    media_url       text,                         -- a URL the client gave (not fetched)
    priority        text NOT NULL,
    reports         integer NOT NULL DEFAULT 1,   -- reports linked to it, the first included
    work_order_id   bigint,
    asset_id        text,                         -- equipment the request is about, when known
    requested_at    timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    expected_at     timestamptz,                  -- the category's resolution deadline
    closed_at       timestamptz,
    version         integer NOT NULL DEFAULT 1
);
CREATE INDEX service_requests_open_pt_gist ON service_requests USING gist (pt) WHERE status = 'open';
CREATE INDEX service_requests_requested_idx ON service_requests (requested_at DESC, id DESC);
CREATE INDEX service_requests_updated_idx ON service_requests (updated_at DESC, id DESC);
CREATE INDEX service_requests_service_idx ON service_requests (service, status, id);
CREATE INDEX service_requests_code_idx ON service_requests (service_code, status, id);
CREATE INDEX service_requests_work_order_idx ON service_requests (work_order_id) WHERE work_order_id IS NOT NULL;

-- Each time someone reports: the requester's personal data lives here, apart from the public request,
-- and is shown only to the roles that need it. ``token`` answers Open311's GET tokens/{token}.
CREATE TABLE request_reports (
    id            bigserial PRIMARY KEY,
    request_id    bigint NOT NULL REFERENCES service_requests (id),
    token         uuid NOT NULL UNIQUE,
    channel       text NOT NULL CHECK (channel IN ('open311', 'switchboard', 'staff')),
    client        text NOT NULL,                  -- the Open311 client id or the agent's user name
    reported_at   timestamptz NOT NULL DEFAULT now(),
    description   text CHECK (length(description) <= 4000),
    attributes    jsonb NOT NULL DEFAULT '{}'::jsonb,
    lat           double precision NOT NULL,
    lon           double precision NOT NULL,
    first_name    text,
    last_name     text,
    email         text,
    phone         text,
    device_id     text,
    account_id    text,
    linked        boolean NOT NULL DEFAULT false  -- a near-duplicate linked to an open request
);
CREATE INDEX request_reports_request_idx ON request_reports (request_id, id);

-- Photos of a request or of a work order, checked and re-encoded (metadata such as the GPS position
-- removed) before they are stored; served to logged-in staff only.
CREATE TABLE photos (
    id             uuid PRIMARY KEY,
    request_id     bigint REFERENCES service_requests (id),
    work_order_id  bigint,
    content_type   text NOT NULL CHECK (content_type IN ('image/jpeg', 'image/png', 'image/webp')),
    size           integer NOT NULL,
    width          integer NOT NULL,
    height         integer NOT NULL,
    sha256         bytea NOT NULL,
    data           bytea NOT NULL,
    uploaded_by    text NOT NULL,
    uploaded_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX photos_request_idx ON photos (request_id) WHERE request_id IS NOT NULL;
CREATE INDEX photos_work_order_idx ON photos (work_order_id) WHERE work_order_id IS NOT NULL;

-- Field teams: a crew of a service with its vehicle (a geolocated service_vehicle asset).
CREATE TABLE teams (
    id          text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$'),
    name        text NOT NULL,
    service     text NOT NULL,
    vehicle_id  text REFERENCES assets (id),
    status      text NOT NULL DEFAULT 'off_duty'
                CHECK (status IN ('available', 'en_route', 'on_scene', 'busy', 'off_duty')),
    status_at   timestamptz NOT NULL DEFAULT now(),
    active      boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    version     integer NOT NULL DEFAULT 1
);
CREATE UNIQUE INDEX teams_vehicle_idx ON teams (vehicle_id) WHERE vehicle_id IS NOT NULL AND active;
CREATE INDEX teams_service_idx ON teams (service, status);

-- Field agents' accounts belong to one team at a time.
CREATE TABLE team_members (
    username  text PRIMARY KEY REFERENCES users (username),
    team_id   text NOT NULL REFERENCES teams (id)
);
CREATE INDEX team_members_team_idx ON team_members (team_id);

-- Work orders: what a service does about an alarm, a request, or by plan.
CREATE TABLE work_orders (
    id                bigserial PRIMARY KEY,
    title             text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    description       text CHECK (length(description) <= 4000),
    service           text NOT NULL,
    category          text NOT NULL,             -- the request's service_code, the alarm's type, or 'maintenance'...
    priority          text NOT NULL CHECK (priority IN ('urgent', 'high', 'normal', 'low')),
    state             text NOT NULL CHECK (state IN ('new', 'assigned', 'en_route', 'on_site', 'done', 'cancelled')),
    origin            text NOT NULL CHECK (origin IN ('alarm', 'request', 'manual', 'planned')),
    alarm_id          bigint REFERENCES alarms (id),
    asset_id          text,
    restricted        boolean NOT NULL DEFAULT false,  -- about public-safety equipment: police, supervisors, admins
    team_id           text REFERENCES teams (id),
    lat               double precision NOT NULL,
    lon               double precision NOT NULL,
    pt                point NOT NULL,
    commune           text,
    address           text,
    planned_for       timestamptz,               -- planned maintenance: when it is to be done
    recurrence        jsonb,                     -- {"every": 3, "unit": "month"}: the next one follows
    previous_id       bigint REFERENCES work_orders (id),  -- the occurrence this one follows
    sla_response_due  timestamptz NOT NULL,      -- a team on site by then
    sla_resolution_due timestamptz NOT NULL,     -- done by then
    created_by        text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    assigned_at       timestamptz,
    accepted_at       timestamptz,               -- the team saw it and took it
    en_route_at       timestamptz,
    on_site_at        timestamptz,
    done_at           timestamptz,
    confirmed_at      timestamptz,               -- the coordinator confirmed the repair
    confirmed_by      text,
    cancelled_at      timestamptz,
    outcome_note      text CHECK (length(outcome_note) <= 4000),
    version           integer NOT NULL DEFAULT 1
);
CREATE INDEX work_orders_open_idx ON work_orders (service, state, id) WHERE state NOT IN ('done', 'cancelled');
CREATE INDEX work_orders_team_idx ON work_orders (team_id, state) WHERE team_id IS NOT NULL;
CREATE INDEX work_orders_alarm_idx ON work_orders (alarm_id) WHERE alarm_id IS NOT NULL;
CREATE INDEX work_orders_created_idx ON work_orders (created_at DESC, id DESC);
CREATE INDEX work_orders_pt_gist ON work_orders USING gist (pt);
-- One open work order per alarm: a second request to open one finds the first.
CREATE UNIQUE INDEX work_orders_one_open_per_alarm ON work_orders (alarm_id)
    WHERE alarm_id IS NOT NULL AND state NOT IN ('done', 'cancelled');

ALTER TABLE service_requests ADD CONSTRAINT service_requests_work_order_fk
    FOREIGN KEY (work_order_id) REFERENCES work_orders (id);
ALTER TABLE photos ADD CONSTRAINT photos_work_order_fk FOREIGN KEY (work_order_id) REFERENCES work_orders (id);

-- Actions a field tablet sent while offline carry an id: replaying one changes nothing twice.
CREATE TABLE field_actions (
    id             uuid PRIMARY KEY,
    username       text NOT NULL,
    work_order_id  bigint NOT NULL,                 -- as sent: a refused action may name any order
    received_at    timestamptz NOT NULL DEFAULT now(),
    outcome        jsonb NOT NULL
);

-- The history of a work order or of a request is read from the journal by their ids.
CREATE INDEX journal_work_order_idx ON journal (((data->>'work_order_id')::bigint), id) WHERE data ? 'work_order_id';
CREATE INDEX journal_request_idx ON journal (((data->>'request_id')::bigint), id) WHERE data ? 'request_id';
