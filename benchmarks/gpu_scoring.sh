#!/usr/bin/env bash
# benchmarks/gpu_scoring.py, then benchmarks/serve_load.py on the Stella-size run it trained, on the
# device machine. Carried in .carry/: site/ (bitsandbytes trimmed to its cuda130 library, datasets,
# evaluate, dill, multiprocess), wheels/ (FastAPI, uvicorn, pydantic, opentelemetry-api), wheels-gte/ (transformers 5.24 for native gte),
# the toolkit's wheel, fake_reviews.csv and MiniLM's tokenizer files in minilm-tokenizer/.
set -euo pipefail
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-index --no-compile --target /tmp/site .carry/wheels/*.whl .carry/wheels-gte/*.whl .carry/review_toolkit-0.1.0-py3-none-any.whl
export PYTHONPATH=/tmp/site:$PWD/.carry/site
OUT=${OUT:-/tmp/out}
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/card.txt"
python3 benchmarks/gpu_scoring.py --data .carry/fake_reviews.csv --tokenizer .carry/minilm-tokenizer --out "$OUT" --keep-runs /tmp/runs "$@"
python3 benchmarks/serve_load.py --run /tmp/runs/run-stella --device cuda --data .carry/fake_reviews.csv --out "$OUT" \
    --name serve_load_h200 --machine "one NVIDIA H200" --requests 500 3000 6000 --time-limit 60 \
    --run-description "a frozen Stella-size (random-init) encoder + logistic regression run"
