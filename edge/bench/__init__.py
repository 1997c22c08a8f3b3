"""``boxinspect bench``: one module per bench.

  model.py     ``bench MODEL``: the interpreter's latency per thread count (``--candidate``: shadow mode's cost)
  pipeline.py  ``bench pipeline``: decode, invoke, preprocessing and the whole daemon, end to end to the PUBACK
  idle.py      ``bench idle``: the daemon's CPU on an empty, still belt at the camera's pace
  soak.py      ``bench soak``: the daemon's RSS over a long run
  anomaly.py   ``bench anomaly [--model PACKAGE]``: an anomaly package's numpy scoring per crop, banks of 1k-100k
  common.py    what they share: the machine description, the daemon as its own process, the daemon benches' CLI
"""

from __future__ import annotations

import argparse

from edge.bench.common import machine_info, start_daemon, stop_daemon
from edge.bench.idle import bench_idle, idle_main
from edge.bench.model import bench_model, bench_shadow, format_shadow, format_table, model_main
from edge.bench.pipeline import analyse_trace, bench_pipeline, format_pipeline, pct, pipeline_main
from edge.bench.soak import bench_soak, soak_main

__all__ = [
    "analyse_trace", "bench_idle", "bench_model", "bench_pipeline", "bench_shadow", "bench_soak", "format_pipeline",
    "format_shadow", "format_table", "idle_main", "machine_info", "main", "model_main", "pct", "pipeline_main",
    "soak_main", "start_daemon", "stop_daemon",
]


def main(args: argparse.Namespace) -> int:
    if args.model == "pipeline":
        return pipeline_main(args)
    if args.model == "idle":
        return idle_main(args)
    if args.model == "soak":
        return soak_main(args)
    if args.model == "anomaly":  # numpy scoring of an anomaly package per bank size (issue 29)
        from edge.bench.anomaly import anomaly_main

        return anomaly_main(args)
    return model_main(args)
