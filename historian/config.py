"""Historian configuration: one YAML file validated by pydantic, environment overrides as the daemon's.

Every key is documented in ``deploy/historian.example.yaml``. Any key can be set from the environment with
``BOXINSPECT_HISTORIAN_<SECTION>__<KEY>`` (for example ``BOXINSPECT_HISTORIAN_DATABASE__URL`` or
``BOXINSPECT_HISTORIAN_BROKER__PASSWORD``); the command line's ``--broker`` and ``--db`` win over both.
Errors name the key and what was expected (edge/config.py's formatter).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from edge.config import ConfigError, MqttConfig, TlsConfig, format_errors, key_paths, merge_dicts

ENV_PREFIX = "BOXINSPECT_HISTORIAN_"
ENV_NESTING = "__"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BrokerConfig(_Section):
    """The MQTT broker every daemon publishes to (MQTT 5: shared subscriptions, session expiry)."""

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    tls: TlsConfig = TlsConfig()
    keepalive_s: int = Field(default=30, ge=5)
    reconnect_min_s: float = Field(default=1.0, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)
    client_id: str | None = None  # default historian-<hostname>; fixed, so its session survives a restart
    base_topic: str = "boxinspect"  # the daemons' mqtt.base_topic
    share_group: str = "historian"  # $share/<group>/...: workers of one group split the messages
    session_expiry_s: int = Field(default=3600, ge=0)  # the broker keeps the session (and queues) this long
    receive_maximum: int = Field(default=200, ge=1, le=65535)  # unacknowledged messages the broker may send us

    def edge_mqtt(self) -> MqttConfig:
        """The daemon's MQTT settings type, for the shared client factory (edge/deliver/mqtt.py)."""
        return MqttConfig(host=self.host, port=self.port, username=self.username, password=self.password,
                          tls=self.tls, keepalive_s=self.keepalive_s, protocol="5",
                          reconnect_min_s=self.reconnect_min_s, reconnect_max_s=self.reconnect_max_s)


class DatabaseConfig(_Section):
    url: SecretStr = SecretStr("postgresql://boxinspect@127.0.0.1:5432/boxinspect")
    partition: Literal["day", "week", "month"] = "month"  # one partition of decisions/views per ...
    partitions_ahead: int = Field(default=2, ge=1, le=60)  # partitions made ahead of now
    connect_timeout_s: float = Field(default=5.0, gt=0)
    retry_min_s: float = Field(default=0.5, gt=0)  # database away: retry after this, doubling ...
    retry_max_s: float = Field(default=10.0, gt=0)  # ... up to this


class DaemonConfig(_Section):
    """One daemon's API, for replay of seq gaps and the evidence reference."""

    line: str
    camera: str
    url: str = Field(pattern=r"^https?://")  # http://host:8080 (the daemon's api.host/api.port)
    token: SecretStr | None = None  # its api.token


class S3Config(_Section):
    endpoint_url: str | None = None  # http://minio:9000; None = AWS
    bucket: str = "boxinspect-evidence"
    prefix: str = "evidence/"
    region: str | None = None
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None


class EvidenceConfig(_Section):
    """url: each row points at the daemon's image of the decision; s3: the crop is fetched once and uploaded."""

    mode: Literal["url", "s3"] = "url"
    s3: S3Config = S3Config()
    fetch_timeout_s: float = Field(default=5.0, gt=0)
    queue_max: int = Field(default=10_000, ge=1)  # crops waiting for upload; beyond it the row keeps the URL


class MetricsConfig(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9110, ge=1, le=65535)


class HistorianConfig(_Section):
    broker: BrokerConfig = BrokerConfig()
    database: DatabaseConfig = DatabaseConfig()
    daemons: list[DaemonConfig] = Field(default_factory=list)
    evidence: EvidenceConfig = EvidenceConfig()
    metrics: MetricsConfig = MetricsConfig()
    batch_max: int = Field(default=500, ge=1)  # rows per transaction at most
    gap_check_s: float = Field(default=60.0, gt=0)  # look for seq gaps (and ask replay) this often
    replay_timeout_s: float = Field(default=10.0, gt=0)

    def client_id(self) -> str:
        return self.broker.client_id or f"historian-{socket.gethostname()}"

    def daemon(self, line: str, camera: str) -> DaemonConfig | None:
        for d in self.daemons:
            if d.line == line and d.camera == camera:
                return d
        return None


def env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """``BOXINSPECT_HISTORIAN_A__B=v`` -> {"a": {"b": v}}; values stay strings (pydantic parses them),
    except ``daemons``, which is JSON. Empty variables count as unset."""
    import json

    out: dict[str, Any] = {}
    for k, v in environ.items():
        if not k.upper().startswith(ENV_PREFIX) or v == "":
            continue
        path = k[len(ENV_PREFIX):].lower().split(ENV_NESTING)
        value: Any = json.loads(v) if path == ["daemons"] else v
        node = out
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = value
    return out


def load_config(path: str | Path | None, environ: dict[str, str] | None = None,
                overrides: dict[str, Any] | None = None) -> HistorianConfig:
    """File, then the environment, then ``overrides`` (the command line). Raises ConfigError."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        p, source = Path(path), str(path)
        try:
            loaded = yaml.safe_load(p.read_text())
        except OSError as e:
            raise ConfigError(f"{p}: cannot read config file: {e.strerror}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the top level must be a mapping (broker:, database:, daemons:, ...)")
        data = loaded or {}
    env = env_overrides(dict(os.environ if environ is None else environ))
    data = merge_dicts(merge_dicts(data, env), overrides or {})
    try:
        return HistorianConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_errors(err, source)
                          + _env_hint(key_paths(env))) from None


def _env_hint(keys: set[tuple[str, ...]]) -> str:
    return f"\n  (set from the environment: {', '.join(sorted('.'.join(k) for k in keys))})" if keys else ""
