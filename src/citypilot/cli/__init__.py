"""The ``citypilot`` command."""
