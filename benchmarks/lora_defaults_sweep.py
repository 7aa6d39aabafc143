"""Which LoRA settings close the gap to full fine-tuning? Candidate defaults for lora and qlora.

Every candidate trains MiniLM on the same data through the CLI (``accuracy.run_combo``), one
process each, and is scored on the same held-out test split; ``--seeds`` repeats chosen rows.

    python benchmarks/lora_defaults_sweep.py --data fake_reviews.csv --model MINILM_DIR --out sweep \
        --candidates full,lora-attn,lora-all,qlora-all --seeds 42,1,2

Results: benchmarks/results/lora_defaults_minilm_*.md; the chosen defaults: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import run_combo  # noqa: E402

ATTENTION = "query,key,value,attention.output.dense"
# Every linear layer of a BERT block: attention projections and both feed-forward layers
# (the pooler is left out: mean pooling never uses it, so its adapter would get no gradient).
ALL_LINEAR = "query,key,value,attention.output.dense,intermediate.dense,output.dense"

CANDIDATES: dict[str, tuple[str, list[str]]] = {
    "full": ("full", []),
    "lora-attn": ("lora", ["--lora-targets", ATTENTION]),
    "lora-all": ("lora", ["--lora-targets", ALL_LINEAR]),
    "lora-all-r32-e8": ("lora", ["--lora-targets", ALL_LINEAR, "--lora-r", "32", "--lora-alpha", "64", "--epochs", "8"]),
    "lora-all-e8": ("lora", ["--lora-targets", ALL_LINEAR, "--epochs", "8"]),
    "lora-all-e8-lr1e-3": ("lora", ["--lora-targets", ALL_LINEAR, "--epochs", "8", "--learning-rate", "1e-3"]),
    "qlora-attn": ("qlora", ["--lora-targets", ATTENTION]),
    "qlora-all": ("qlora", ["--lora-targets", ALL_LINEAR]),
    "qlora-all-r32-e8": ("qlora", ["--lora-targets", ALL_LINEAR, "--lora-r", "32", "--lora-alpha", "64", "--epochs", "8"]),
    "qlora-all-e8": ("qlora", ["--lora-targets", ALL_LINEAR, "--epochs", "8"]),
    "qlora-all-e8-lr1e-3": ("qlora", ["--lora-targets", ALL_LINEAR, "--epochs", "8", "--learning-rate", "1e-3"]),
    "qlora-all-e8-p3": ("qlora", ["--lora-targets", ALL_LINEAR, "--epochs", "8", "--early-stopping-patience", "3"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", required=True, help="MiniLM checkpoint directory")
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--seeds", default="42")
    parser.add_argument("--out", default="sweep-out")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.candidates.split(","):
        method, extra = CANDIDATES[name]
        for seed in args.seeds.split(","):
            row = run_combo(f"minilm:{method}:linear", args.data, out / f"{name}-{seed}",
                            ["--model", args.model, "--seed", seed, *extra])
            row.update(candidate=name, seed=int(seed), options=" ".join(extra))
            rows.append(row)
            print(json.dumps(row), flush=True)
            with (out / "sweep.jsonl").open("a") as handle:
                handle.write(json.dumps(row) + "\n")
    print("| candidate | seed | macro F1 | wall s | options |\n|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['candidate']} | {row['seed']} | {row.get('f1_macro', 'failed')} | {row['wall_seconds']} | {row['options']} |")


if __name__ == "__main__":
    main()
