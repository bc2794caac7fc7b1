"""Exceptions raised by streamser.

- ``StreamserError``: base of everything below.
- ``ConfigError``: a setting is missing, malformed or out of range.
- ``ModelError``: a model file is missing, corrupt or does not match its contract.
- ``AudioSourceError``: audio cannot be read or decoded.
- ``ProtocolError``: a client broke PROTOCOL.md; ``code`` is the wire error code.
"""

from __future__ import annotations


class StreamserError(Exception):
    """Base class of every error streamser raises on purpose."""


class ConfigError(StreamserError):
    """A setting is missing, malformed or out of range."""


class ModelError(StreamserError):
    """A model file is missing, corrupt or does not match its contract."""


class AudioSourceError(StreamserError):
    """Audio cannot be read or decoded."""


class ProtocolError(StreamserError):
    """A client message breaks PROTOCOL.md.

    Attributes:
        code: the stable snake_case error code sent in the ``error`` event.
        fatal: whether the connection must be closed.
    """

    def __init__(self, code: str, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.fatal = fatal
