"""Evidence JPEGs on a real filesystem: naming, OK sampling, each retention rule, restart, unwritable dir."""

from __future__ import annotations

import logging
import os
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.config import EvidenceConfig
from edge.deliver.evidence import EvidenceStore

FRAME = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
CROP = FRAME[20:100, 40:120]


def jpgs(d: Path) -> list[Path]:
    return sorted(d.rglob("*.jpg"))


def store(tmp_path: Path, **kw) -> EvidenceStore:
    """A store of JPEGs only (the lossless crop has its own test)."""
    kw.setdefault("lossless_crop", False)
    return EvidenceStore(EvidenceConfig(dir=tmp_path / "ev", **kw))


def test_lossless_crop_is_the_crop_pixel_for_pixel_and_counts_in_retention(tmp_path: Path) -> None:
    """evidence.lossless_crop (default on): <event_id>_crop.png beside the JPEGs, the exact pixels the model cropped
    (a JPEG's rounding moves a small int8 model's score: docs/RESULTS.md), under the same retention."""
    s = EvidenceStore(EvidenceConfig(dir=tmp_path / "ev", max_files=9))
    out = s.save("e1", FRAME, CROP, is_defect=True)
    assert out is not None and out["crop_png"] is not None and out["crop_png"].endswith("e1_crop.png")
    assert np.array_equal(cv2.imread(out["crop_png"]), CROP)
    assert s.stats()["files"] == 3
    for i in range(2, 4):
        s.save(f"e{i}", FRAME, CROP, is_defect=True)
    assert s.stats()["files"] == 9 and Path(out["crop_png"]).exists()
    s.save("e4", FRAME, CROP, is_defect=True)
    assert not Path(out["crop_png"]).exists() and s.stats()["files"] == 9  # the oldest files went first
    again = EvidenceStore(EvidenceConfig(dir=tmp_path / "ev", max_files=9))
    assert again.stats()["files"] == 9  # a restart counts the PNGs too


def test_saves_named_jpegs_atomically(tmp_path: Path) -> None:
    s = store(tmp_path)
    eid = str(uuid.uuid4())
    out = s.save(eid, FRAME, CROP, is_defect=True)
    assert out is not None
    day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    assert out == {
        "frame": str(tmp_path / "ev" / day / f"{eid}_frame.jpg"),
        "crop": str(tmp_path / "ev" / day / f"{eid}_crop.jpg"),
    }
    frame = cv2.imread(out["frame"])
    crop = cv2.imread(out["crop"])
    assert frame.shape == FRAME.shape and crop.shape == CROP.shape
    assert not list((tmp_path / "ev").rglob("*.tmp"))
    st = s.stats()
    assert st["files"] == 2 and st["bytes"] == sum(p.stat().st_size for p in jpgs(tmp_path / "ev")) and st["saved"] == 1


def test_ok_decisions_are_sampled(tmp_path: Path) -> None:
    s = store(tmp_path, ok_sample_rate=0.25)
    saved_ok = [s.save(str(uuid.uuid4()), FRAME, CROP, is_defect=False) for _ in range(8)]
    assert sum(o is not None for o in saved_ok) == 2
    assert all(s.save(str(uuid.uuid4()), FRAME, None, is_defect=True) is not None for _ in range(3))
    assert len(jpgs(tmp_path / "ev")) == 2 * 2 + 3
    none = store(tmp_path / "b", ok_sample_rate=0.0)
    assert all(none.save("x", FRAME, CROP, is_defect=False) is None for _ in range(20))
    off = EvidenceStore(EvidenceConfig(dir=tmp_path / "off", enabled=False))
    assert off.save("x", FRAME, CROP, is_defect=True) is None and not (tmp_path / "off").exists()


def test_retention_by_count(tmp_path: Path) -> None:
    s = store(tmp_path, max_files=4)
    ids = [str(uuid.uuid4()) for _ in range(5)]
    for eid in ids:
        s.save(eid, FRAME, CROP, is_defect=True)
        time.sleep(0.01)
    left = jpgs(tmp_path / "ev")
    assert len(left) == 4 and s.stats()["files"] == 4
    assert {p.name.split("_")[0] for p in left} == set(ids[-2:])  # the newest survive
    assert s.deleted == 6


