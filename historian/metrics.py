"""The historian's Prometheus metrics (its own registry; served on metrics.host:metrics.port)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class HistorianMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.received = Counter("historian_messages_received", "MQTT messages received", registry=r)
        self.acked = Counter("historian_messages_acked", "MQTT messages acknowledged after their commit", registry=r)
        self.inserted = Counter("historian_rows_inserted", "decision rows written", registry=r)
        self.duplicates = Counter("historian_duplicates", "decisions already in the table (resends, replays)", registry=r)
        self.rejected = Counter("historian_messages_rejected", "messages kept in rejected_messages", registry=r)
        self.replayed = Counter("historian_rows_replayed", "decision rows added from a daemon's replay", registry=r)
        self.replay_errors = Counter("historian_replay_errors", "replay requests that failed", registry=r)
        self.lost_seqs = Counter("historian_lost_seqs", "seqs recorded as lost (no longer in the outbox)", registry=r)
        self.db_up = Gauge("historian_db_up", "1 while PostgreSQL takes writes", registry=r)
        self.mqtt_connected = Gauge("historian_mqtt_connected", "1 while connected to the broker", registry=r)
        self.batch_seconds = Histogram("historian_batch_seconds", "time to write and commit one batch", registry=r,
                                       buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.db_up.set(1)

