"""Decisions out: the outbox, MQTT, evidence files, reject outputs, OPC UA, Home Assistant, replay."""
