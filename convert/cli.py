"""The ``convert`` subcommand. TensorFlow is imported only inside the handler."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("convert")


def _convert(args: argparse.Namespace) -> int:
    from convert.common import ThresholdRule
    from convert.tflite import ConvertError, GateError, convert_run

    src = Path(args.run)
    run_dir = src.parent if src.suffix == ".keras" else src
    try:
        path = convert_run(
            run_dir,
            fmt=args.format,
            out=Path(args.out) if args.out else None,
            representative_count=args.representative,
            gate=not args.no_gate,
            max_f1_drop=args.max_f1_drop,
            max_auc_drop=args.max_auc_drop,
            threshold_rule=(ThresholdRule.RECALIBRATE if args.recalibrate_threshold
                            else ThresholdRule.KEEP if args.keep_threshold else None),
        )
    except GateError as e:
        print(f"REJECTED: {e}")
        if args.format == "int8":
            print(
                "int8 cannot ship for this model: the gate judges it at the operating threshold that would ship "
                "and it changes too many decisions there. Use fp16 instead: "
                f"`boxinspect convert {run_dir} --format fp16` (float16 weights, float32 arithmetic: the same "
                "decisions as Keras in docs/RESULTS.md, half the size of float32, as fast as float32 on CPUs "
                "without int8 acceleration). For a run with evaluate's metrics.json, `--recalibrate-threshold` "
                "re-chooses the int8 model's own threshold for the same recall target on the validation split, if "
                "int8 speed is needed (measure it with boxinspect bench)."
            )
        return 1
    except ConvertError as e:
        print(f"error: {e}")
        return 2
    print(path)
    if args.sign_key:  # issue 24: Ed25519, for a daemon with model.trusted_keys (edge/judge/signing.py)
        from edge.judge.model_package import PackageError
        from edge.judge.signing import sign_package

        try:
            print(sign_package(path, Path(args.sign_key)))
        except PackageError as e:
            print(f"error: the package was written but not signed: {e}")
            return 2
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a trained run to a TFLite model package (int8/fp16/float32) with an accuracy gate",
        description=(
            "Convert RUN/model.keras to TFLite and write <model>.tflite plus its metadata sidecar "
            "<model>.tflite.json (labels, preprocessing, quantisation, threshold, metrics, sha256, golden "
            "samples). The TFLite model is evaluated next to Keras on the test split; the command exits 1 "
            "if it loses more than the allowed macro F1 or AUC."
        ),
    )
    p.add_argument("run", metavar="RUN_OR_MODEL", help="run directory (or its model.keras)")
    p.add_argument("--format", "-f", choices=["int8", "fp16", "float32"], default="int8",
                   help="int8 = full integer, uint8 in/out (default); fp16 = float16 weights; float32")
    p.add_argument("--out", "-o", default=None, help="output .tflite (default RUN/model_<format>.tflite)")
    p.add_argument("--representative", type=int, default=200,
                   help="training images used to calibrate int8 (default 200)")
    p.add_argument("--no-gate", action="store_true", help="write the model even if it loses accuracy")
    p.add_argument("--max-f1-drop", type=float, default=0.01, help="allowed macro F1 loss (default 0.01; judged at 4 decimals, a drop equal to it passes)")
    p.add_argument("--max-auc-drop", type=float, default=0.01, help="allowed AUC loss (default 0.01; judged at 4 decimals, a drop equal to it passes)")
    rule = p.add_mutually_exclusive_group()
    rule.add_argument("--recalibrate-threshold", action="store_true",
                      help="choose this model's threshold with evaluate's rule (recall target on validation, with "
                           "labels; needs metrics.json from `boxinspect evaluate`) instead of carrying the run's over")
    rule.add_argument("--keep-threshold", action="store_true",
                      help="int8: ship the run's threshold as it is. By default int8 maps it onto its own score "
                           "scale (quantisation can move every score of a head the same way): a line from the Keras "
                           "logit to the int8 logit, fitted on the calibration images, no labels. "
                           "The sidecar's threshold_source says which was used")
    p.add_argument("--sign-key", metavar="PRIVATE_KEY",
                   help="sign the package with this Ed25519 key (MODEL.sig; see `boxinspect sign --help`)")
    p.set_defaults(func=_convert)
