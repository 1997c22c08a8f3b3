"""``boxinspect demo``: the whole loop on synthetic data, with no camera and nothing else installed.

synthetic boxes + conveyor video -> train MobileNetV2 -> evaluate -> int8 TFLite -> broker (started if
none is running) -> the daemon as its own process over the video -> defect events printed as they arrive.

Run it again in the same folder and it reuses what the first run made (``demo.json`` in the folder records the
settings): the same data and model when the settings are the same, a fresh one (the old run replaced) when
they differ; the daemon's outbox and evidence start empty each time, so every run ends the same way. A folder
that holds something else (no ``demo.json``) is refused with one line.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger("boxinspect.demo")

MARKER = "demo.json"  # in the demo's folder: it made the folder, with these settings (demo_recipe)


class DemoError(Exception):
    """A demo that cannot start (one line for the user)."""


def demo_recipe(args: argparse.Namespace) -> dict:
    """The settings that make the data and the model: a second run with the same ones reuses them."""
    return {k: getattr(args, k) for k in ("per_class", "img_size", "epochs", "fine_tune_epochs", "lr", "weights", "seed")}


def claim_out(out: Path, recipe: dict) -> dict | None:
    """Make ``out`` the demo's folder; returns the previous run's record (None on a first run).

    Refuses a file, or a non-empty folder the demo did not make (it never deletes what it did not write)."""
    if out.exists() and not out.is_dir():
        raise DemoError(f"--out {out} is a file; choose a folder")
    marker = out / MARKER
    legacy = (out / "conveyor.mp4").is_file() and (out / "data" / "manifest.json").is_file()  # before demo.json
    if out.is_dir() and any(out.iterdir()) and not marker.is_file() and not legacy:
        raise DemoError(f"--out {out} already holds files the demo did not make (no {MARKER}); choose another "
                        "folder (default demo-out/)")
    try:
        before = json.loads(marker.read_text()) if marker.is_file() else None
    except ValueError:
        before = None
    out.mkdir(parents=True, exist_ok=True)
    if before is None or before.get("recipe") != recipe:  # other settings: the old data and model go
        for name in ("data", "run"):
            shutil.rmtree(out / name, ignore_errors=True)
        before = None
    marker.write_text(json.dumps({"recipe": recipe, "model": (before or {}).get("model")}, indent=1))
    return before


def _reset_daemon_state(out: Path) -> None:
    """The daemon's outbox, evidence and log from an earlier run go: each run starts from an empty line."""
    for name in ("outbox.sqlite3", "outbox.sqlite3-wal", "outbox.sqlite3-shm", "outbox.sqlite3.lock", "daemon.log"):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "evidence", ignore_errors=True)


def _step(n: int, total: int, text: str) -> float:
    print(f"\n[{n}/{total}] {text}", flush=True)
    return time.time()


def _subscribe(host: str, port: int, topic: str, received: list[dict], ready: threading.Event):
    import paho.mqtt.client as mqtt

    def on_connect(client, userdata, flags, reason_code, properties):
        client.subscribe(topic, qos=1)

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        ready.set()

    def on_message(client, userdata, msg):
        try:
            ev = json.loads(msg.payload)
        except ValueError:
            return
        received.append(ev)
        if ev.get("kind") == "timeout":  # no model decision by the part's deadline: the fail-safe decided
            print(f"  MQTT {msg.topic}: TIMEOUT part {ev.get('part_id')}: {ev.get('reason')} -> {ev.get('action')}", flush=True)
            return
        print(
            f"  MQTT {msg.topic}: DEFECT box score={ev.get('score') or 0:.3f} (threshold {ev.get('threshold') or 0:.2f}) "
            f"frames {ev.get('first_frame')}-{ev.get('last_frame')} id={str(ev.get('event_id'))[:8]}",
            flush=True,
        )

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="boxinspect-demo-subscriber")
    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    client.connect(host, port)
    client.loop_start()
    return client


