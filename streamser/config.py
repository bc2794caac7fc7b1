"""Settings: one frozen dataclass per component, composed into ``Config``.

Sources, weakest first: defaults, a TOML file, ``STREAMSER_<SECTION>_<KEY>``
environment variables, command-line flags. Validated once, at startup.
"""

from __future__ import annotations

import logging
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from streamser.analytics.loading import parse_rules, rules_to_toml
from streamser.analytics.rules import AnalyticsOptions, Rule
from streamser.audio.segmenter import SegmenterOptions
from streamser.audio.vad import VadOptions
from streamser.errors import ConfigError
from streamser.pipeline import PipelineOptions
from streamser.recognition.asr_options import AsrOptions
from streamser.recognition.emotion_options import EmotionOptions
from streamser.recognition.recognizer import RecognizerOptions
from streamser.serve.handshake import ServerOptions
from streamser.serve.hub import HubOptions
from streamser.sinks.redis import RedisSinkOptions

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutputOptions:
    """Where events go besides clients.

    Attributes:
        jsonl: append every event to this file ("" for none).
    """

    jsonl: str = ""


@dataclass(frozen=True)
class SinksOptions:
    """Event sinks that need settings of their own, one sub-section each.

    Attributes:
        redis: ``[sinks.redis]``, appending every event to a Redis stream.
    """

    redis: RedisSinkOptions = field(default_factory=RedisSinkOptions)


@dataclass(frozen=True)
class Config:
    """Every setting of streamser."""

    server: ServerOptions = field(default_factory=ServerOptions)
    pipeline: PipelineOptions = field(default_factory=PipelineOptions)
    hub: HubOptions = field(default_factory=HubOptions)
    vad: VadOptions = field(default_factory=VadOptions)
    segmenter: SegmenterOptions = field(default_factory=SegmenterOptions)
    asr: AsrOptions = field(default_factory=AsrOptions)
    emotion: EmotionOptions = field(default_factory=EmotionOptions)
    output: OutputOptions = field(default_factory=OutputOptions)
    analytics: AnalyticsOptions = field(default_factory=AnalyticsOptions)
    sinks: SinksOptions = field(default_factory=SinksOptions)

    def __post_init__(self) -> None:
        if self.hub.backend == "redis" and not self.sinks.redis.url:
            raise ConfigError(
                '[hub] backend = "redis" reads the stream [sinks.redis] writes: '
                "set sinks.redis.url"
            )

    def recognizer_options(self) -> RecognizerOptions:
        """What the recogniser loads."""
        return RecognizerOptions(emotion=self.emotion, asr=self.asr)

    def to_toml(self) -> str:
        """The effective configuration as TOML."""
        lines: list[str] = []
        for section in fields(self):
            if section.name != "analytics":
                _toml_section(section.name, getattr(self, section.name), lines)
                continue
            lines.append("[analytics]")
            for item in fields(self.analytics):
                if item.name != "rules":  # tables, after every section's own keys
                    value = getattr(self.analytics, item.name)
                    lines.append(f"{item.name} = {_toml_value(value)}")
            if not self.analytics.rules:
                lines.append("rules = []")
            lines.append("")
        lines += rules_to_toml(self.analytics.rules)
        return "\n".join(lines)


def _is_table(kind: Any) -> bool:
    """Whether a setting's type is a table of names (``[emotion.text]``)."""
    return typing.get_origin(kind) in (Mapping, dict)


