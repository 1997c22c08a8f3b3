"""The one console entry point: ``boxinspect <subcommand>``.

Each package registers its own subcommands (``register(subparsers)`` in its ``cli.py``) so the
module boundaries stay the public API. Registration must not import TensorFlow: heavy imports
happen inside the handlers, so ``boxinspect run`` works on an edge install without TensorFlow.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from boxinspect import __version__
from edge.runtime.logs import setup_logging

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# Modules only the train extra installs: a subcommand that needs one on an edge install says so plainly.
TRAIN_ONLY_MODULES = {"tensorflow", "keras", "sklearn", "matplotlib", "tqdm", "amqtt"}

EPILOG = """\
typical flow:
  boxinspect synth --out data/synth --video           # synthetic boxes on a belt (+ conveyor video)
  boxinspect localize data/synth --sheet crops.png   # where the box crop lands, worst first (before training)
  boxinspect boxfinder build --out runs/finder.tflite  # the learned box finder (localize --finder)
  boxinspect train data/synth --out runs/m1           # MobileNetV2 transfer learning
  boxinspect evaluate runs/m1                         # report, plots, operating threshold
  boxinspect convert runs/m1 --format int8            # TFLite + metadata + accuracy gate
  boxinspect predict runs/m1/model_int8.tflite img.jpg
  boxinspect sign runs/m1/model_int8.tflite --key keys/line1.key  # Ed25519, for model.trusted_keys
  boxinspect run --config deploy/config.example.yaml  # the edge daemon (operator page at http://127.0.0.1:8080/)
  boxinspect dataset export feedback --out data/line # the page's labels into a training set
  boxinspect demo                                     # all of the above on synthetic data

Every subcommand has --help.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="boxinspect",
        description="Visual inspection for production lines: train, quantise and run a box-defect classifier.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"boxinspect {__version__}")
    parser.add_argument("--log-level", default=None, type=_log_level, help="DEBUG, INFO (default), WARNING, ERROR")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    from boxinspect import boxfinder, dataset, demo, synth
    from convert import cli as convert_cli
    from edge import cli as edge_cli
    from edge.judge import crops as crops_cli
    from edge.judge import signing as signing_cli
    from historian import cli as historian_cli
    from training import cli as training_cli

    synth.register(sub)
    training_cli.register(sub)
    convert_cli.register(sub)
    edge_cli.register(sub)
    crops_cli.register(sub)
    boxfinder.register(sub)
    signing_cli.register(sub)
    dataset.register(sub)
    demo.register(sub)
    historian_cli.register(sub)
    return parser


def _log_level(text: str) -> str:
    if text.upper() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a log level (choose {', '.join(LOG_LEVELS)})")
    return text.upper()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    env_level = os.environ.get("BOXINSPECT_LOG_LEVEL")
    if args.log_level is None and env_level and env_level.upper() not in LOG_LEVELS:
        sys.stderr.write(f"boxinspect: BOXINSPECT_LOG_LEVEL={env_level!r} is not a log level "
                         f"(choose {', '.join(LOG_LEVELS)})\n")
        return 2
    setup_logging(args.log_level)
    try:
        return int(args.func(args) or 0)
    except OSError as e:  # a path the user gave that cannot be read or written: one line, not a traceback
        logging.getLogger("boxinspect").debug("%s failed", args.command, exc_info=True)
        sys.stderr.write(f"boxinspect {args.command}: {e} (--log-level DEBUG shows where)\n")
        return 2
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in TRAIN_ONLY_MODULES:
            raise
        sys.stderr.write(
            f"boxinspect {args.command}: needs {e.name}, which comes with the workstation install "
            f"(pip install 'boxinspect[train]'); this looks like an edge-only install, which runs models "
            f"(run, predict, bench, config check) but does not train or convert them.\n"
        )
        return 1
    except KeyboardInterrupt:
        logging.getLogger("boxinspect").warning("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
