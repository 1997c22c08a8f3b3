"""The evidence reference of a row: by default the daemon's API URL of the decision's crop; optionally a copy in
S3-compatible storage (boto3, the ``historian-s3`` extra), fetched once from the daemon after the row is committed.

The daemon serves a decision's crop at ``/ui/decisions/<event_id>/crop.jpg`` while it still holds it (its evidence
files, or the operator page's recent images). Upload failures leave the URL in the row and are logged; the
upload queue is bounded (``evidence.queue_max``: beyond it the row keeps the URL).
"""

from __future__ import annotations

import logging
import urllib.request
from typing import Any

from edge.deliver.publisher import OrderedWorker
from historian.config import EvidenceConfig, HistorianConfig
from historian.records import Decision

log = logging.getLogger(__name__)


def crop_url(cfg: HistorianConfig, d: Decision) -> str | None:
    """The daemon's URL of the decision's crop, or None when the daemon is not configured or saved no image."""
    daemon = cfg.daemon(*d.source)
    if daemon is None or not d.row.get("evidence_path"):
        return None
    which = "crop" if d.crop_path else "frame"
    return f"{daemon.url.rstrip('/')}/ui/decisions/{d.event_id}/{which}.jpg"


def s3_key(cfg: EvidenceConfig, d: Decision) -> str:
    line, camera = d.source
    return f"{cfg.s3.prefix}{line}/{camera}/{d.row['decided_at']:%Y/%m/%d}/{d.event_id}_crop.jpg"


class S3Uploader:
    """Copies crops from daemons to S3 on one worker thread (edge/deliver/publisher.py's OrderedWorker) and points the
    rows at the copies. ``offer`` never blocks the writer: beyond ``evidence.queue_max`` waiting crops a row keeps
    the daemon's URL."""

    def __init__(self, cfg: HistorianConfig, store_factory: Any) -> None:
        import boto3  # the historian-s3 extra

        s3 = cfg.evidence.s3
        self.cfg = cfg
        self.client = boto3.client(
            "s3", endpoint_url=s3.endpoint_url, region_name=s3.region,
            aws_access_key_id=s3.access_key.get_secret_value() if s3.access_key else None,
            aws_secret_access_key=s3.secret_key.get_secret_value() if s3.secret_key else None,
        )
        self.store = store_factory()
        self.worker = OrderedWorker(self._copy, "historian-s3", cfg.evidence.queue_max)
        self.uploaded = 0
        self.failed = 0

    def start(self) -> None:
        self.worker.start()

    def stop(self, timeout: float = 10.0) -> None:
        self.worker.stop(timeout)

    def offer(self, d: Decision) -> None:
        if crop_url(self.cfg, d) is None:
            return
        if self.worker.pending >= self.worker.max_pending:  # (the writer and the replay offer: at most one over)
            log.warning("evidence: upload queue full (%d); %s keeps the daemon's URL", self.worker.max_pending,
                        d.event_id)
            return
        self.worker.submit(d)

    def upload(self, d: Decision) -> str:
        url = crop_url(self.cfg, d)
        assert url is not None
        daemon = self.cfg.daemon(*d.source)
        req = urllib.request.Request(url)
        if daemon is not None and daemon.token is not None:
            req.add_header("Authorization", f"Bearer {daemon.token.get_secret_value()}")
        with urllib.request.urlopen(req, timeout=self.cfg.evidence.fetch_timeout_s) as resp:
            data = resp.read()
        key = s3_key(self.cfg.evidence, d)
        bucket = self.cfg.evidence.s3.bucket
        self.client.put_object(Bucket=bucket, Key=key, Body=data, ContentType="image/jpeg")
        ref = f"s3://{bucket}/{key}"
        self.store.set_evidence_ref(d.event_id, d.row["decided_at"], ref)
        return ref

    def _copy(self, d: Decision) -> None:
        try:
            self.upload(d)
            self.uploaded += 1
        except Exception as e:  # the row keeps the daemon's URL
            self.failed += 1
            log.warning("evidence of %s not copied to S3: %s", d.event_id, e)