def _toml_section(name: str, options: Any, lines: list[str]) -> None:
    """Append ``[name]`` and its settings, then its tables (``[emotion.text]``) and
    sub-sections (``[sinks.redis]``)."""
    hints = typing.get_type_hints(type(options))
    nested = [f for f in fields(options) if is_dataclass(getattr(options, f.name))]
    tables = [f for f in fields(options) if _is_table(hints[f.name])]
    plain = [f for f in fields(options) if f not in nested and f not in tables]
    if plain or not nested:
        lines.append(f"[{name}]")
        for item in plain:
            lines.append(f"{item.name} = {_toml_value(getattr(options, item.name))}")
        lines.append("")
    for item in tables:
        lines.append(f"[{name}.{item.name}]")
        for key, value in getattr(options, item.name).items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    for item in nested:
        _toml_section(f"{name}.{item.name}", getattr(options, item.name), lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if value is None:
        return '""'
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def _coerce(raw: Any, kind: Any, where: str) -> Any:
    """Turn a TOML or environment value into the field's type."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [k for k in typing.get_args(kind) if k is not type(None)]
        if raw is None or raw == "":
            return None
        kind = options[0]
    try:
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            if str(raw).lower() in ("1", "true", "yes", "on"):
                return True
            if str(raw).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind is int:
            if isinstance(raw, bool) or (
                isinstance(raw, float) and not raw.is_integer()
            ):
                raise ValueError(raw)
            return int(raw)
        if kind is float:
            if isinstance(raw, bool):
                raise ValueError(raw)
            return float(raw)
        if kind is str:
            if not isinstance(raw, str | int | float) or isinstance(raw, bool):
                raise ValueError(raw)
            return str(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {raw!r} is not a valid {kind.__name__}") from None
    raise ConfigError(f"{where}: unsupported setting type {kind}")


def _gathered(values: dict[str, Any], sub: str, name: str) -> dict[str, Any]:
    """The values of ``[name.sub]``: they arrive as ``sub = {...}`` from the TOML
    file and as ``sub_key = value`` from the environment
    (``STREAMSER_SINKS_REDIS_URL``); the latter are taken out of ``values``."""
    given = values.get(sub, {})
    if not isinstance(given, dict):
        raise ConfigError(f"{name}.{sub} must be a [{name}.{sub}] section")
    merged = dict(given)
    for key in [k for k in values if k.startswith(f"{sub}_")]:
        merged[key[len(sub) + 1 :]] = values.pop(key)
    return merged


def _section(cls: type[Any], values: Mapping[str, Any], name: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    values = dict(values)
    for sub in [key for key in known if is_dataclass(hints[key])]:
        values[sub] = _section(
            hints[sub], _gathered(values, sub, name), f"{name}.{sub}"
        )
    tables = [key for key in known if _is_table(hints[key])]
    for table in tables:
        values[table] = {
            str(key): _coerce(raw, str, f"{name}.{table}.{key}")
            for key, raw in _gathered(values, table, name).items()
        }
    unknown = set(values) - known
    if unknown:
        raise ConfigError(
            f"[{name}]: unknown setting(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(known))}"
        )
    kwargs = {
        key: raw
        if is_dataclass(raw) or key in tables
        else _coerce(raw, hints[key], f"{name}.{key}")
        for key, raw in values.items()
    }
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(f"[{name}]: {err}") from err
    except (TypeError, ValueError) as err:
        raise ConfigError(f"[{name}]: {err}") from err


def _rules(values: dict[str, Any]) -> tuple[Rule, ...] | None:
    """Takes ``rules`` out of the ``[analytics]`` values and checks them; None when
    the configuration names none (the defaults apply)."""
    if "rules" not in values:
        return None
    raw = values.pop("rules")
    if isinstance(raw, str):
        raise ConfigError(
            "analytics.rules: must be [[analytics.rules]] tables in the TOML file "
            "(not a string, nor an environment variable)"
        )
    return parse_rules(raw)


def load_config(
    path: Path | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Build the configuration.

    Args:
        path: a TOML file, or None (then ``STREAMSER_CONFIG`` if set).
        overrides: ``{section: {key: value}}`` from command-line flags.
        environ: environment to read (``os.environ`` by default).

    Returns:
        The validated configuration.

    Raises:
        ConfigError: unreadable file, unknown section or key, bad value.
    """
    env = os.environ if environ is None else environ
    if path is None and env.get("STREAMSER_CONFIG"):
        path = Path(env["STREAMSER_CONFIG"])
    data: dict[str, dict[str, Any]] = {}
    if path is not None:
        try:
            loaded = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise ConfigError(f"cannot read config {path}: {err.strerror}") from err
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path}: not valid TOML ({err})") from err
        for name, values in loaded.items():
            if not isinstance(values, dict):
                raise ConfigError(f"{path}: {name!r} must be a [section]")
            data[name] = dict(values)
    sections = {f.name: f for f in fields(Config)}
    unknown = set(data) - set(sections)
    if unknown:
        raise ConfigError(
            f"unknown config section(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sections)}"
        )
    for name in sections:
        prefix = f"STREAMSER_{name.upper()}_"
        for key, value in env.items():
            if key.startswith(prefix):
                data.setdefault(name, {})[key[len(prefix) :].lower()] = value
    for name, values in (overrides or {}).items():
        data.setdefault(name, {}).update(
            {k: v for k, v in values.items() if v is not None}
        )
    rules = _rules(data.get("analytics", {}))
    hints = typing.get_type_hints(Config)
    built = {name: _section(hints[name], data.get(name, {}), name) for name in sections}
    if rules is not None:
        built["analytics"] = replace(built["analytics"], rules=rules)
    try:
        config = Config(**built)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    if _LOGGER.isEnabledFor(logging.DEBUG):
        _LOGGER.debug("Effective configuration:\n%s", config.to_toml())
    return config
