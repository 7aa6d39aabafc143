#!/usr/bin/env bash
# Run benchmarks/gpu_speed.py on the device machine with carried wheels (.carry2):
# transformers 5.24 (native gte), bitsandbytes/datasets/evaluate unpacked in site/, the toolkit wheel,
# the reviews and a WordPiece tokenizer. Arguments pass through to gpu_speed.py.
set -euo pipefail
export PYTHONPATH=$PWD/.carry2/site HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 -m pip install -q --no-deps --no-index --no-compile --target /tmp/site .carry2/transformers-*.whl .carry2/review_toolkit-*.whl
export PYTHONPATH=/tmp/site:$PYTHONPATH
python3 benchmarks/gpu_speed.py --data .carry2/fake_reviews.csv --tokenizer .carry2/tok --out "${OUT:-/tmp/out}" "$@"
