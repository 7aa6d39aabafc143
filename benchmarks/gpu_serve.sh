#!/usr/bin/env bash
# benchmarks/serve_load.py on one GPU (device machine), on gpu_frozen_run.sh's run (a frozen random-init
# encoder of Stella's size + logistic regression). WORKERS (default "1") lists the
# server process counts to measure, all on the one GPU; HTTP_WORKERS (default "0") the counts of HTTP processes in front
# of them (serve --http-workers; 0: each process answers HTTP itself); BATCHES_IN_FLIGHT (default "default": serve's own)
# the --batches-in-flight values; GPU_STREAMS (default "1") the --gpu-streams values; MAX_WAIT_MS (default "default": serve's own) the --max-wait-ms
# values; arguments pass through to serve_load.py.
set -euo pipefail
source benchmarks/gpu_frozen_run.sh
for workers in ${WORKERS:-1}; do
  for http_workers in ${HTTP_WORKERS:-0}; do
    for in_flight in ${BATCHES_IN_FLIGHT:-default}; do
      for wait_ms in ${MAX_WAIT_MS:-default}; do
        for streams in ${GPU_STREAMS:-1}; do
          name="serve_load_h200_workers$workers"; [ "$http_workers" = 0 ] || name+="_http$http_workers"
          in_flight_option=(); [ "$in_flight" = default ] || { in_flight_option=(--batches-in-flight "$in_flight"); name+="_inflight$in_flight"; }
          [ "$streams" = 1 ] || name+="_streams$streams"
          wait_option=(); [ "$wait_ms" = default ] || { wait_option=(--max-wait-ms "$wait_ms"); name+="_wait$wait_ms"; }
          python3 benchmarks/serve_load.py --run "$RUN" --device cuda:0 --data .carry/fake_reviews.csv \
              --out "$OUT" --name "$name" --machine "one NVIDIA H200" --offline-rounds 2 --workers "$workers" --http-workers "$http_workers" \
              "${in_flight_option[@]}" --gpu-streams "$streams" "${wait_option[@]}" \
              --run-description "a frozen BERT-large-shaped (Stella-size, random-init) encoder + logistic regression run" "$@" | grep -E '^\||side by side'
        done
      done
    done
  done
done
