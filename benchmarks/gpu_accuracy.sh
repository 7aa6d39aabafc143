#!/usr/bin/env bash
# Real-accuracy runs of the fine-tuning methods on one GPU (device machine).
# Carried: .carry/site (datasets, evaluate, bitsandbytes...), .carry/minilm (MiniLM in fp16),
# .carry/fake_reviews.csv, .carry/review_toolkit-*.whl.
set -euo pipefail
export PYTHONPATH=$PWD/.carry/site HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 -m pip install -q --no-deps --no-index --no-compile .carry/review_toolkit-*.whl
OUT=${OUT:-/tmp/out}
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/card.txt"
cd /tmp
python3 "$OLDPWD/benchmarks/accuracy.py" --data "$OLDPWD/.carry/fake_reviews.csv" --out /tmp/acc \
  --combo minilm:full:linear --combo minilm:lora:linear --combo minilm:qlora:linear \
  --combo minilm:full:mlp -- --model "$OLDPWD/.carry/minilm"
cp /tmp/acc/accuracy.json /tmp/acc/accuracy.md "$OUT/"
# The launch line, on one GPU.
accelerate launch --num_processes 1 -m review_toolkit train --quiet --backbone minilm --method qlora --head linear \
  --model "$OLDPWD/.carry/minilm" --data "$OLDPWD/.carry/fake_reviews.csv" --output-dir /tmp/accel-qlora 2>&1 | tail -4 | tee "$OUT/accelerate_qlora.txt"
# A run trained on the GPU loads and predicts on a CPU-only process.
CUDA_VISIBLE_DEVICES= python3 -m review_toolkit predict --run /tmp/acc/runs/minilm-qlora-linear \
  --text "This is the best blender I have ever owned, five stars." 2>&1 | tail -2 | tee "$OUT/cpu_predict.txt"
CUDA_VISIBLE_DEVICES= python3 -m review_toolkit predict --run /tmp/acc/runs/minilm-full-linear \
  --text "This is the best blender I have ever owned, five stars." 2>&1 | tail -2 | tee -a "$OUT/cpu_predict.txt"
