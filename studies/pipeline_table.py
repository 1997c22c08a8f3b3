"""Markdown rows for docs/BENCHMARKS.md from `boxinspect bench pipeline --json` files.

    python studies/pipeline_table.py docs/bench/pipeline-*.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> int:
    out = sys.stdout.write
    out("| model | threads | decode fps | invoke fps (p99 ms) | presence p50 ms | model input p50 ms | daemon fps "
          "| throughput / limit | e2e p50 / p99 ms | e2e p99 / invoke p99 | gap delay p50 ms | CPU % | peak RSS MB "
          "| load 1 min |\n")
    out("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    rows = []
    for f in sys.argv[1:]:
        r = json.loads(Path(f).read_text())
        st, d, q = r["stages"], r["daemon"], r["ratios"]
        size = r["input"].split("x")[0]
        load = r["load_avg_1m_daemon"]
        rows.append((int(size), r["format"], r["threads"], (
            f"| {size} px {r['format']} | {r['threads']} | {st['decode']['fps']:.0f} | {st['invoke']['fps']:.0f} "
            f"({st['invoke']['p99_ms']:.2f}) | {st['presence']['p50_ms']:.2f} | {st['model_input']['p50_ms']:.2f} "
            f"| {d['throughput_fps']:.0f} | {q['throughput_over_limit']:.2f} ({q['limit']}) "
            f"| {d['e2e_read_to_puback']['p50_ms']:.1f} / {d['e2e_read_to_puback']['p99_ms']:.1f} "
            f"| {q['e2e_p99_over_invoke_p99']:.1f} | {d['decision_delay_gap_frames']['p50_ms']:.1f} "
            f"| {d.get('cpu_percent_of_a_core', 0):.0f} | {d['max_rss_mb']:.0f} | {load[0]:.1f}-{load[1]:.1f} |")))
    order = {"int8": 0, "fp16": 1, "float32": 2}
    for *_, row in sorted(rows, key=lambda x: (x[0], order.get(x[1], 9), x[2])):
        out(row + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
