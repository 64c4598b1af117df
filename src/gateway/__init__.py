"""The gateway application: identity, sessions, recording, CLI."""

__version__ = "0.1.0"
