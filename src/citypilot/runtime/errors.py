"""Errors raised while bringing the infrastructure up, written for the person at the terminal."""


class StartupError(RuntimeError):
    """Infrastructure could not start or be reached; the message says what to do."""
