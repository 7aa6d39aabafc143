#!/usr/bin/env bash
# Step-time profile of the toolkit's training on the device machine (carried .carry2, see gpu_speed.sh).
set -euo pipefail
export PYTHONPATH=$PWD/.carry2/site HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 -m pip install -q --no-deps --no-index --no-compile --target /tmp/site .carry2/transformers-*.whl .carry2/review_toolkit-*.whl
export PYTHONPATH=/tmp/site:$PYTHONPATH
python3 - <<'PY'
import sys; sys.path.insert(0, "benchmarks")
from pathlib import Path
from transformers import AutoTokenizer
import gpu_speed
d = Path("/tmp/stella"); d.mkdir(exist_ok=True)
gpu_speed.save_stella(d, AutoTokenizer.from_pretrained(".carry2/tok"))
PY
run() { python3 benchmarks/profile_train.py --checkpoint /tmp/stella --data .carry2/fake_reviews.csv "$@" 2>&1 | grep '^{' ; }
for spec in "$@"; do run $spec; done
