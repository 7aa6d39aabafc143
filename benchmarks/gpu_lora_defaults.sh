#!/usr/bin/env bash
# benchmarks/lora_defaults_sweep.py on the device machine. Carried in .carry/: site/ (bitsandbytes
# trimmed to its cuda130 library, datasets, evaluate, dill, multiprocess), minilm/ (fp16),
# fake_reviews.csv and the toolkit's wheel. Arguments pass through to the sweep.
set -euo pipefail
export PYTHONPATH=$PWD/.carry/site HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-index --no-compile .carry/review_toolkit-*.whl
OUT=${OUT:-/tmp/out}
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/card.txt"
python3 benchmarks/lora_defaults_sweep.py --data .carry/fake_reviews.csv --model "$PWD/.carry/minilm" --out /tmp/sweep "$@"
cp /tmp/sweep/sweep.jsonl "$OUT/"
