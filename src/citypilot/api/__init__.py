"""The HTTP API (FastAPI): REST under /api/v1, health, metrics."""
