"""Configuration: defaults, TOML, environment and flags, in that order of strength."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamser.config import Config, load_config
from streamser.errors import ConfigError


def test_defaults_bind_loopback() -> None:
    config = load_config(None, environ={})
    assert config.server.host == "127.0.0.1"
    assert config.server.port == 8765
    assert config.asr.enabled is True


def test_toml_then_env_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "streamser.toml"
    path.write_text('[server]\nport = 9000\nhost = "0.0.0.0"\n[asr]\nbeam_size = 3\n')
    env = {"STREAMSER_SERVER_PORT": "9100", "STREAMSER_ASR_ENABLED": "false"}
    config = load_config(path, {"server": {"port": 9200, "host": None}}, environ=env)
    assert config.server.port == 9200  # flag beats env beats file
    assert config.server.host == "0.0.0.0"  # file beats default; None flag ignored
    assert config.asr.enabled is False  # env
    assert config.asr.beam_size == 3


def test_config_env_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[pipeline]\npartial_interval_ms = 0\n")
    config = load_config(None, environ={"STREAMSER_CONFIG": str(path)})
    assert config.pipeline.partial_interval_ms == 0


def test_round_trip_through_toml(tmp_path: Path) -> None:
    config = load_config(None, {"server": {"port": 1234}}, environ={})
    path = tmp_path / "effective.toml"
    path.write_text(config.to_toml())
    assert load_config(path, environ={}) == config


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[server]\nprot = 1\n", "unknown setting"),
        ("[nonsense]\na = 1\n", "unknown config section"),
        ("[server]\nport = 'x'\n", "not a valid int"),
        ("[server]\nport = 70000\n", "not a TCP port"),
        ("[asr]\ndevice = 'tpu'\n", "asr.device"),
        ("[vad]\naggressiveness = 9\n", "vad"),
        ("server = 1\n", "must be a [section]"),
        ("[server\n", "not valid TOML"),
        ("[emotion]\ndevice = 'tpu'\n", "[emotion]: device"),
        ("[emotion]\nnum_threads = 0\n", "num_threads"),
        ("[emotion.text]\nEnglish = 'emotion-text-en-v2'\n", "not an ISO 639-1 code"),
        ("[emotion.text]\nen = ''\n", "text.en: a model name"),
        ("[emotion]\ntext = 'emotion-text-en-v2'\n", "[emotion.text] section"),
    ],
)
def test_bad_settings_are_config_errors(
    tmp_path: Path, text: str, fragment: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[")):
        load_config(path, environ={})


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "absent.toml", environ={})


def test_recognizer_options_follow_sections() -> None:
    config = load_config(
        None, {"asr": {"enabled": False}, "emotion": {"model_dir": "/m"}}, environ={}
    )
    options = config.recognizer_options()
    assert options.asr is config.asr and options.asr.enabled is False
    assert options.emotion is config.emotion and options.emotion.model_dir == "/m"
    assert isinstance(config, Config)


def test_models_are_named_in_toml_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(
        '[emotion]\nacoustic = "emotion-acoustic-v4"\n'
        '[emotion.text]\nen = "emotion-text-en-v2"\n'
    )
    env = {"STREAMSER_EMOTION_TEXT_FA": "emotion-text-fa-v1"}
    config = load_config(path, environ=env)
    assert config.emotion.acoustic == "emotion-acoustic-v4"
    assert config.emotion.text == {
        "en": "emotion-text-en-v2",
        "fa": "emotion-text-fa-v1",
    }
    shown = config.to_toml()
    assert 'acoustic = "emotion-acoustic-v4"' in shown
    assert (
        '[emotion.text]\nen = "emotion-text-en-v2"\nfa = "emotion-text-fa-v1"' in shown
    )
    again = tmp_path / "again.toml"
    again.write_text(shown)
    assert load_config(again, environ={}) == config


def test_no_model_named_means_the_newest() -> None:
    config = load_config(None, environ={})
    assert config.emotion.acoustic == "" and config.emotion.text == {}
    assert '[emotion]\nmodel_dir = ""\nacoustic = ""' in config.to_toml()
