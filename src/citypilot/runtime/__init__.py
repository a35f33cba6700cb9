"""The infrastructure citypilot owns by default: a private PostgreSQL and a private NATS server."""
