-- Each street light's energy per local day (Europe/Paris), integrated from its power_w readings by
-- lighting/rollup.py. The monthly KPI by street reads these rows (34,000 lights x 31 days at most)
-- instead of integrating a month of readings at query time (5.7 million readings a night at Dijon's
-- scale: minutes a month). The rows outlive the readings' retention, so past months stay answerable.
CREATE TABLE light_energy_daily (
    day        date NOT NULL,            -- local calendar day
    asset_id   text NOT NULL,
    kwh        float8 NOT NULL,
    covered_s  float8 NOT NULL,          -- seconds of the day its readings cover
    first_ts   timestamptz NOT NULL,     -- start of the covered span within the day
    last_ts    timestamptz NOT NULL,     -- its end (the last reading plus what it holds)
    rolled_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (day, asset_id)
);

-- The days rolled up, and when last: a day with no light reading at all is rolled too (and has no row
-- above), so "rolled" cannot be read from light_energy_daily. The KPI says up to which day its figures go.
CREATE TABLE light_energy_days (
    day        date PRIMARY KEY,
    lights     integer NOT NULL,         -- lights with data that day
    kwh        float8 NOT NULL,
    rolled_at  timestamptz NOT NULL DEFAULT now()
);
