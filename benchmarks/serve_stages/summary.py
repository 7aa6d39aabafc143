"""Medians and 90th percentiles of the host's stages per batch, from serve_stages' JSON lines.

    python benchmarks/serve_stages/summary.py DIR [--last N] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

STAGES = {
    "loop_queues_gpu_work": ("queue", "queued"),
    "hand_over_to_thread": ("queued", "thread"),
    "thread_waits_for_gpu": ("thread", "gpu_done"),
    "gpu_done_to_finishing": ("gpu_done", "finishing"),
    "finishing_head_calibration": ("finishing", "finished"),
    "finished_to_loop": ("finished", "resumed"),
    "loop_answers_requests": ("resumed", "answered"),
    "queued_to_answered": ("queue", "answered"),
}


def summarise(records: list[dict]) -> dict:
    summary = {"batches": len(records), "reviews_per_batch": round(float(np.mean([r["reviews"] for r in records])), 1)}
    for name, (start, end) in STAGES.items():
        spans = np.array([r[end] - r[start] for r in records if r.get(start) is not None and r.get(end) is not None]) * 1e3
        if len(spans):
            summary[name + "_ms"] = {"p50": round(float(np.median(spans)), 3), "p90": round(float(np.percentile(spans, 90)), 3), "mean": round(float(spans.mean()), 3)}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--last", type=int, help="Only the last N batches of each process (the busiest level).")
    parser.add_argument("--json", type=Path)
    arguments = parser.parse_args()
    results = []
    for path in sorted(arguments.directory.glob("stages_*.jsonl")):
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if arguments.last:
            records = records[-arguments.last :]
        if records:
            results.append({"file": path.name, **summarise(records)})
    print(json.dumps(results, indent=1))
    if arguments.json:
        arguments.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
