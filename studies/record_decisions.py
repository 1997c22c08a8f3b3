"""Record the daemon's decisions on a video: one JSON line per decision (frames, label, frames scored, score).

Runs the real daemon in-process (``Daemon.from_config``) at ``pace: fast`` over the whole file, MQTT off (the
outbox in a temporary folder), evidence and API off. Used to check that a change to the frame path keeps the
decisions (issue 13): record before, record after, compare.

    python studies/record_decisions.py MODEL.tflite VIDEO.mp4 --roi 170,30,300,300 [--set decision.presence.downscale=area]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.config import parse_config
from edge.daemon import Daemon, load_model


def decisions(model: Path, video: Path, roi: tuple[int, int, int, int], overrides: dict[str, Any] | None = None,
              threads: int = 1, idle_as_live: bool = False) -> list[dict[str, Any]]:
    """The decisions of the daemon over ``video``, oldest first (label, frames, frames scored, score).
    ``idle_as_live``: decode the file as a live camera would be with ``source.idle_fps`` (edge/capture/frames.py)."""
    with tempfile.TemporaryDirectory() as tmp:
        data: dict[str, Any] = {
            "model": {"path": str(model), "num_threads": threads},
            "source": {"uri": str(video), "pace": "fast", "exit_on_end": True, "loop": False},
            "roi": dict(zip(("x", "y", "width", "height"), roi, strict=True)),
            "mqtt": {"enabled": False, "outbox_path": str(Path(tmp) / "outbox.sqlite3")},
            "evidence": {"enabled": False, "dir": str(Path(tmp) / "evidence")},
            "api": {"enabled": False},
        }
        for key, value in (overrides or {}).items():
            node = data
            *path, last = key.split(".")
            for p in path:
                node = node.setdefault(p, {})
            node[last] = value
        cfg = parse_config(data, environ={})
        d = Daemon.from_config(cfg, load_model(cfg, cfg.model.path))
        if idle_as_live:
            d.capture.idle_in_fast_pace = True  # type: ignore[union-attr]
        rc = d.run()
        if rc != 0:
            raise RuntimeError(f"daemon exited {rc}: {d.stop_reason}")
        return [
            {"first_frame": e["first_frame"], "last_frame": e["last_frame"], "label": e["label"],
             "frame_count": e["frame_count"], "score": round(float(e["score"]), 4)}
            for e in reversed(d.events.latest(100_000))
        ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("video", type=Path)
    ap.add_argument("--roi", default="170,30,300,300", help="x,y,width,height (the synth video's ROI)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (YAML value)")
    ap.add_argument("--out", type=Path, default=None, help="write the decisions here (JSON lines)")
    ap.add_argument("--idle-as-live", action="store_true",
                    help="decode the file as a live camera would be at the idle rate (source.idle_fps)")
    args = ap.parse_args()
    import yaml

    over = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    roi = tuple(int(v) for v in args.roi.split(","))
    got = decisions(args.model, args.video, roi, over, idle_as_live=args.idle_as_live)  # type: ignore[arg-type]
    text = "".join(json.dumps(d) + "\n" for d in got)
    if args.out:
        args.out.write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
