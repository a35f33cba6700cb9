"""citypilot: an open-source urban hypervisor (a metropolis's connected control centre)."""

__version__ = "0.1.0"
