"""Config: every key documented in the example, errors name the key, env overrides work."""

from __future__ import annotations

from pathlib import Path
from typing import get_origin

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
        # (on Python 3.10 a generic alias such as list[str] passes isinstance(..., type))
        if isinstance(ann, type) and get_origin(ann) is None and issubclass(ann, BaseModel):
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
    env = {"BOXINSPECT_MQTT__PASSWORD": "12345", "BOXINSPECT_MQTT__PORT": "8883", "BOXINSPECT_API__TOKEN": "t0k",
           "BOXINSPECT_MQTT__USERNAME": "edge"}  # (a password without a username is refused)
    cfg = parse_config({"mqtt": {"password": "from-file"}}, environ=env)
    assert cfg.mqtt.password.get_secret_value() == "12345"  # stays a string
    assert cfg.mqtt.port == 8883
    assert cfg.api.token.get_secret_value() == "t0k"
    summary = str(cfg.summary())
    assert "12345" not in summary and "t0k" not in summary


def test_env_override_error_names_the_key():
    with pytest.raises(ConfigError, match="mqtt.port"):
        parse_config({}, environ={"BOXINSPECT_MQTT__PORT": "not-a-port"})


def test_env_values_are_parsed_for_the_key_type():
    env = {
        "BOXINSPECT_SOURCE__URI": "0",  # a camera index stays the string "0"
        "BOXINSPECT_MQTT__PROTOCOL": "5",
        "BOXINSPECT_LINE": "line7",  # a top-level key
        "BOXINSPECT_DECISION__PRESENCE__MIN_FRAMES": "5",
        "BOXINSPECT_API__TOKEN": "",  # an unset compose variable: ignored, not "the empty token"
        "BOXINSPECT_WEIGHTS": "/elsewhere",  # not a config key: not ours to judge
    }
    cfg = parse_config({"api": {"token": "from-file"}}, environ=env)
    assert cfg.source.uri == "0" and cfg.mqtt.protocol == "5" and cfg.line == "line7"
    assert cfg.decision.presence.min_frames == 5
    assert cfg.api.token is not None and cfg.api.token.get_secret_value() == "from-file"
    assert parse_config({"api": {"token": ""}}, environ={}).api.token is None


@pytest.mark.parametrize(
    "name, value, key",
    [("BOXINSPECT_MQTT__PORT", "on", "mqtt.port"), ("BOXINSPECT_MQTT__PROT", "5", "mqtt.prot"),
     ("BOXINSPECT_SHUTDOWN_TIMEOUT_S", "soon", "shutdown_timeout_s")],
)
def test_bad_env_value_names_key_and_variable(name, value, key):
    with pytest.raises(ConfigError) as e:
        parse_config({}, environ={name: value})
    msg = str(e.value)
    assert key in msg and f"from the environment: {name}" in msg


def test_state_paths_resolve_against_the_state_dir(tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "c.yaml").write_text("model: {path: m.tflite}\nmqtt: {outbox_path: out.sqlite3}\n")
    cfg = load_config(etc / "c.yaml", environ={"STATE_DIRECTORY": str(tmp_path / "var")})
    assert cfg.model.path == etc / "m.tflite"  # an input travels with its config
    assert cfg.mqtt.outbox_path == tmp_path / "var" / "out.sqlite3"
    assert cfg.evidence.dir == tmp_path / "var" / "evidence"
    cfg = load_config(etc / "c.yaml", environ={"BOXINSPECT_STATE_DIR": str(tmp_path / "data")})
    assert cfg.mqtt.outbox_path == tmp_path / "data" / "out.sqlite3"
    cfg = load_config(etc / "c.yaml", environ={})  # neither: beside the config
    assert cfg.mqtt.outbox_path == etc / "out.sqlite3"