def run_demo(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    try:
        before = claim_out(out, demo_recipe(args))
    except (DemoError, OSError) as e:
        sys.stderr.write(f"boxinspect demo: {e}\n")
        return 2
    from convert.tflite import ConvertError, GateError
    from training.data import DataError
    from training.model import WeightsError
    from training.split import SplitError

    try:
        return _run(args, out, before)
    except GateError as e:  # a real outcome (e.g. too few --epochs or --per-class), not a crash
        sys.stderr.write(f"boxinspect demo: {e}; train longer or on more images (--epochs, --per-class)\n")
        return 1
    except (ConvertError, DataError, SplitError, WeightsError) as e:
        sys.stderr.write(f"boxinspect demo: {e}\n")
        return 2


def _train_and_convert(args: argparse.Namespace, data: Path, run: Path, t: float) -> tuple[Path, dict]:
    """Steps 2-4: train, evaluate, convert. Returns the int8 package and the evaluation's metrics."""
    from edge.judge.localize import NO_CROP
    from training.evaluate import evaluate
    from training.model import offline_weights_path
    from training.train import TrainConfig, train

    offline = offline_weights_path(0.35)
    weights = args.weights or (str(offline) if offline else "imagenet")
    print(f"      pretrained weights: {weights}")
    cfg = TrainConfig(
        data_dir=data, out_dir=run, img_size=args.img_size, alpha=0.35, weights=weights,
        epochs=args.epochs, learning_rate=args.lr, fine_tune_epochs=args.fine_tune_epochs,
        fine_tune_learning_rate=args.lr / 10, seed=args.seed, recipe="finetune",
        crop=NO_CROP,  # the demo's images and the daemon's ROI are already the box's square
        overwrite=True,  # run/ is the demo's own (demo.json); an unfinished earlier run is replaced
    )
    try:
        train(cfg)
    except Exception as e:  # offline and no local weights: train from scratch rather than fail the demo
        if weights != "imagenet":
            raise
        log.warning("could not get ImageNet weights (%s); training from random init instead", e)
        cfg.weights = "none"
        train(cfg)
    print(f"      trained in {time.time() - t:.0f} s")

    t = _step(3, 6, "evaluate on the held-out split and pick the operating threshold")
    metrics = evaluate(run)
    _print_metrics(metrics, run)

    t = _step(4, 6, "convert to int8 TFLite with metadata, checked against the Keras model")
    from convert.tflite import convert_run

    model = convert_run(run, "int8")
    print(f"      {model} ({model.stat().st_size / 1024:.0f} KiB) + {model.name}.json ({time.time() - t:.0f} s)")
    return model, metrics


def _print_metrics(metrics: dict, run: Path) -> None:
    at = metrics["at_threshold"]
    print(f"      {metrics['split']} split (n={metrics['n']}): accuracy {at['accuracy']:.3f}, defect recall {at['recall']:.3f} "
          f"at threshold {metrics['threshold']:.3f}; report: {run / 'report' / 'report.html'}")


def _reuse(before: dict | None, run: Path, t: float) -> Path | None:
    """Steps 2-4 of an earlier run with the same settings, if it finished them: its int8 package."""
    model = Path((before or {}).get("model") or "")
    if not (before and model.is_file() and Path(f"{model}.json").is_file() and (run / "metrics.json").is_file()):
        return None
    print(f"      reusing the model the previous demo run trained with these settings: {run} "
          "(delete the folder, or change a setting, to train again)")
    _step(3, 6, "evaluate on the held-out split and pick the operating threshold (previous run's)")
    _print_metrics(json.loads((run / "metrics.json").read_text()), run)
    _step(4, 6, "convert to int8 TFLite with metadata, checked against the Keras model (previous run's)")
    print(f"      {model} ({model.stat().st_size / 1024:.0f} KiB) + {model.name}.json ({time.time() - t:.0f} s)")
    return model


def _run_daemon(args: argparse.Namespace, out: Path, video: Path, gt: dict, model: Path, kind: str,
                broker: Any) -> tuple[int, list[dict]]:
    """Step 6: the daemon as its own process over the video, with a subscriber printing its events; stops the
    broker when done. Returns the daemon's exit status and the events received."""
    config = {
        "line": "demo",
        "camera": "cam1",
        "source": {"uri": str(video), "pace": "realtime", "exit_on_end": True},
        "roi": {k: gt["roi"][k] for k in ("x", "y", "width", "height")},
        "model": {"path": str(model)},
        "mqtt": {
            "host": args.mqtt_host,
            "port": args.mqtt_port,
            "outbox_path": str(out / "outbox.sqlite3"),
            # the embedded Python broker speaks MQTT 3.1.1 only
            "protocol": "3.1.1" if kind == "amqtt" else "5",
        },
        "api": {"port": args.api_port},
        "evidence": {"dir": str(out / "evidence")},
    }
    cfg_path = out / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(config, sort_keys=False))
    _reset_daemon_state(out)
    received: list[dict] = []
    ready = threading.Event()
    sub = _subscribe(args.mqtt_host, args.mqtt_port, "boxinspect/demo/cam1/defect", received, ready)
    ready.wait(10)
    daemon_log = out / "daemon.log"
    print(f"      config: {cfg_path}; daemon log: {daemon_log}; API: http://127.0.0.1:{args.api_port}/status")
    try:
        with open(daemon_log, "w") as logf:
            proc = subprocess.run(
                [sys.executable, "-m", "boxinspect.cli", "run", "--config", str(cfg_path)],
                stdout=logf, stderr=subprocess.STDOUT, check=False,
            )
        time.sleep(1.0)
    finally:
        sub.loop_stop()
        sub.disconnect()
        broker.stop()
    return proc.returncode, received


