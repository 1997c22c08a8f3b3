"""Edge subcommands: run, predict, config check, bench, retrain. Handlers import their modules lazily."""

from __future__ import annotations

import argparse


def _config_file(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    """``FILE`` or ``--config FILE``: both forms name the config, for ``run`` and ``config check`` alike."""
    given = [f for f in (args.config, args.config_file) if f]
    if not given:
        parser.error("the config file is missing: give FILE or --config FILE")
    if len(set(given)) > 1:
        parser.error(f"two config files given ({given[0]} and {given[1]}): give one")
    return str(given[0])


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config_file", nargs="?", default=None, metavar="FILE",
                   help="YAML config (see deploy/config.example.yaml); the same as --config FILE")
    p.add_argument("--config", "-c", default=None, metavar="FILE", help="the config file (or give it as FILE)")
    p.set_defaults(parser=p)


def _run(args: argparse.Namespace) -> int:
    args.config = _config_file(args, args.parser)
    from edge.runtime.logs import early_format, setup_logging

    setup_logging(args.log_level, early_format(args.config))  # JSON from the first line, imports included
    from edge import daemon

    return daemon.main(args)


def _predict(args: argparse.Namespace) -> int:
    from edge.judge import predict

    return predict.main(args)


def _bench(args: argparse.Namespace) -> int:
    from edge import bench

    return bench.main(args)


def _retrain(args: argparse.Namespace) -> int:
    """Fit a new head on labelled folders; print the candidate and its CV metrics (stdout), errors to stderr."""
    import json
    import sys
    from pathlib import Path

    from edge.judge.classifier import ModelError
    from edge.learn.retrain import DEFAULT_MIN_PER_CLASS, RetrainError, retrain
    from edge.runtime.hostcheck import retrain_missing

    missing = retrain_missing()
    if missing:
        sys.stderr.write(f"retrain: {missing}\n")
        return 2
    if args.recipe == "anomaly":  # a new bank of good parts (issue 29)
        from edge.learn.retrain_anomaly import DEFAULT_MIN_GOOD, retrain_anomaly

        try:
            cand = retrain_anomaly(Path(args.package), [Path(d) for d in args.label_dirs], Path(args.out),
                                   target_frr=args.target_frr, name=args.name, num_threads=args.threads,
                                   min_good=args.min_per_class or DEFAULT_MIN_GOOD, seed=args.seed)
        except (RetrainError, ModelError, ValueError) as e:
            sys.stderr.write(f"retrain: {e}\n")
            return 2
        print(f"candidate: {cand}")
        return 0
    try:
        res = retrain(Path(args.package), [Path(d) for d in args.label_dirs], Path(args.out),
                      target_recall=args.target_recall, cost_ratio=args.cost_ratio,
                      min_per_class=DEFAULT_MIN_PER_CLASS if args.min_per_class is None else args.min_per_class, C=args.C, name=args.name, num_threads=args.threads,
                      seed=args.seed)
    except (RetrainError, ModelError) as e:
        sys.stderr.write(f"retrain: {e}\n")
        return 2
    cv = res.cv
    live = f"{res.live_auc:.3f}" if res.live_auc is not None else "n/a"
    print(f"candidate: {res.candidate}  ({res.model_id}, parent {res.parent_model_id})")
    print(f"labels: {', '.join(f'{c} {n}' for c, n in res.counts.items())}; {cv.groups} groups; "
          f"C = {cv.C:g}")
    print(f"grouped {cv.folds}-fold CV: AUC {cv.auc:.3f}, macro F1 {cv.macro_f1:.3f}, recall {cv.recall:.3f}, "
          f"specificity {cv.specificity:.3f} at threshold {cv.threshold:.3f} ({cv.rule}); "
          f"the live model on the same labels: AUC {live}")
    print(f"time {res.seconds:.1f} s (features {res.features_seconds:.1f} s, fit {res.fit_seconds:.1f} s; CPU "
          f"{res.cpu_seconds:.1f} s), "
          f"peak memory {res.peak_rss_mb:.0f} MiB; report {res.report}")
    if args.json_out:
        text = json.dumps(res.to_json(), indent=1) + "\n"
        if args.json_out == "-":
            sys.stdout.write(text)
        else:
            Path(args.json_out).write_text(text, encoding="utf-8")
    return 0


def _config_check(args: argparse.Namespace) -> int:
    """Validate the file, then check what start-up needs: files exist, state directories are writable.
    Problems go to stderr (exit 2); the summary of a good config to stdout."""
    import sys

    from edge.config import ConfigError, check_files, load_config

    args.file = _config_file(args, args.parser)
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


