#!/usr/bin/env bash
# benchmarks/serve_load.py on one GPU (device machine), on a frozen-encoder + logistic regression run
# of a random-init encoder of Stella's size: BERT-large's shape (24 layers x 1024, feed-forward 4096),
# which the image's transformers has (native gte needs a newer one, see gpu_scoring.sh).
# Carried in .carry/: wheels/ (FastAPI, uvicorn, httptools, uvloop, pydantic, opentelemetry-api), site/,
# the toolkit's wheel, fake_reviews.csv and minilm-tokenizer/ (MiniLM's tokenizer files). WORKERS (default "1") lists the
# server process counts to measure, all on the one GPU; HTTP_WORKERS (default "0") the counts of HTTP processes in front
# of them (serve --http-workers; 0: each process answers HTTP itself); BATCHES_IN_FLIGHT (default "default": serve's own)
# the --batches-in-flight values; GPU_STREAMS (default "1") the --gpu-streams values; MAX_WAIT_MS (default "2") the --max-wait-ms
# values; arguments pass through to serve_load.py.
set -euo pipefail
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-index --no-compile --target /tmp/serve-site .carry/wheels/*.whl .carry/review_toolkit-0.1.0-py3-none-any.whl
export PYTHONPATH=/tmp/serve-site:$PWD/.carry/site
OUT=${OUT:-/tmp/out}
python3 - <<'PY'
import pandas as pd
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

torch.manual_seed(0)
config = BertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096, vocab_size=30522)
BertModel(config).save_pretrained("/tmp/bert-large-random")
AutoTokenizer.from_pretrained(".carry/minilm-tokenizer").save_pretrained("/tmp/bert-large-random")
pd.read_csv(".carry/fake_reviews.csv").sample(n=600, random_state=0).to_csv("/tmp/serve-subset.csv", index=False)
PY
python3 -m review_toolkit train --quiet --backbone bert --model /tmp/bert-large-random --method frozen --head logreg \
    --data /tmp/serve-subset.csv --output-dir /tmp/serve-runs/bert-large-frozen-logreg 2>&1 | tail -1
for workers in ${WORKERS:-1}; do
  for http_workers in ${HTTP_WORKERS:-0}; do
    for in_flight in ${BATCHES_IN_FLIGHT:-default}; do
      for wait_ms in ${MAX_WAIT_MS:-2}; do
        for streams in ${GPU_STREAMS:-1}; do
          name="serve_load_h200_workers$workers"; [ "$http_workers" = 0 ] || name+="_http$http_workers"
          in_flight_option=(); [ "$in_flight" = default ] || { in_flight_option=(--batches-in-flight "$in_flight"); name+="_inflight$in_flight"; }
          [ "$streams" = 1 ] || name+="_streams$streams"
          [ "$wait_ms" = 2 ] || name+="_wait$wait_ms"
          python3 benchmarks/serve_load.py --run /tmp/serve-runs/bert-large-frozen-logreg --device cuda:0 --data .carry/fake_reviews.csv \
              --out "$OUT" --name "$name" --machine "one NVIDIA H200" --offline-rounds 2 --workers "$workers" --http-workers "$http_workers" \
              "${in_flight_option[@]}" --gpu-streams "$streams" --max-wait-ms "$wait_ms" \
              --run-description "a frozen BERT-large-shaped (Stella-size, random-init) encoder + logistic regression run" "$@" | grep -E '^\||side by side'
        done
      done
    done
  done
done
