"""Evidence JPEGs for decisions: every defect, a sample of OK boxes, with retention by count, size and age.

Files are ``<dir>/<YYYY-MM-DD>/<event_id>_frame.jpg`` (the full frame) and ``..._crop.jpg`` (the image the
model was given: the box crop, or the ROI for a model that takes the whole ROI), dated in UTC; with
``lossless_crop`` also ``..._crop.png``, the same crop pixel for pixel, so ``boxinspect predict --crops`` on it gives back
the recorded score exactly (JPEG's rounding moves a small int8 model's score by up to 0.33: docs/RESULTS.md). Each is encoded in memory, written to a hidden temporary file and renamed into
place, so a reader never sees half a JPEG. The store keeps an in-memory index (built once at start by
scanning ``dir``), so retention costs nothing per save beyond deleting what has to go.

A full disk or an unwritable directory is logged (rate-limited) and counted; ``save`` then returns None
and the daemon carries on: evidence is a by-product, the decision event is what matters.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.config import EvidenceConfig
from edge.runtime.ratelimit import RateLimit

log = logging.getLogger(__name__)

ERROR_LOG_INTERVAL_S = 60.0
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass
class _Entry:
    mtime: float
    size: int
    path: Path


class EvidenceStore:
    def __init__(self, cfg: EvidenceConfig) -> None:
        self.cfg = cfg
        self.dir = Path(cfg.dir)
        self._lock = threading.Lock()
        self._entries: deque[_Entry] = deque()  # oldest first
        self._bytes = 0
        self._ok_credit = 0.0
        self.saved = 0  # decisions with evidence written
        self.deleted = 0  # files removed by retention
        self.errors = 0  # failed writes (disk full, unwritable dir, ...)
        self._error_log = RateLimit(ERROR_LOG_INTERVAL_S)
        self._scan()
        self.enforce()

    # ------------------------------------------------------------------ public
    def save(self, event_id: str, frame_bgr: np.ndarray | None, crop_bgr: np.ndarray | None, is_defect: bool) -> dict[str, Any] | None:
        """Save the evidence of one decision: all defects, OK decisions at ``ok_sample_rate``.

        Returns ``{"frame": path, "crop": path}`` (a path is None if that image was not given or not
        written; with ``lossless_crop`` also ``"crop_png"``), or None when nothing was saved. Never raises for
        I/O problems.
        """
        if not self.cfg.enabled or not self._wanted(is_defect):
            return None
        name = _SAFE.sub("_", str(event_id)) or "event"
        day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
        folder = self.dir / day
        out: dict[str, str | None] = {"frame": None, "crop": None}
        if self.cfg.lossless_crop:
            out["crop_png"] = None
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            self._error(f"cannot create evidence folder {folder}: {e.strerror or e}")
            return None
        for key, img in (("frame", frame_bgr), ("crop", crop_bgr), ("crop_png", crop_bgr)):
            if img is None or img.size == 0 or key not in out:
                continue
            path = folder / (f"{name}_crop.png" if key == "crop_png" else f"{name}_{key}.jpg")
            if self._write(path, img):
                out[key] = str(path)
        if out["frame"] is None and out["crop"] is None:
            return None
        self.saved += 1
        self.enforce()
        return out

    def save_png(self, name: str, bgr: np.ndarray) -> str | None:
        """A lossless image beside a decision's evidence (e.g. the model input of an anomaly map, re-scored
        exactly), under the same retention; its path, or None when it was not written. Never raises for I/O."""
        folder = self.dir / datetime.now(timezone.utc).strftime("%Y-%m-%d")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            self._error(f"cannot create evidence folder {folder}: {e.strerror or e}")
            return None
        path = folder / f"{_SAFE.sub('_', name) or 'event'}.png"
        if not self._write(path, bgr):
            return None
        self.enforce()
        return str(path)

    def enforce(self, now: float | None = None) -> int:
        """Delete the oldest files until count, total size and age are within limits. Returns files deleted."""
        now = time.time() if now is None else now
        oldest_allowed = now - self.cfg.max_age_days * 86400.0
        removed = 0
        with self._lock:
            while self._entries and (
                len(self._entries) > self.cfg.max_files
                or self._bytes > self.cfg.max_bytes
                or self._entries[0].mtime < oldest_allowed
            ):
                e = self._entries.popleft()
                self._bytes -= e.size
                try:
                    e.path.unlink()
                except FileNotFoundError:
                    pass  # removed by someone else: the index simply forgets it
                except OSError as err:
                    log.warning("evidence: cannot delete %s: %s", e.path, err.strerror or err)
                    continue
                removed += 1
                try:
                    e.path.parent.rmdir()  # only succeeds once the day folder is empty
                except OSError:
                    pass
        if removed:
            self.deleted += removed
            log.debug("evidence: retention removed %d file(s)", removed)
        return removed

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "dir": str(self.dir),
                "files": len(self._entries),
                "bytes": self._bytes,
                "saved": self.saved,
                "deleted": self.deleted,
                "errors": self.errors,
            }

    # ---------------------------------------------------------------- internals
    def _wanted(self, is_defect: bool) -> bool:
        if is_defect:
            return True
        # Deterministic sampling: exactly ok_sample_rate of OK decisions, evenly spread.
        self._ok_credit += self.cfg.ok_sample_rate
        if self._ok_credit >= 1.0 - 1e-9:
            self._ok_credit -= 1.0
            return True
        return False

    def _write(self, path: Path, img: np.ndarray) -> bool:
        params = [cv2.IMWRITE_PNG_COMPRESSION, 3] if path.suffix == ".png" else [cv2.IMWRITE_JPEG_QUALITY,
                                                                                 self.cfg.jpeg_quality]
        ok, buf = cv2.imencode(path.suffix, img, params)
        if not ok:
            self._error(f"cannot encode {path.name} (image shape {img.shape}, dtype {img.dtype})")
            return False
        data = buf.tobytes()
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except OSError as e:
            self._error(f"cannot write {path}: {e.strerror or e}")
            try:
                tmp.unlink()
            except OSError:
                pass
            return False
        try:
            mtime = path.stat().st_mtime
        except OSError:
            mtime = time.time()
        with self._lock:
            self._entries.append(_Entry(mtime, len(data), path))
            self._bytes += len(data)
        return True

    def _error(self, msg: str) -> None:
        self.errors += 1
        emit, suppressed = self._error_log.check()
        if emit:
            extra = f" ({suppressed} similar error(s) not logged)" if suppressed else ""
            log.error("evidence: %s%s; the daemon carries on without this evidence", msg, extra)

    def _scan(self) -> None:
        """Build the index from what is on disk (once, at start); remove temporaries of a crashed write."""
        if not self.dir.is_dir():
            return
        found: list[_Entry] = []
        for root, _dirs, files in os.walk(self.dir):
            for f in files:
                p = Path(root) / f
                try:
                    if f.startswith(".") and f.endswith(".tmp"):
                        p.unlink()
                        continue
                    if not f.lower().endswith((".jpg", ".png")):
                        continue
                    st = p.stat()
                except OSError:
                    continue
                found.append(_Entry(st.st_mtime, st.st_size, p))
        found.sort(key=lambda e: (e.mtime, str(e.path)))
        self._entries = deque(found)
        self._bytes = sum(e.size for e in found)
        if found:
            log.info("evidence: %d file(s), %.1f MB already in %s", len(found), self._bytes / 1e6, self.dir)