def _config_example(args: argparse.Namespace) -> int:
    """Print the example config (or the systemd unit) shipped inside the package, to copy and edit."""
    import sys
    from importlib.resources import files

    name = "boxinspect.service" if args.unit else "config.example.yaml"
    sys.stdout.write((files("edge") / "examples" / name).read_text(encoding="utf-8"))
    return 0


def _selftest(args: argparse.Namespace) -> int:
    """Load a model package and run its golden samples, as the daemon does at start-up: exit 0 if they pass,
    3 if the package cannot be loaded or a sample fails (what failed on stderr)."""
    import sys

    from edge.judge.classifier import Classifier, ModelError
    from edge.runtime.hostcheck import proc_warning

    try:
        clf = Classifier.load(args.model, num_threads=args.threads)
        failures = clf.self_test()
    except ModelError as e:
        sys.stderr.write(f"model: {e}\n")
        return 3
    hidden = proc_warning(clf.delegate)
    if hidden:
        sys.stderr.write(f"warning: {hidden}\n")
    speed = "" if clf.self_test_invoke_p50_s is None else f", invoke p50 {clf.self_test_invoke_p50_s * 1000:.2f} ms"
    if failures:
        sys.stderr.write(f"self-test FAILED for {clf.model_id} (runtime {clf.runtime_name}, delegate {clf.delegate}"
                         f"{speed}):\n" + "".join(f"  {f}\n" for f in failures))
        return 3
    print(f"self-test passed: {clf.model_id}, {len(clf.metadata.golden)} golden samples "
          f"(runtime {clf.runtime_name}, delegate {clf.delegate}{speed})")
    return 0


RETRAIN_DESCRIPTION = """\
Teach the deployed model from the line's own labels, on the device, in seconds.

The backbone of the deployed package (the .tflite) stays as it is; only its last layer, a logistic
"head" on the backbone's pooled features, is fitted again, on every labelled image you give:
the operator page's feedback/ folder (feedback/<class>/*.jpg) and, if you like, the data set the
model was trained on (any folder-per-class data set with the model's class names). Each image is
cropped and resized exactly as the daemon does, the features come from the same .tflite.

C (how strongly the head is regularised) and the threshold are chosen by grouped 5-fold
cross-validation, with the same rules as `boxinspect train`: near-duplicate photos and the views of
one part stay in one fold; the threshold minimises cost-ratio x missed defects + false rejects
(default cost ratio 2), or meets --target-recall. The result is a CANDIDATE package in --out: the
same .tflite (hardlinked) and a sidecar carrying the new head, its threshold and its CV metrics.
Nothing deployed changes: run the candidate in shadow, then promote it (operator page, or the API),
or point model.path at it.

--recipe anomaly fits a new bank of good parts instead (LABEL_DIR/<good class>/ alone, e.g. what
collection mode fills) for an anomaly package (train --recipe anomaly). The default recipe, head, also
runs on an anomaly package: a supervised head on its backbone, the switch from good parts only once both
classes have labels. The daemon runs the same from its labels: POST /model/retrain {"recipe": "head" or
"anomaly"} (none: the live package's own), and the operator page offers the head once every class has 20."""

