"""Accuracy, time and memory of backbone x method x head combinations on one dataset.

Each combination trains in its own process (so peak memory is its own) through
the same CLI a user runs, then the run's metrics.json and run.json are
collected into a JSON file and a markdown table.

    python benchmarks/accuracy.py --data ../shared/data/fake_reviews.csv \
        --combo minilm:frozen:logreg --combo minilm:lora:linear --out bench-out

A combination is BACKBONE:METHOD:HEAD; extra ``train`` options follow ``--``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_COMBOS = [
    "minilm:frozen:logreg",
    "minilm:frozen:svm",
    "minilm:frozen:mlp",
    "minilm:full:linear",
    "minilm:lora:linear",
    "minilm:qlora:linear",
]


def run_combo(combo: str, data: str, out: Path, extra: list[str]) -> dict:
    backbone, method, head = combo.split(":")
    run_dir = out / "runs" / combo.replace(":", "-")
    command = [
        sys.executable, "-m", "review_toolkit", "train", "--quiet", "--overwrite",
        "--backbone", backbone, "--method", method, "--head", head,
        "--data", data, "--output-dir", str(run_dir), *extra,
    ]
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        return {"combo": combo, "error": completed.stderr[-2000:], "wall_seconds": round(wall, 1)}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    info = json.loads((run_dir / "run.json").read_text())
    return {
        "combo": combo,
        "backbone": backbone,
        "method": method,
        "head": head,
        "f1_macro": round(metrics["f1_macro"], 4),
        "accuracy": round(metrics["accuracy"], 4),
        "roc_auc": metrics.get("roc_auc") and round(metrics["roc_auc"], 4),
        "wall_seconds": round(wall, 1),
        "training_seconds": info.get("training_seconds"),
        "peak_rss_gib": info.get("peak_rss_gib"),
        "peak_gpu_gib": info.get("peak_gpu_gib"),
        "epochs_run": info.get("epochs_run"),
        "train_samples_per_second": info.get("train_samples_per_second"),
        "trainable_parameters": info.get("trainable_parameters"),
        "device": info.get("device"),
    }


def markdown(rows: list[dict]) -> str:
    header = "| backbone | method | head | macro F1 | accuracy | wall s | peak RSS GiB | peak GPU GiB | trained params |"
    lines = [header, "|" + "---|" * 9]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['combo']} | failed | | | | {row['wall_seconds']} | | | |")
            continue
        lines.append(
            f"| {row['backbone']} | {row['method']} | {row['head']} | {row['f1_macro']:.4f} | {row['accuracy']:.4f} "
            f"| {row['wall_seconds']} | {row['peak_rss_gib']:.2f} | {row.get('peak_gpu_gib') or '-'} "
            f"| {row['trainable_parameters']:,} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--combo", action="append", help="BACKBONE:METHOD:HEAD (repeatable)")
    parser.add_argument("--out", default="bench-out")
    args, extra = parser.parse_known_args()
    extra = [item for item in extra if item != "--"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for combo in args.combo or DEFAULT_COMBOS:
        row = run_combo(combo, args.data, out, extra)
        rows.append(row)
        print(json.dumps(row), flush=True)
    (out / "accuracy.json").write_text(json.dumps({"machine": os.uname().nodename, "rows": rows}, indent=1))
    table = markdown(rows)
    (out / "accuracy.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
