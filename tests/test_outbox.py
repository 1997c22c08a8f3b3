"""The SQLite outbox on its own: order, ack, overflow policies, reopen, crash, bad files."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from edge.deliver.outbox import Outbox, OutboxError
from edge.runtime.metrics import Metrics
from tests.helpers import metric


def _put(ob: Outbox, i: int) -> int | None:
    return ob.put("t/defect", f'{{"i":{i}}}'.encode(), f"ev-{i}")


def test_order_pending_and_ack(tmp_path: Path) -> None:
    m = Metrics()
    with Outbox(tmp_path / "ob.sqlite3", max_events=100, metrics=m) as ob:
        seqs = [_put(ob, i) for i in range(10)]
        assert seqs == sorted(seqs) and len(set(seqs)) == 10
        assert ob.depth() == 10 and metric(m, "boxinspect_outbox_depth") == 10
        rows = ob.pending()
        assert [r.event_id for r in rows] == [f"ev-{i}" for i in range(10)]
        assert rows[3].payload == b'{"i":3}' and rows[3].topic == "t/defect"
        assert [r.seq for r in ob.pending(after_seq=seqs[6], limit=2)] == seqs[7:9]

        assert ob.ack(seqs[0]) is True
        assert ob.ack(seqs[0]) is False  # already gone
        assert ob.ack_many(seqs[1:4] + [9999]) == 3
        assert ob.depth() == 6 and metric(m, "boxinspect_outbox_depth") == 6
        assert [r.seq for r in ob.pending()] == seqs[4:]


def test_seq_keeps_growing_after_empty_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "ob.sqlite3"
    with Outbox(path) as ob:
        a = _put(ob, 1)
        ob.ack(a)
        b = _put(ob, 2)
        ob.ack(b)
        assert ob.depth() == 0
    with Outbox(path) as ob:
        c = _put(ob, 3)
    assert a < b < c  # AUTOINCREMENT: a deleted seq is never handed out again


def test_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "ob.sqlite3"  # parent directory is created
    with Outbox(path) as ob:
        seqs = [_put(ob, i) for i in range(5)]
        ob.ack(seqs[0])
    with Outbox(path) as ob:
        assert ob.depth() == 4
        assert [r.seq for r in ob.pending()] == seqs[1:]
        assert [r.payload for r in ob.pending()] == [f'{{"i":{i}}}'.encode() for i in range(1, 5)]


@pytest.mark.parametrize(
    ("overflow", "kept", "refused"), [("drop_oldest", [2, 3, 4], []), ("drop_newest", [0, 1, 2], [3, 4])]
)
def test_overflow_keeps_the_limit_counts_logs_and_persists_the_drops(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, overflow: str, kept: list[int], refused: list[int]
) -> None:
    """Five events into room for three: the policy picks the two that go (drop_oldest stores every new event,
    drop_newest refuses the two that do not fit); each drop is counted, logged with its event id, and the count
    survives a reopen."""
    m = Metrics()
    path = tmp_path / "ob.sqlite3"
    dropped = [i for i in range(5) if i not in kept]
    with caplog.at_level(logging.WARNING, logger="edge.deliver.outbox"):
        with Outbox(path, max_events=3, overflow=overflow, metrics=m) as ob:
            seqs = [_put(ob, i) for i in range(5)]
            assert [i for i, s in enumerate(seqs) if s is None] == refused
            assert ob.depth() == 3
            assert [r.event_id for r in ob.pending()] == [f"ev-{i}" for i in kept]
            assert ob.dropped == 2
    assert metric(m, "boxinspect_events_dropped_total") == 2
    assert all(f"ev-{i}" in caplog.text for i in dropped) and overflow in caplog.text
    with Outbox(path, max_events=3, overflow=overflow) as ob:
        assert ob.dropped == 2  # persisted in the file


def test_drop_newest_stores_again_once_an_ack_made_room(tmp_path: Path) -> None:
    with Outbox(tmp_path / "ob.sqlite3", max_events=3, overflow="drop_newest") as ob:
        seqs = [_put(ob, i) for i in range(4)]
        assert seqs[3] is None and ob.dropped == 1
        ob.ack(seqs[0])  # room again
        assert _put(ob, 5) is not None
        assert [r.event_id for r in ob.pending()] == ["ev-1", "ev-2", "ev-5"]
        assert ob.dropped == 1


def test_smaller_limit_on_reopen_drops_oldest_to_fit(tmp_path: Path) -> None:
    path = tmp_path / "ob.sqlite3"
    with Outbox(path, max_events=10) as ob:
        for i in range(6):
            _put(ob, i)
    with Outbox(path, max_events=3, overflow="drop_oldest") as ob:
        _put(ob, 6)
        assert [r.event_id for r in ob.pending()] == ["ev-4", "ev-5", "ev-6"]
        assert ob.dropped == 4


def test_threads_put_concurrently(tmp_path: Path) -> None:
    with Outbox(tmp_path / "ob.sqlite3") as ob:
        seqs: list[int] = []
        lock = threading.Lock()

        def worker(k: int) -> None:
            for i in range(25):
                s = ob.put("t", b"{}", f"w{k}-{i}")
                with lock:
                    seqs.append(s)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(set(seqs)) == 100 and ob.depth() == 100
        assert [r.seq for r in ob.pending(limit=1000)] == sorted(seqs)


def test_put_survives_sigkill(tmp_path: Path) -> None:
    """Once put() returned, the event is on disk even if the process dies right after."""
    path = tmp_path / "ob.sqlite3"
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from edge.deliver.outbox import Outbox
        ob = Outbox({str(path)!r})
        for i in range(20):
            ob.put("t/defect", b'{{"i":%d}}' % i, "ev-%d" % i)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    with Outbox(path) as ob:  # the lock of the dead process is gone
        assert [r.event_id for r in ob.pending()] == [f"ev-{i}" for i in range(20)]


def test_corrupt_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "ob.sqlite3"
    path.write_bytes(b"this is not a database, just some text " * 100)
    with pytest.raises(OutboxError) as err:
        Outbox(path)
    assert str(path) in str(err.value) and "not a usable outbox" in str(err.value)
    Outbox(tmp_path / "other.sqlite3").close()  # the failed open left no lock or handle behind
    with pytest.raises(OutboxError):
        Outbox(path)  # and it fails the same way again


def test_wrong_table_layout(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "ob.sqlite3"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY, data TEXT)")
    db.commit()
    db.close()
    with pytest.raises(OutboxError, match="unexpected columns"):
        Outbox(path)


def test_second_opener_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ob.sqlite3"
    with Outbox(path):
        with pytest.raises(OutboxError, match="in use by another process"):
            Outbox(path)
    Outbox(path).close()  # free again after close


def test_closed_outbox_raises(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "ob.sqlite3")
    ob.close()
    with pytest.raises(OutboxError, match="closed"):
        _put(ob, 1)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="overflow"):
        Outbox(tmp_path / "a.sqlite3", overflow="drop_random")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_events"):
        Outbox(tmp_path / "b.sqlite3", max_events=0)
    with Outbox(tmp_path / "c.sqlite3") as ob, pytest.raises(TypeError, match="bytes"):
        ob.put("t", "text", "ev")  # type: ignore[arg-type]


def test_oldest_age(tmp_path: Path) -> None:
    with Outbox(tmp_path / "ob.sqlite3") as ob:
        assert ob.oldest_age() is None
        s = _put(ob, 0)
        _put(ob, 1)
        age = ob.oldest_age()
        assert age is not None and age >= 0
        ob.ack(s)
        assert ob.oldest_age() is not None