RETRAIN_EPILOG = """\
examples:
  boxinspect retrain /opt/models/model_int8.tflite /var/lib/boxinspect/feedback --out /var/lib/boxinspect/candidates
  boxinspect retrain model_int8.tflite feedback/ data/line/ --out candidates/ --target-recall 0.95
  boxinspect retrain anomaly_fp16.tflite feedback/ --out candidates/ --recipe anomaly --target-frr 0.01

It refuses (exit 2, one sentence) when a class has fewer than --min-per-class images, and when the
package was converted before on-device retraining existed (no features output: convert it again).
Time and peak memory are printed; docs/BENCHMARKS.md has the measured numbers."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _add_run(sub)
    _add_predict(sub)
    _add_bench(sub)
    _add_retrain(sub)
    _add_config(sub)
    _add_selftest(sub)


def _add_run(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        help="run the edge daemon (camera -> model -> MQTT events, API, metrics)",
        description="Run the inspection daemon. Stops cleanly on SIGTERM/SIGINT; SIGHUP reloads the model.",
    )
    _add_config_args(p)
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames (testing)")
    p.add_argument("--trace", default=None, metavar="FILE",
                   help="write frame and decision timestamps (frame read .. MQTT PUBACK) to FILE at exit, for "
                        "`boxinspect bench pipeline` (costs two clock reads per frame)")
    p.set_defaults(func=_run)


def _add_predict(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    p.add_argument("--crops", action="store_true",
                   help="the images are the model's crops already (the daemon's evidence <id>_crop.png, the "
                        "feedback folder): score them as they are, without the box search. Re-scoring a kept crop "
                        "this way gives the score the daemon recorded; searched again, a crop can be cropped "
                        "once more (a learned box finder or the search boxing a part of it)")
    p.add_argument("--json", dest="json_out", default=None, help="also write results as JSON to this file ('-' = stdout)")
    p.add_argument("--csv", dest="csv_out", default=None, help="also write results as CSV to this file")
    p.set_defaults(func=_predict)


def _add_bench(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    p.add_argument("model", help="the .tflite file, or `pipeline`, `idle`, `soak` or `anomaly`")
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
    p.add_argument("--candidate", default=None, metavar="PACKAGE",
                   help="time shadow mode instead: this candidate beside MODEL (first --threads value)")
    p.add_argument("--banks", default=None, metavar="N,N,...",
                   help="`bench anomaly [--model PACKAGE]`: score one crop against banks of these sizes (default "
                        "1000,10000,100000): p50/p99 and the bank's memory")
    p.set_defaults(func=_bench)


def _add_retrain(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "retrain",
        help="fit a new head (--recipe anomaly: a new bank of good parts) for a deployed model from labelled boxes, "
             "on the device (no TensorFlow)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=RETRAIN_DESCRIPTION,
        epilog=RETRAIN_EPILOG,
    )
    p.add_argument("package", help="the deployed .tflite (its sidecar <package>.json beside it)")
    p.add_argument("label_dirs", nargs="+", metavar="LABEL_DIR",
                   help="folder(s) with one sub-folder per class of the model, e.g. the daemon's feedback/")
    p.add_argument("--out", required=True, help="folder for the candidate package (created if missing)")
    rule = p.add_mutually_exclusive_group()
    rule.add_argument("--target-recall", type=float, default=None,
                      help="threshold: the highest with out-of-fold defect recall >= this (e.g. 0.95)")
    rule.add_argument("--cost-ratio", type=float, default=None,
                      help="threshold: minimise RATIO x missed defects + false rejects (default 2)")
    p.add_argument("--min-per-class", type=int, default=None,
                   help="refuse with fewer images than this in a class (default 20: edge/learn/retrain.py "
                        "DEFAULT_MIN_PER_CLASS; a 5-fold CV then tests ~4 images of the class per fold)")
    p.add_argument("--C", type=float, default=None, help="fix the regularisation C instead of choosing it by CV")
    p.add_argument("--name", default=None, help="candidate name (default <parent>-head-<UTC time>)")
    p.add_argument("--threads", type=int, default=2,
                   help="threads for the features: image decode + box crop in parallel, and the interpreter "
                        "(default 2; beside a running daemon on a 2-core device use 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the CV folds (default 0)")
    p.add_argument("--json", dest="json_out", default=None, help="also write the result as JSON ('-' = stdout)")
    p.add_argument("--recipe", choices=["head", "anomaly"], default="head",  # edge/learn/recipes.py Recipe (imported lazily)
                   help="head (default): a new logistic head from both classes (on an anomaly package too: the switch "
                        "to a supervised head); anomaly: a new bank of good parts from LABEL_DIR/<good class>/ alone, "
                        "for an anomaly package (edge/learn/retrain_anomaly.py). The daemon: POST /model/retrain "
                        "{\"recipe\": ...}")
    p.add_argument("--target-frr", type=float, default=None, metavar="RATE",
                   help="anomaly: the threshold's false-reject rate on good parts (default: the package's own)")
    p.set_defaults(func=_retrain)


def _add_config(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``config check FILE`` and ``config example [--unit]``."""
    p = sub.add_parser("config", help="check a daemon config file")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION")
    c = csub.add_parser(
        "check", help="validate a config file, name any bad key, check that files exist and state directories are writable"
    )
    _add_config_args(c)
    c.set_defaults(func=_config_check)
    c = csub.add_parser("example", help="print the example config shipped with the package (every key, documented)",
                        description="Print deploy/config.example.yaml as installed with the package, e.g. "
                                    "`boxinspect config example > config.yaml`; --unit prints the systemd unit.")
    c.add_argument("--unit", action="store_true", help="print the systemd unit (boxinspect.service) instead")
    c.set_defaults(func=_config_example)


def _add_selftest(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "selftest", help="run a model package's golden samples as the daemon does at start-up (after an install)",
        description="Load MODEL (.tflite with its sidecar) and run its golden samples: exit 0 when they pass, "
                    "3 when the package cannot be loaded or a sample fails. Prints the runtime, the delegate "
                    "(XNNPACK expected on a CPU) and the invoke p50.",
    )
    p.add_argument("model", help="the .tflite file (its metadata sidecar <model>.json beside it)")
    p.add_argument("--threads", type=int, default=2, help="interpreter threads (default 2)")
    p.set_defaults(func=_selftest)

    from edge.api import users  # issue 26: `boxinspect users add NAME --role R`

    users.register(sub)