def _run(args: argparse.Namespace, out: Path, before: dict | None) -> int:
    from boxinspect.groundtruth import match_events
    from boxinspect.synth import make_dataset, make_video
    from edge.deliver.broker import DemoBroker

    # Third-party INFO chatter (TensorFlow's SavedModel export, the embedded broker's session state machine) is
    # not what the demo means to say; warnings and errors still show.
    for name in ("tensorflow", "absl", "amqtt", "transitions"):
        logging.getLogger(name).setLevel(logging.WARNING)
    t_start = time.time()
    total = 6

    t = _step(1, total, f"synthetic boxes on a belt -> {out / 'data'} and a conveyor video")
    data = out / "data"
    if not (data / "manifest.json").exists():
        make_dataset(data, n_per_class=args.per_class, size=args.img_size, seed=args.seed)
    video = out / "conveyor.mp4"
    gt = make_video(video, n_boxes=args.boxes, defect_rate=0.4, seed=args.seed + 1)
    n_def = sum(b["defective"] for b in gt["boxes"])
    print(f"      {args.per_class} images per class; video: {len(gt['boxes'])} boxes, {n_def} defective ({time.time() - t:.0f} s)")

    t = _step(2, total, "train MobileNetV2 (alpha 0.35) by transfer learning")
    run = out / "run"
    model = _reuse(before, run, t)
    if model is None:
        model, _ = _train_and_convert(args, data, run, t)
        marker = out / MARKER
        marker.write_text(json.dumps({**json.loads(marker.read_text()), "model": str(model)}, indent=1))

    _step(5, total, f"MQTT broker on {args.mqtt_host}:{args.mqtt_port}")
    broker = DemoBroker(args.mqtt_host, args.mqtt_port)
    kind = broker.start()
    print(f"      broker: {kind}")

    _step(6, total, "run the edge daemon over the conveyor video; defect events print as they arrive")
    returncode, received = _run_daemon(args, out, video, gt, model, kind, broker)
    if returncode != 0:
        print(f"daemon exited with {returncode}; see {out / 'daemon.log'}")
        return 1
    m = match_events(received, gt)
    print(
        f"\nDone in {time.time() - t_start:.0f} s. Video: {n_def} defective of {len(gt['boxes'])} boxes; "
        f"MQTT defect events received: {len(received)}; matched {m.tp}, false alarms {m.fp}, missed {m.fn} "
        f"(precision {m.precision:.2f}, recall {m.recall:.2f})."
    )
    print(f"Evidence images: {out / 'evidence'}   Evaluation report: {run / 'report' / 'report.html'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the whole loop on synthetic data: synth -> train -> convert -> daemon -> MQTT events",
        description=(
            "Runs everything on generated data with no camera: makes synthetic boxes and a conveyor video, trains a "
            "small MobileNetV2, converts it to int8 TFLite, starts an MQTT broker if none answers (Mosquitto if "
            "installed, else an embedded Python broker), runs the daemon over the video and prints defect events "
            "as they arrive. Takes a few minutes on a laptop CPU. Run it again with the same --out and settings and it "
            "reuses the data and model it made (other settings replace them); a folder it did not make is refused."
        ),
    )
    p.add_argument("--out", default="demo-out", help="working folder (default demo-out/)")
    p.add_argument("--per-class", type=int, default=250, help="synthetic training images per class (default 250)")
    p.add_argument("--boxes", type=int, default=12, help="boxes in the conveyor video (default 12)")
    p.add_argument("--img-size", type=int, default=128, help="model input size in pixels (default 128)")
    p.add_argument("--epochs", type=int, default=10, help="frozen-backbone epochs (default 10)")
    p.add_argument("--fine-tune-epochs", type=int, default=6, help="epochs with the top blocks unfrozen (default 6)")
    p.add_argument(
        "--lr", type=float, default=1e-3,
        help="learning rate of the frozen phase (default 1e-3: the product default 1e-4 needs ~25 epochs); fine-tuning uses a tenth",
    )
    p.add_argument("--weights", default=None, help="imagenet, none or a .h5 path (default: an offline copy if found, else imagenet)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mqtt-host", default="127.0.0.1")
    p.add_argument("--mqtt-port", type=int, default=1883)
    p.add_argument("--api-port", type=int, default=8080)
    p.set_defaults(func=run_demo)
