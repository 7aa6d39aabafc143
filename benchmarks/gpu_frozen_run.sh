#!/usr/bin/env bash
# Sourced by gpu_serve.sh and gpu_row_costs.sh on the device machine: installs the carried wheels and
# trains, once per machine, a frozen-encoder + logistic regression run of a random-init encoder of
# Stella's size: BERT-large's shape (24 layers x 1024, feed-forward 4096), which the image's
# transformers has (native gte needs a newer one, see gpu_scoring.sh). Carried in .carry/: wheels/
# (FastAPI, uvicorn, httptools, pydantic, opentelemetry-api), site/, the toolkit's wheel,
# fake_reviews.csv and minilm-tokenizer/ (MiniLM's tokenizer files). Leaves the run's path in $RUN.
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-index --no-compile --upgrade --target /tmp/serve-site .carry/wheels/*.whl .carry/review_toolkit-0.1.0-py3-none-any.whl
export PYTHONPATH=/tmp/serve-site:$PWD/.carry/site
OUT=${OUT:-/tmp/out}
RUN=/tmp/serve-runs/bert-large-frozen-logreg
if [ ! -e "$RUN" ]; then
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
      --data /tmp/serve-subset.csv --output-dir "$RUN" 2>&1 | tail -1
fi
