"""Edge subcommands: run, predict, config check, bench. Handlers import their modules lazily."""

from __future__ import annotations

import argparse


def _run(args: argparse.Namespace) -> int:
    from edge import daemon

    return daemon.main(args)


def _predict(args: argparse.Namespace) -> int:
    from edge import predict

    return predict.main(args)


def _bench(args: argparse.Namespace) -> int:
    from edge import bench

    return bench.main(args)


def _config_check(args: argparse.Namespace) -> int:
    """Validate the file, then check what start-up needs: files exist, state directories are writable.
    Problems go to stderr (exit 2); the summary of a good config to stdout."""
    import sys

    from edge.config import ConfigError, check_files, load_config

    try:
        cfg = load_config(args.file)
    except ConfigError as e:
        sys.stderr.write(f"{e}\n")
        return 2
    errors, warnings = check_files(cfg)
    for w in warnings:
        sys.stderr.write(f"{args.file}: warning: {w}\n")
    if errors:
        sys.stderr.write(f"{args.file}: the daemon would not start\n" + "".join(f"  {e}\n" for e in errors))
        return 2
    print(
        f"{args.file}: OK (line={cfg.line}, camera={cfg.camera}, source={cfg.source.uri}, model={cfg.model.path}, "
        f"state in {cfg.state_dir})"
    )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        help="run the edge daemon (camera -> model -> MQTT events, API, metrics)",
        description="Run the inspection daemon. Stops cleanly on SIGTERM/SIGINT; SIGHUP reloads the model.",
    )
    p.add_argument("--config", "-c", required=True, help="YAML config (see deploy/config.example.yaml)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames (testing)")
    p.add_argument("--trace", default=None, metavar="FILE",
                   help="write frame and decision timestamps (frame read .. MQTT PUBACK) to FILE at exit, for "
                        "`boxinspect bench pipeline` (costs two clock reads per frame)")
    p.set_defaults(func=_run)

    p = sub.add_parser(
        "predict",
        help="classify images or folders with a .tflite model",
        description="Print label, score and latency for each image. Folders are searched recursively. "
                    "Each image is cropped to its box as the model package says (its `crop`, the one training used).",
    )
    p.add_argument("model", help="the .tflite file (its metadata sidecar <model>.json must be beside it)")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--threshold", type=float, default=None, help="override the model's threshold")
    p.add_argument("--threads", type=int, default=2, help="interpreter threads (default 2)")
    p.add_argument("--background", default=None, metavar="FILE",
                   help="empty-belt reference image for a package cropped with 'background' (overrides the one "
                        "recorded at training)")
    p.add_argument("--json", dest="json_out", default=None, help="also write results as JSON to this file ('-' = stdout)")
    p.add_argument("--csv", dest="csv_out", default=None, help="also write results as CSV to this file")
    p.set_defaults(func=_predict)

    p = sub.add_parser(
        "bench",
        help="measure model latency (median, p90, p99) per runtime and thread count, or the whole pipeline",
        description="`bench MODEL`: time the interpreter on the model's golden samples or random input. "
                    "`bench pipeline --source VIDEO --model MODEL`: decode, invoke, preprocessing and the whole daemon "
                    "(pace fast, MQTT to a real broker, evidence and API on) with the end-to-end latency frame read -> "
                    "PUBACK and the ratios to the limit. `bench idle --source VIDEO --model MODEL`: the daemon's CPU with "
                    "the belt empty and still. `bench soak --source VIDEO --model MODEL --duration 600`: RSS of the daemon at "
                    "pace fast, sampled every 10 s. Results go to docs/BENCHMARKS.md.",
    )
    p.add_argument("model", help="the .tflite file, or `pipeline`, `idle` or `soak`")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2; pipeline/idle: the first)")
    p.add_argument("--runs", type=int, default=200, help="timed invocations per setting (default 200)")
    p.add_argument("--warmup", type=int, default=20, help="untimed invocations first (default 20)")
    p.add_argument("--json", dest="json_out", default=None, help="also write results as JSON to this file")
    p.add_argument("--source", default=None, help="pipeline/idle/soak: the video file (e.g. from `boxinspect synth --video`)")
    p.add_argument("--model", dest="pipeline_model", default=None, help="pipeline/idle/soak: the .tflite model package")
    p.add_argument("--duration", type=float, default=30.0, help="pipeline/idle: seconds the daemon runs (default 30)")
    p.add_argument("--roi", default=None, metavar="X,Y,W,H",
                   help="pipeline/idle: the ROI (default: from VIDEO's .json written by synth, else the whole frame)")
    p.add_argument("--broker", default="127.0.0.1:1883",
                   help="pipeline: MQTT broker host:port (default 127.0.0.1:1883; one is started there if none answers)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="pipeline/idle: daemon config override, e.g. decision.presence.fg_resize=area (repeatable)")
    p.set_defaults(func=_bench)

    p = sub.add_parser("config", help="check a daemon config file")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION")
    c = csub.add_parser(
        "check", help="validate a config file, name any bad key, check that files exist and state directories are writable"
    )
    c.add_argument("file")
    c.set_defaults(func=_config_check)
