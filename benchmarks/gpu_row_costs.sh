#!/usr/bin/env bash
# benchmarks/gpu_row_costs.py on one GPU (device machine), on gpu_frozen_run.sh's run; arguments pass
# through (--variant fused-qkv, --variant compiled, --name).
set -euo pipefail
source benchmarks/gpu_frozen_run.sh
python3 benchmarks/gpu_row_costs.py --run "$RUN" --data .carry/fake_reviews.csv --out "$OUT" "$@"
