"""Home Assistant MQTT discovery: the line appears in HA as one device with its sensors, no YAML in HA.

Retained config messages on ``<discovery_prefix>/<component>/<node_id>/<object_id>/config`` (HA's
discovery topic format), one per entity. The states come from the daemon's ``<base>/stats`` messages
(every ``mqtt.stats_interval_s``), picked out with ``value_template``; availability is the existing
retained ``<base>/status`` topic (``online`` / ``offline``, the last will). Published on every (re)connect,
so a broker that lost its retained messages gets them again. See docs/INTEGRATION.md for the entity table.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from edge.config import Config
from edge.deliver.mqtt_sink import STATUS_OFFLINE, STATUS_ONLINE

log = logging.getLogger(__name__)

# object_id -> (component, name, value_template, unit, device_class, state_class, icon)
ENTITIES: dict[str, tuple[str, str, str, str | None, str | None, str | None, str | None]] = {
    "defect_rate": ("sensor", "Defect rate", "{{ value_json.defect_rate_pct }}", "%", None, "measurement", "mdi:percent"),
    "last_verdict": ("sensor", "Last verdict", "{{ value_json.last_label }}", None, None, None, "mdi:package-variant"),
    "last_score": ("sensor", "Last score", "{{ value_json.last_score }}", None, None, "measurement", "mdi:gauge"),
    "fps": ("sensor", "Frame rate", "{{ value_json.fps }}", "fps", None, "measurement", "mdi:camera-timer"),
    "outbox_depth": ("sensor", "Outbox depth", "{{ value_json.outbox_depth }}", None, None, "measurement", "mdi:tray-full"),
    "camera_ok": (
        "binary_sensor", "Camera", "{{ 'ON' if value_json.camera_state == 'ok' else 'OFF' }}",
        None, "connectivity", None, None,
    ),
}


def _node_id(cfg: Config) -> str:
    return f"boxinspect_{cfg.line}_{cfg.camera}".replace("-", "_")


def discovery_messages(cfg: Config, version: str = "") -> dict[str, dict[str, Any]]:
    """topic -> config payload for every entity."""
    ha = cfg.homeassistant
    base = cfg.topic_base
    node = _node_id(cfg)
    device: dict[str, Any] = {
        "identifiers": [node],
        "name": ha.device_name or f"boxinspect {cfg.line}/{cfg.camera}",
        "manufacturer": "boxinspect",
        "model": "box inspection camera",
    }
    if version:
        device["sw_version"] = version
    out: dict[str, dict[str, Any]] = {}
    for object_id, (component, name, template, unit, device_class, state_class, icon) in ENTITIES.items():
        payload: dict[str, Any] = {
            "name": name,
            "unique_id": f"{node}_{object_id}",
            "state_topic": f"{base}/stats",
            "value_template": template,
            "availability_topic": f"{base}/status",
            "payload_available": STATUS_ONLINE,
            "payload_not_available": STATUS_OFFLINE,
            "device": device,
            "origin": {"name": "boxinspect", **({"sw_version": version} if version else {})},
        }
        if unit:
            payload["unit_of_measurement"] = unit
        if device_class:
            payload["device_class"] = device_class
        if state_class:
            payload["state_class"] = state_class
        if icon:
            payload["icon"] = icon
        if component == "binary_sensor":
            payload["payload_on"], payload["payload_off"] = "ON", "OFF"
        out[f"{ha.discovery_prefix}/{component}/{node}/{object_id}/config"] = payload
    return out


def publish_discovery(cfg: Config, publish: Callable[[str, bytes, int, bool], bool], version: str = "") -> int:
    """Publish every config message retained at QoS 1. Returns how many the client accepted."""
    n = 0
    for topic, payload in discovery_messages(cfg, version).items():
        if publish(topic, json.dumps(payload, separators=(",", ":")).encode(), 1, True):
            n += 1
    log.info("Home Assistant discovery: %d entities under %s/", n, cfg.homeassistant.discovery_prefix)
    return n
