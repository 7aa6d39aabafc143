#!/usr/bin/env bash
# The ensemble measurement on one GPU (device machine). On one split (--split-seed 42) of the shared
# data: MiniLM fine-tuned in full, with LoRA and with QLoRA, each at the defaults with training seeds
# 42, 43 and 44, and TF-IDF + logistic regression; then ensembles of them (review-toolkit ensemble,
# --combine auto). Which ensemble to ship is chosen by validation macro F1, never by the test split;
# the test split is read once per ensemble, for the report. Then the chosen ensemble is reloaded and
# scored without a GPU.
# Carried: .carry/site (datasets, evaluate, dill, multiprocess, bitsandbytes trimmed to cuda130),
# .carry/minilm (MiniLM in fp16), .carry/fake_reviews.csv, the toolkit's wheel and the example
# plugin's wheel (pip wheel --no-deps --no-build-isolation . examples/review_toolkit_tfidf -w .carry/).
set -euo pipefail
export PYTHONPATH=$PWD/.carry/site HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 -m pip install -q --no-deps --no-index --no-compile .carry/review_toolkit-*.whl .carry/review_toolkit_tfidf-*.whl
OUT=${OUT:-/tmp/out}
DATA=$PWD/.carry/fake_reviews.csv
MINILM=$PWD/.carry/minilm
RUNS=/tmp/ensemble-runs
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/card.txt"
cd /tmp
train() { python3 -m review_toolkit train --quiet --data "$DATA" --split-seed 42 "$@" 2>&1 | tail -1; }
for seed in 42 43 44; do
  for method in full lora qlora; do
    train --backbone minilm --model "$MINILM" --method $method --head linear --seed $seed --output-dir "$RUNS/minilm-$method-$seed"
  done
done
train --backbone tfidf --method frozen --head logreg --seed 42 --output-dir "$RUNS/tfidf-logreg"
ensemble() {
  local name=$1; shift
  python3 -m review_toolkit ensemble "${@/#/$RUNS/}" --output-dir "$RUNS/ensemble-$name" > "$OUT/ensemble-$name.txt" 2>&1 \
    || { cat "$OUT/ensemble-$name.txt"; return 0; }
  echo "$name: $(grep -o 'validation macro F1: .*' "$OUT/ensemble-$name.txt" | head -1) | $(grep 'test split' "$OUT/ensemble-$name.txt")"
}
ensemble recipe-42 minilm-full-42 minilm-qlora-42 tfidf-logreg
ensemble full-seeds minilm-full-42 minilm-full-43 minilm-full-44
ensemble qlora-seeds minilm-qlora-42 minilm-qlora-43 minilm-qlora-44
ensemble lora-seeds minilm-lora-42 minilm-lora-43 minilm-lora-44
ensemble recipe-seeds minilm-full-42 minilm-full-43 minilm-full-44 minilm-qlora-42 minilm-qlora-43 minilm-qlora-44 tfidf-logreg
ensemble finetuned minilm-{full,lora,qlora}-{42,43,44}
ensemble all minilm-{full,lora,qlora}-{42,43,44} tfidf-logreg
python3 -m review_toolkit compare "$RUNS" --output-dir "$RUNS/comparison" > /dev/null
cp "$RUNS/comparison/leaderboard.md" "$OUT/ensemble_leaderboard.md"
# The ensemble with the best validation macro F1 (the first such on a tie), reloaded like any run
# on a CPU-only process and checked against the scores stored at build time.
best=$(python3 - "$RUNS" <<'PY'
import json, sys
from pathlib import Path
scores = {}
for run in sorted(Path(sys.argv[1]).glob("ensemble-*")):
    info = json.loads((run / "run.json").read_text())
    scores[run.name] = info["combination"]["validation_f1_macro"][info["combination"]["method"]]
print(max(scores, key=scores.get))
PY
)
echo "chosen by validation: $best" | tee "$OUT/chosen.txt"
CUDA_VISIBLE_DEVICES= python3 - "$RUNS/$best" <<'PY' | tee -a "$OUT/chosen.txt"
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
python3 -m review_toolkit predict --run "$RUNS/$best" --text "Absolutely love it, five stars, best purchase ever, buy it now!" | tee -a "$OUT/chosen.txt"
