"""The client's messages on ``/v1/stream`` (PROTOCOL.md version 1): start and control.

Parsing never raises anything but ``ProtocolError``, whose ``code`` is the wire code.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Final

from streamser.audio import SAMPLE_RATE_HZ
from streamser.audio.decode import (
    ENCODINGS,
    MAX_CHANNELS,
    MAX_SAMPLE_RATE_HZ,
    MIN_CHANNELS,
    MIN_SAMPLE_RATE_HZ,
)
from streamser.errors import ProtocolError

MAX_METADATA_BYTES: Final = 4096
"""Largest accepted ``metadata`` object, as compact UTF-8 JSON."""
_STREAM_ID_RE: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_LANGUAGE_RE: Final = re.compile(r"[a-z]{2}")
CHANNEL_MODES: Final = ("downmix", "separate")
"""Values of ``start``'s ``channel_mode``: mix the channels into one signal (the
default), or keep each apart, with its own utterances (one speaker per channel)."""


@dataclass(frozen=True)
class StartMessage:
    """The client's first message on ``/v1/stream``."""

    sample_rate: int = SAMPLE_RATE_HZ
    """Input sample rate in Hz, 8000 to 48000."""
    encoding: str = "pcm_s16le"
    """One of ``ENCODINGS``."""
    channels: int = 1
    """Interleaved channels, downmixed to mono unless ``channel_mode`` is
    "separate"."""
    language: str | None = None
    """ISO 639-1 code, or None to detect it."""
    stream_id: str | None = None
    """The client's id for the stream, or None to have one generated."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Echoed in ``stream.start``; ``channels``, a list of strings, names them."""
    channel_mode: str = "downmix"
    """One of ``CHANNEL_MODES``; "separate" needs 2 or more ``channels``."""

    @property
    def separate(self) -> bool:
        """Whether each channel is segmented and recognised on its own."""
        return self.channel_mode == "separate"

    def channel_name(self, channel: int) -> str | None:
        """The name ``metadata.channels`` gives ``channel`` when channels are kept
        apart, or None (a downmix is no one channel)."""
        names = self.metadata.get("channels") if self.separate else None
        if isinstance(names, list) and 0 <= channel < len(names):
            name = names[channel]
            return name if isinstance(name, str) else None
        return None


def load_json(text: str | bytes, code: str, *, fatal: bool) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError, TypeError) as err:
        raise ProtocolError(code, "the message is not valid JSON", fatal=fatal) from err
    if not isinstance(data, dict):
        raise ProtocolError(code, "the message is not a JSON object", fatal=fatal)
    return data


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _require(ok: bool, code: str, message: str) -> None:
    if not ok:
        raise ProtocolError(code, message, fatal=True)


def parse_start(text: str | bytes) -> StartMessage:
    """Parses and checks the client's ``start`` message.

    Missing fields take their defaults, unknown ones are ignored, and ``metadata``
    null is read as {}.

    Args:
        text: the first text message of the stream.

    Returns:
        The checked message.

    Raises:
        ProtocolError: (fatal) ``malformed_json``, ``unexpected_message``,
            ``unsupported_encoding``, ``unsupported_sample_rate``,
            ``unsupported_channels``, ``invalid_channel_mode``,
            ``invalid_language``, ``invalid_stream_id`` or ``invalid_metadata``.
    """
    data = load_json(text, "malformed_json", fatal=True)
    kind = data.get("type")
    _require(
        kind == "start",
        "unexpected_message",
        f"the first message must be of type 'start', not {kind!r:.40}",
    )
    rate = data.get("sample_rate", SAMPLE_RATE_HZ)
    _require(
        _is_int(rate) and MIN_SAMPLE_RATE_HZ <= rate <= MAX_SAMPLE_RATE_HZ,
        "unsupported_sample_rate",
        f"sample_rate must be an integer from {MIN_SAMPLE_RATE_HZ} to "
        f"{MAX_SAMPLE_RATE_HZ}, got {rate!r:.40}",
    )
    encoding = data.get("encoding", "pcm_s16le")
    _require(
        encoding in ENCODINGS,
        "unsupported_encoding",
        f"encoding must be one of {', '.join(ENCODINGS)}, got {encoding!r:.40}",
    )
    channels = data.get("channels", 1)
    _require(
        _is_int(channels) and MIN_CHANNELS <= channels <= MAX_CHANNELS,
        "unsupported_channels",
        f"channels must be an integer from {MIN_CHANNELS} to {MAX_CHANNELS}, "
        f"got {channels!r:.40}",
    )
    channel_mode = data.get("channel_mode", "downmix")
    _require(
        channel_mode in CHANNEL_MODES,
        "invalid_channel_mode",
        f"channel_mode must be one of {', '.join(CHANNEL_MODES)}, "
        f"got {channel_mode!r:.40}",
    )
    _require(
        channel_mode != "separate" or channels >= 2,
        "invalid_channel_mode",
        f"channel_mode 'separate' needs channels from 2 to {MAX_CHANNELS}, "
        f"got {channels}",
    )
    language = data.get("language")
    _require(
        language is None
        or (isinstance(language, str) and bool(_LANGUAGE_RE.fullmatch(language))),
        "invalid_language",
        f"language must be null or a lowercase ISO 639-1 code, got {language!r:.40}",
    )
    stream_id = data.get("stream_id")
    _require(
        stream_id is None
        or (isinstance(stream_id, str) and bool(_STREAM_ID_RE.fullmatch(stream_id))),
        "invalid_stream_id",
        "stream_id must be null or 1 to 128 characters of A-Z a-z 0-9 . _ : -",
    )
    metadata = data.get("metadata")
    metadata = {} if metadata is None else metadata
    _require(
        isinstance(metadata, dict), "invalid_metadata", "metadata must be an object"
    )
    try:
        compact = json.dumps(
            metadata, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        )
        size = len(compact.encode())
    except (ValueError, RecursionError) as err:
        raise ProtocolError(
            "invalid_metadata", "metadata must be plain, finite JSON", fatal=True
        ) from err
    _require(
        size <= MAX_METADATA_BYTES,
        "invalid_metadata",
        f"metadata is {size} bytes of JSON, more than {MAX_METADATA_BYTES}",
    )
    return StartMessage(
        rate, encoding, channels, language, stream_id, metadata, channel_mode
    )


CONTROL_TYPES: Final = ("flush", "stop", "summary")
"""Text messages a client may send after ``start``."""


def parse_control(text: str | bytes) -> str:
    """Parses a text message after ``start``.

    Args:
        text: the message.

    Returns:
        "flush", "stop" or "summary" (send a ``call.summary`` of the stream so far).

    Raises:
        ProtocolError: (non-fatal) ``malformed_json`` or ``unexpected_message``.
    """
    data = load_json(text, "malformed_json", fatal=False)
    message_type = data.get("type")
    if message_type not in CONTROL_TYPES:
        raise ProtocolError(
            "unexpected_message",
            "expected a message of type 'flush', 'stop' or 'summary', "
            f"got {message_type!r:.40}",
            fatal=False,
        )
    result: str = message_type
    return result
