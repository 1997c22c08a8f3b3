"""Config: every key documented in the example, errors name the key, env overrides work."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from edge.config import Config, ConfigError, load_config, parse_config

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "deploy" / "config.example.yaml"


def _keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    out = set()
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        out.add(path)
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out |= _keys(ann, path + ".")
    return out


def _yaml_keys(d: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in d.items():
        out.add(f"{prefix}{k}")
        if isinstance(v, dict):
            out |= _yaml_keys(v, f"{prefix}{k}.")
    return out


def test_example_documents_every_key_and_is_valid():
    data = yaml.safe_load(EXAMPLE.read_text())
    assert _keys(Config) == _yaml_keys(data)
    cfg = load_config(EXAMPLE, environ={})
    assert cfg.line == "line1"
    assert cfg.model.path.is_absolute()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("mqtt:\n  port: 99999\n", "mqtt.port"),
        ("mqtt:\n  prot: 1883\n", "mqtt.prot: unknown key"),
        ("source:\n  pace: slow\n", "source.pace"),
        ("line: a/b\n", "line"),
        ("decision:\n  presence:\n    score_on: 0.3\n    score_off: 0.5\n", "decision.presence"),
        ("api:\n  port: eighty\n", "api.port"),
        ("- just\n- a list\n", "top level must be a mapping"),
        ("mqtt: [unclosed\n", "not valid YAML at line"),
    ],
)
def test_bad_config_names_the_key(tmp_path, text, expected):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p, environ={})
    assert expected in str(e.value)
    assert str(p) in str(e.value)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.yaml")


def test_env_overrides_secrets_and_nested_keys():
    env = {"BOXINSPECT_MQTT__PASSWORD": "12345", "BOXINSPECT_MQTT__PORT": "8883", "BOXINSPECT_API__TOKEN": "t0k"}
    cfg = parse_config({"mqtt": {"password": "from-file"}}, environ=env)
    assert cfg.mqtt.password.get_secret_value() == "12345"  # stays a string
    assert cfg.mqtt.port == 8883
    assert cfg.api.token.get_secret_value() == "t0k"
    summary = str(cfg.summary())
    assert "12345" not in summary and "t0k" not in summary


def test_env_override_error_names_the_key():
    with pytest.raises(ConfigError, match="mqtt.port"):
        parse_config({}, environ={"BOXINSPECT_MQTT__PORT": "not-a-port"})


def test_config_check_cli(tmp_path, capsys):
    from boxinspect.cli import main

    assert main(["config", "check", str(EXAMPLE)]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("evidence:\n  jpeg_quality: 500\n")
    assert main(["config", "check", str(bad)]) == 2
    assert "evidence.jpeg_quality" in capsys.readouterr().out
