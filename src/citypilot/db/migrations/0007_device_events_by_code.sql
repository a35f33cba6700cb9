-- Device events read by code over a period (bus priority per line, counts of a fault over a month):
-- without this, a KPI over a month scans every event of every asset.
CREATE INDEX device_events_code_ts_idx ON device_events (code, ts);
