"""The historian's Prometheus metrics (its own registry; served on metrics.host:metrics.port).

One table names them all: attribute -> (metric name, help). ``historian_<name>_total`` for the counters.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

COUNTERS = {
    "received": ("historian_messages_received", "MQTT messages received"),
    "acked": ("historian_messages_acked", "MQTT messages acknowledged after their commit"),
    "inserted": ("historian_rows_inserted", "decision rows written"),
    "duplicates": ("historian_duplicates", "decisions already in the table (resends, replays)"),
    "rejected": ("historian_messages_rejected", "messages kept in rejected_messages"),
    "replayed": ("historian_rows_replayed", "decision rows added from a daemon's replay"),
    "replay_errors": ("historian_replay_errors", "replay requests that failed"),
    "lost_seqs": ("historian_lost_seqs", "seqs recorded as lost (no longer in the outbox)"),
}
GAUGES = {
    "db_up": ("historian_db_up", "1 while PostgreSQL takes writes"),
    "mqtt_connected": ("historian_mqtt_connected", "1 while connected to the broker"),
}
BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class HistorianMetrics:
    received: Counter
    acked: Counter
    inserted: Counter
    duplicates: Counter
    rejected: Counter
    replayed: Counter
    replay_errors: Counter
    lost_seqs: Counter
    db_up: Gauge
    mqtt_connected: Gauge

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        for attr, (name, doc) in COUNTERS.items():
            setattr(self, attr, Counter(name, doc, registry=self.registry))
        for attr, (name, doc) in GAUGES.items():
            setattr(self, attr, Gauge(name, doc, registry=self.registry))
        self.batch_seconds = Histogram("historian_batch_seconds", "time to write and commit one batch",
                                       registry=self.registry, buckets=BATCH_BUCKETS)
        self.db_up.set(1)
