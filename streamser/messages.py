"""The client's messages on ``/v1/stream`` (PROTOCOL.md version 1): start and control.

Parsing never raises anything but ``ProtocolError``, whose ``code`` is the wire code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from streamser.audio import SAMPLE_RATE_HZ
from streamser.audio.decode import (
    ENCODINGS,
    MAX_CHANNELS,
    MAX_SAMPLE_RATE_HZ,
    MIN_CHANNELS,
    MIN_SAMPLE_RATE_HZ,
    whole_number_in,
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
    rate, encoding, channels, channel_mode = _audio_format(data)
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
    return StartMessage(
        rate, encoding, channels, language, stream_id, _metadata(data), channel_mode
    )


def _audio_format(data: dict[str, Any]) -> tuple[int, str, int, str]:
    """The start message's sample rate, encoding, channels and channel mode.

    Raises:
        ProtocolError: (fatal) ``unsupported_sample_rate``, ``unsupported_encoding``,
            ``unsupported_channels`` or ``invalid_channel_mode``.
    """
    rate = _whole_number(
        data, "sample_rate", SAMPLE_RATE_HZ, (MIN_SAMPLE_RATE_HZ, MAX_SAMPLE_RATE_HZ)
    )
    encoding = _choice(data, "encoding", "pcm_s16le", ENCODINGS)
    channels = _whole_number(data, "channels", 1, (MIN_CHANNELS, MAX_CHANNELS))
    channel_mode = _choice(data, "channel_mode", "downmix", CHANNEL_MODES)
    _require(
        channel_mode != "separate" or channels >= 2,
        "invalid_channel_mode",
        f"channel_mode 'separate' needs channels from 2 to {MAX_CHANNELS}, "
        f"got {channels}",
    )
    return rate, encoding, channels, channel_mode


_SETTING_ERRORS: Final = {
    "sample_rate": "unsupported_sample_rate",
    "encoding": "unsupported_encoding",
    "channels": "unsupported_channels",
    "channel_mode": "invalid_channel_mode",
}
"""The error code of a bad value of each audio setting of the start message."""


def _whole_number(
    data: dict[str, Any], key: str, default: int, bounds: tuple[int, int]
) -> int:
    """``data[key]`` (``default`` when absent), an integer within ``bounds``."""
    value = data.get(key, default)
    low, high = bounds
    _require(
        whole_number_in(value, low, high),
        _SETTING_ERRORS[key],
        f"{key} must be an integer from {low} to {high}, got {value!r:.40}",
    )
    return int(value)


def _choice(
    data: dict[str, Any], key: str, default: str, choices: tuple[str, ...]
) -> str:
    """``data[key]`` (``default`` when absent), one of ``choices``."""
    value = data.get(key, default)
    _require(
        value in choices,
        _SETTING_ERRORS[key],
        f"{key} must be one of {', '.join(choices)}, got {value!r:.40}",
    )
    return str(value)


def _metadata(data: dict[str, Any]) -> dict[str, Any]:
    """The start message's ``metadata`` ({} when null).

    Raises:
        ProtocolError: (fatal) ``invalid_metadata``: not an object, not plain JSON,
            or larger than ``MAX_METADATA_BYTES``.
    """
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
    return metadata


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


def local_start_message(
    name: str,
    language: str | None,
    channels: int = 1,
    channel_names: Sequence[str] = (),
) -> StartMessage:
    """The start a local source's stream would have sent: 16 kHz float32, its
    channels kept apart when there are several."""
    return StartMessage(
        sample_rate=SAMPLE_RATE_HZ,
        encoding="pcm_f32le",
        channels=channels,
        language=language,
        stream_id=name,
        metadata={"channels": list(channel_names)} if channel_names else {},
        channel_mode="separate" if channels > 1 else "downmix",
    )
