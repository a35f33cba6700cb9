"""Device ingestion: MQTT and HTTP in, through JetStream, into the live twin and the time series."""
