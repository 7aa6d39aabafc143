#!/usr/bin/env bash
# The ensemble measurement on one GPU (device machine): MiniLM fine-tuned in full, MiniLM with
# QLoRA and TF-IDF + logistic regression, each on the shared data with seed 42, then their
# ensembles (review-toolkit ensemble): --combine auto at the default threshold, and the mean with
# the threshold chosen for macro F1 on validation. Then the ensemble is reloaded and scored
# without a GPU.
# Carried as for gpu_accuracy.sh: .carry/site, .carry/minilm (MiniLM in fp16), .carry/fake_reviews.csv,
# .carry/review_toolkit-*.whl; and the example plugin's wheel, built here with
#   pip wheel --no-deps --no-build-isolation examples/review_toolkit_tfidf -w .carry/
set -euo pipefail
export PYTHONPATH=$PWD/.carry/site HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 -m pip install -q --no-deps --no-index --no-compile .carry/review_toolkit-*.whl .carry/review_toolkit_tfidf-*.whl
OUT=${OUT:-/tmp/out}
DATA=$PWD/.carry/fake_reviews.csv
MINILM=$PWD/.carry/minilm
RUNS=/tmp/ensemble-runs
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/card.txt"
cd /tmp
train() { python3 -m review_toolkit train --quiet --data "$DATA" --seed 42 "$@" 2>&1 | tail -2; }
train --backbone minilm --model "$MINILM" --method full --head linear --output-dir "$RUNS/minilm-full"
train --backbone minilm --model "$MINILM" --method qlora --head linear --output-dir "$RUNS/minilm-qlora"
train --backbone tfidf --method frozen --head logreg --output-dir "$RUNS/tfidf-logreg"
MEMBERS=("$RUNS/minilm-full" "$RUNS/minilm-qlora" "$RUNS/tfidf-logreg")
python3 -m review_toolkit ensemble "${MEMBERS[@]}" --output-dir "$RUNS/ensemble" | tee "$OUT/ensemble.txt"
python3 -m review_toolkit ensemble "${MEMBERS[@]}" --combine mean --threshold-for f1 --output-dir "$RUNS/ensemble-mean-f1" \
  | tee "$OUT/ensemble_mean_f1.txt"
python3 -m review_toolkit compare "$RUNS" --output-dir "$RUNS/comparison" > /dev/null
cp "$RUNS/comparison/leaderboard.md" "$OUT/ensemble_leaderboard.md"
# Reloaded like any run: load_run on a CPU-only process, against the scores stored at build time.
CUDA_VISIBLE_DEVICES= python3 - "$RUNS/ensemble" <<'PY' | tee "$OUT/ensemble_cpu_reload.txt"
import sys
from pathlib import Path

import numpy as np

from review_toolkit import load_run
from review_toolkit.data import load_splits_for
from review_toolkit.evaluation.run_evaluation import load_split_predictions, read_run_config

run = Path(sys.argv[1])
classifier = load_run(run)
test = load_splits_for(read_run_config(run)).test
p = classifier.predict_proba(test.text.tolist()[:200], calibrated=False)
stored = load_split_predictions(run)["test"].p_raw[:200]
print(f"CPU reload: {type(classifier).__name__} of {len(classifier.members)} members; "
      f"max |p - stored| on 200 test reviews {np.abs(p - stored).max():.2e}")
PY