def _check(capsys, path):
    from boxinspect.cli import main

    rc = main(["config", "check", str(path)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_config_check_cli(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("evidence:\n  jpeg_quality: 500\n")
    rc, out, err = _check(capsys, bad)
    assert rc == 2 and "evidence.jpeg_quality" in err and out == ""
    # the example is valid YAML and keys, but its model is not there
    rc, out, err = _check(capsys, EXAMPLE)
    assert rc == 2 and "model.path" in err and "does not exist" in err


def test_config_check_finds_missing_files_and_unwritable_state(tmp_path, capsys):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    (tmp_path / "m.tflite.json").write_text("{}")
    video = tmp_path / "belt.mp4"
    video.write_bytes(b"x")
    good = tmp_path / "good.yaml"
    good.write_text(f"source: {{uri: {video}}}\nmodel: {{path: m.tflite}}\nstate_dir: state\n")
    rc, out, err = _check(capsys, good)
    assert rc == 0 and "OK" in out, err

    ro = tmp_path / "not-a-dir"
    ro.write_text("a file where the state directory should go")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        f"source: {{uri: {tmp_path / 'nope.mp4'}}}\nmodel: {{path: gone.tflite}}\nstate_dir: {ro / 'state'}\n"
        "mqtt: {tls: {enabled: true, ca_certs: ca.pem}}\n"
    )
    rc, out, err = _check(capsys, bad)
    assert rc == 2 and out == ""
    assert "model.path" in err and "source.uri" in err and "mqtt.tls.ca_certs" in err
    assert "mqtt.outbox_path" in err and "is not a directory" in err and "evidence.dir" in err


# --------------------------------------------------------------------------------------------------
# Settings that cannot be misspelt (issue 27): unknown variables, duplicate keys, secrets from files
# --------------------------------------------------------------------------------------------------


def test_misspelt_variable_is_refused_with_one_line_naming_it():
    with pytest.raises(ConfigError) as e:
        parse_config({}, environ={"BOXINSPECT_API_TOKEN": "x"})  # one underscore: the API would stay open
    msg = str(e.value)
    assert len(msg.splitlines()) == 1, msg
    assert msg.startswith("BOXINSPECT_API_TOKEN: unknown variable") and "did you mean BOXINSPECT_API__TOKEN?" in msg
    # the right spellings, a secret's _FILE and the variables of the CLI and tests pass
    parse_config({}, environ={"BOXINSPECT_API__TOKEN": "x", "BOXINSPECT_LOG_LEVEL": "DEBUG", "BOXINSPECT_LINE": "l2",
                              "BOXINSPECT_API_TOKEN": ""})  # (an empty one counts as unset, as everywhere)


def test_misspelt_variable_stops_the_daemon_with_one_line(tmp_path, capsys):
    from boxinspect.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text("line: l1\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BOXINSPECT_API_TOKEN", "x")
        assert main(["run", str(cfg)]) == 2
        assert main(["config", "check", "--config", str(cfg)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "BOXINSPECT_API_TOKEN" in line]
    assert len(err) == 2 and err[0] == err[1] and err[0].startswith("BOXINSPECT_API_TOKEN: unknown variable"), err


def test_duplicate_yaml_key_is_refused_with_one_line_naming_it(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("line: l1\nmqtt:\n  port: 1883\n  host: broker\n  port: 8883\n")
    with pytest.raises(ConfigError) as e:
        load_config(p, environ={})
    msg = str(e.value)
    assert len(msg.splitlines()) == 1, msg
    assert f"{p}: duplicate key mqtt.port at line 5, also at line 3" in msg
    p.write_text("sources:\n  - view: top\n    source: {uri: a, uri: b}\n")
    with pytest.raises(ConfigError, match=r"duplicate key sources\[0\].source.uri at line 3"):
        load_config(p, environ={})


def test_mqtt_password_without_username_is_refused():
    with pytest.raises(ConfigError, match="mqtt: .*password is set but username is not"):
        parse_config({"mqtt": {"password": "s3cret"}}, environ={})
    assert parse_config({"mqtt": {"username": "edge", "password": "s3cret"}}, environ={}).mqtt.username == "edge"


def test_every_secret_can_come_from_a_file(tmp_path):
    token, pw, user = tmp_path / "token", tmp_path / "pw", tmp_path / "user"
    token.write_text("t0k-from-file\n")  # the newline an editor adds is not part of the secret
    pw.write_text("pw-from-file")
    user.write_text("edge")
    env = {"BOXINSPECT_API__TOKEN_FILE": str(token), "BOXINSPECT_MQTT__PASSWORD_FILE": str(pw),
           "BOXINSPECT_MQTT__USERNAME_FILE": str(user)}
    cfg = parse_config({}, environ=env, secrets_dirs=())
    assert cfg.api.token.get_secret_value() == "t0k-from-file"
    assert cfg.mqtt.password.get_secret_value() == "pw-from-file" and cfg.mqtt.username == "edge"
    # systemd LoadCredential= ($CREDENTIALS_DIRECTORY) and Docker secrets (/run/secrets): files named after the key
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "api.token").write_text("t0k-credential")
    (creds / "opcua.password").write_text("plc-pw")
    cfg = parse_config({}, environ={"CREDENTIALS_DIRECTORY": str(creds)}, secrets_dirs=None)
    assert cfg.api.token.get_secret_value() == "t0k-credential" and cfg.opcua.password.get_secret_value() == "plc-pw"
    docker = tmp_path / "run-secrets"
    docker.mkdir()
    (docker / "api.token").write_text("t0k-docker")
    assert parse_config({}, environ={}, secrets_dirs=(docker,)).api.token.get_secret_value() == "t0k-docker"
    # the value itself and its file together: refused; a missing or empty file: named
    with pytest.raises(ConfigError, match="BOXINSPECT_API__TOKEN and BOXINSPECT_API__TOKEN_FILE are both set"):
        parse_config({}, environ={"BOXINSPECT_API__TOKEN": "x", "BOXINSPECT_API__TOKEN_FILE": str(token)})
    with pytest.raises(ConfigError, match=r"BOXINSPECT_API__TOKEN_FILE \(api.token\): cannot read .*gone"):
        parse_config({}, environ={"BOXINSPECT_API__TOKEN_FILE": str(tmp_path / "gone")})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        parse_config({}, environ={"BOXINSPECT_API__TOKEN_FILE": str(tmp_path / "empty")})


def test_source_uri_resolves_against_the_config_file_like_other_inputs(tmp_path):
    etc = tmp_path / "etc"
    (etc / "videos").mkdir(parents=True)
    (etc / "c.yaml").write_text("source: {uri: videos/belt.mp4}\nmodel: {path: m.tflite}\n")
    cfg = load_config(etc / "c.yaml", environ={})
    assert cfg.source.uri == str(etc / "videos" / "belt.mp4") and cfg.model.path == etc / "m.tflite"
    for uri in ("0", "/dev/video2", "rtsp://cam/live", "/abs/belt.mp4"):
        (etc / "c.yaml").write_text(f"source: {{uri: '{uri}'}}\n")
        assert load_config(etc / "c.yaml", environ={}).source.uri == uri
    # a GStreamer pipeline or a GenICam camera name is no path (issue 28's sources with issue 27's path rule)
    pipe = "filesrc location=belt.mp4 ! decodebin ! videoconvert ! appsink"
    for kind, uri in (("auto", pipe), ("gstreamer", pipe), ("genicam", "Aravis-Fake-GV01")):
        (etc / "c.yaml").write_text(f"source: {{kind: {kind}, uri: '{uri}'}}\n")
        assert load_config(etc / "c.yaml", environ={}).source.uri == uri, kind


def test_run_and_config_check_name_the_file_both_ways(tmp_path, capsys):
    from boxinspect.cli import build_parser

    for argv in (["run", "c.yaml"], ["run", "--config", "c.yaml"], ["config", "check", "c.yaml"],
                 ["config", "check", "--config", "c.yaml"], ["config", "check", "-c", "c.yaml"]):
        args = build_parser().parse_args(argv)
        assert [f for f in (args.config, args.config_file) if f] == ["c.yaml"], argv
    bad = tmp_path / "bad.yaml"
    bad.write_text("evidence:\n  jpeg_quality: 500\n")
    rc, out, err = _check_args(capsys, ["config", "check", "--config", str(bad)])
    assert rc == 2 and "evidence.jpeg_quality" in err


def _check_args(capsys, argv):
    from boxinspect.cli import main

    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err