def test_retention_by_size(tmp_path: Path) -> None:
    probe = store(tmp_path / "probe")
    probe.save("p", FRAME, CROP, is_defect=True)
    pair = probe.stats()["bytes"]
    s = store(tmp_path, max_bytes=int(pair * 2.5))
    ids = [str(uuid.uuid4()) for _ in range(6)]
    for eid in ids:
        s.save(eid, FRAME, CROP, is_defect=True)
    on_disk = sum(p.stat().st_size for p in jpgs(tmp_path / "ev"))
    assert on_disk <= pair * 2.5 and on_disk == s.stats()["bytes"]
    names = {p.name for p in jpgs(tmp_path / "ev")}
    assert f"{ids[-1]}_frame.jpg" in names and f"{ids[-1]}_crop.jpg" in names
    assert not any(n.startswith(ids[0]) for n in names)


def test_retention_by_age_across_a_restart(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = store(tmp_path, max_age_days=30)
    old, new = str(uuid.uuid4()), str(uuid.uuid4())
    o = s.save(old, FRAME, CROP, is_defect=True)
    n = s.save(new, FRAME, CROP, is_defect=True)
    assert o and n
    month_ago = time.time() - 31 * 86400
    for p in o.values():
        os.utime(p, (month_ago, month_ago))
    # A restart builds the index from disk (mtimes) and applies the age rule at once.
    with caplog.at_level(logging.INFO, logger="edge.deliver.evidence"):
        s2 = store(tmp_path, max_age_days=30)
    assert "4 file(s)" in caplog.text
    assert [p.name.split("_")[0] for p in jpgs(tmp_path / "ev")] == [new, new]
    assert s2.stats()["files"] == 2
    # And in a running store: once the newer files are older than max_age_days they go too.
    assert s2.enforce(now=time.time() + 31 * 86400) == 2
    assert jpgs(tmp_path / "ev") == []
    assert not [d for d in (tmp_path / "ev").iterdir() if d.is_dir()]  # empty day folders removed


def test_restart_counts_existing_files_and_removes_stale_temporaries(tmp_path: Path) -> None:
    s = store(tmp_path, max_files=10)
    for _ in range(4):
        s.save(str(uuid.uuid4()), FRAME, CROP, is_defect=True)
    day = next((tmp_path / "ev").iterdir())
    (day / ".crashed_frame.jpg.tmp").write_bytes(b"half a jpeg")
    s2 = store(tmp_path, max_files=10)
    assert s2.stats()["files"] == 8
    assert not list((tmp_path / "ev").rglob("*.tmp"))
    for _ in range(2):
        s2.save(str(uuid.uuid4()), FRAME, CROP, is_defect=True)
    assert len(jpgs(tmp_path / "ev")) == 10  # the limit counts files from before the restart too


def test_unwritable_dir_is_counted_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "ev"
    blocker.write_text("a file where the evidence folder should be")
    s = EvidenceStore(EvidenceConfig(dir=blocker))
    with caplog.at_level(logging.ERROR, logger="edge.deliver.evidence"):
        results = [s.save(str(uuid.uuid4()), FRAME, CROP, is_defect=True) for _ in range(5)]
    assert results == [None] * 5
    assert s.errors == 5
    assert caplog.text.count("cannot create evidence folder") == 1  # logged once, counted every time
    # The disk is fixed: the same store works again.
    blocker.unlink()
    assert s.save(str(uuid.uuid4()), FRAME, CROP, is_defect=True) is not None


def test_day_folder_blocked_and_bad_image(tmp_path: Path) -> None:
    s = store(tmp_path)
    (tmp_path / "ev").mkdir()
    day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    (tmp_path / "ev" / day).write_text("not a folder")
    assert s.save("e1", FRAME, CROP, is_defect=True) is None
    assert s.errors == 1
    (tmp_path / "ev" / day).unlink()
    out = s.save("../../etc/evil", FRAME, np.zeros((0, 0, 3), np.uint8), is_defect=True)
    assert out is not None and out["crop"] is None
    assert Path(out["frame"]).parent == tmp_path / "ev" / day  # the id cannot escape the folder
