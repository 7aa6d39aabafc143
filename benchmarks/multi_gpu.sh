#!/usr/bin/env bash
# Scaling over GPUs on a device machine with two or more GPUs (carried .carry2, see gpu_speed.sh):
# a random-init Stella of the real size trains with each method on 1 and on N GPUs through
# `accelerate launch` (benchmarks/timed_train.py: steady-state samples/s), then the N-GPU runs
# load and score the test reviews in a process that sees no GPU.
#
#   bash benchmarks/multi_gpu.sh [METHODS] [GPUS] [EXTRA --set OPTIONS...]     (defaults: "full qlora" 2)
#   RELOAD=0 skips the CPU reload; TAG names this set of runs in the JSON lines.
set -euo pipefail
methods=${1:-"full qlora"}; gpus=${2:-2}; shift $(( $# > 2 ? 2 : $# ))
export PYTHONPATH=$PWD/.carry2/site HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-index --no-compile --target /tmp/site .carry2/transformers-*.whl .carry2/review_toolkit-*.whl
export PYTHONPATH=/tmp/site:$PYTHONPATH
out=${OUT:-/tmp/out}; mkdir -p "$out"
python3 - <<'PY'
import sys; sys.path.insert(0, "benchmarks")
from pathlib import Path
from transformers import AutoTokenizer
import gpu_speed
directory = Path("/tmp/stella"); directory.mkdir(exist_ok=True)
gpu_speed.save_stella(directory, AutoTokenizer.from_pretrained(".carry2/tok"))
PY
for method in $methods; do
  for processes in 1 "$gpus"; do
    launch=(accelerate launch --num_machines 1 --num_processes "$processes" --dynamo_backend no --mixed_precision bf16)
    [ "$processes" -gt 1 ] && launch+=(--multi_gpu)
    "${launch[@]}" benchmarks/timed_train.py --set backbone=stella --set model=/tmp/stella --set method="$method" \
      --set head=linear --set data=.carry2/fake_reviews.csv --set epochs=1 --set output_dir="/tmp/runs/$method-$processes" "$@" \
      2>"$out/$method-$processes.log" | grep '^{' | sed "s/^{/{\"tag\": \"${TAG:-defaults}\", /" | tee -a "$out/multi_gpu.jsonl"
  done
  [ "${RELOAD:-1}" = 0 ] && continue
  CUDA_VISIBLE_DEVICES= python3 - "/tmp/runs/$method-$gpus" .carry2/fake_reviews.csv <<'PY' | tee -a "$out/multi_gpu.jsonl"
import json, sys, time
import numpy as np, pandas as pd
from review_toolkit import load_run
run, data = sys.argv[1:]
stored = pd.read_csv(f"{run}/split_predictions.csv").query("split == 'test'").head(64)
texts = pd.read_csv(data).text.iloc[stored.row.to_numpy() - 1].tolist()
started = time.perf_counter()
classifier = load_run(run)
p_raw = classifier.predict_proba(texts, calibrated=False)
print(json.dumps({"cpu_reload": run, "device": str(next(classifier.encoder.parameters()).device), "reviews": len(texts),
                  "max_abs_diff_vs_gpu_scores": float(np.abs(p_raw - stored.p_fake_raw.to_numpy()).max()),
                  "seconds": round(time.perf_counter() - started, 1), "first": classifier.predict(texts[:1])[0].label}))
PY
done
