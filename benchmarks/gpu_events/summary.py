"""Summary of the calls ``sitecustomize.py`` timed: per process, over its last N calls.

    python benchmarks/gpu_events/summary.py /tmp/events [--last 800] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def summary(path: Path, last: int) -> dict:
    rows = sorted((json.loads(line) for line in path.read_text().splitlines()), key=lambda row: row["t0"])[-last:]
    tokens = np.array([row["tokens"] for row in rows], dtype=float)
    gpu_ms = np.array([row["gpu_ms"] for row in rows])
    launch_ms = np.array([row["launch_ms"] for row in rows])
    gaps_ms = np.array([row["gap_ms"] for row in rows[1:] if row["gap_ms"] is not None])
    span_ms = (rows[-1]["t0"] - rows[0]["t0"]) * 1e3
    fixed, per_token = np.linalg.lstsq(np.vstack([np.ones_like(tokens), tokens]).T, gpu_ms, rcond=None)[0]
    return {
        "file": path.name,
        "calls": len(rows),
        "reviews_per_call": round(float(np.mean([row["reviews"] for row in rows])), 1),
        "tokens_per_call": round(float(tokens.mean())),
        "gpu_ms_per_call": round(float(gpu_ms.mean()), 2),
        "gpu_share_of_span": round(float(gpu_ms[:-1].sum() / span_ms), 3),
        "gpu_ms_fit": {"fixed": round(float(fixed), 3), "per_token_us": round(float(per_token) * 1e3, 3)},
        "launch_ms": {q: round(float(np.percentile(launch_ms, int(q[1:]))), 2) for q in ("p10", "p50", "p90")} | {"mean": round(float(launch_ms.mean()), 2)},
        # From one call's last copy to the next call's first work on the GPU: the GPU had nothing in hand.
        "gap_ms": {q: round(float(np.percentile(gaps_ms, int(q[1:]))), 2) for q in ("p50", "p90")} | {"mean": round(float(gaps_ms.mean()), 3)}
        if len(gaps_ms) else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--last", type=int, default=800, help="Calls at the end of each file to summarize (a run's last load level).")
    parser.add_argument("--json", type=Path, help="Also write the summaries here.")
    arguments = parser.parse_args()
    summaries = [summary(path, arguments.last) for path in sorted(arguments.folder.glob("gpu_*.jsonl"))]
    for entry in summaries:
        print(json.dumps(entry))
    if arguments.json:
        arguments.json.write_text(json.dumps(summaries, indent=2) + "\n")


if __name__ == "__main__":
    main()
