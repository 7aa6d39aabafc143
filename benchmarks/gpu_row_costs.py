"""What one packed row costs the GPU by its size: a server's small batches against offline rows.

A server's batches hold a few dozen reviews, offline scoring's rows hundreds. This times, on one
run in one process:

- ``rows``: the GPU time of rows of real reviews filled up to each size, queued back to back so the
  host never makes the GPU wait (small rows replay their recorded graph, as a server's do; rows
  above the largest layout run eagerly, as offline ones do), in microseconds per row and per token;
- ``calls``: ``predict_proba`` on N reviews (ids given, as a server gives them), one call at a time
  (median milliseconds) and from two threads at once (reviews/s), and the host's time to queue one
  call's work;
- ``kernels``: where a row's GPU time goes (matrix products, attention, layer norms, the rest), per
  token, for rows of a server's size up to offline's (the profiler's totals run above the timed
  rows: compare them within a row size);
- the same rows again for each ``--variant``: ``fused-qkv`` (BERT's query, key and value projections
  as one matrix product) and ``compiled`` (the encoder's layers compiled, ``predict --compile``).

    python3 benchmarks/gpu_row_costs.py --run RUN --data fake_reviews.csv --out OUT --variant fused-qkv
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from review_toolkit import load_run
from review_toolkit.accel.compilation import compile_for_scoring
from review_toolkit.accel.gpu_scoring import (
    GPU_SCORING_TOKENS,
    _embed,
    _packed_row,
    enable_packed_attention,
    queueing_lock,
    record_scoring_graphs,
    use_shape_agnostic_attention,
)
from review_toolkit.accel.packing import packed_row_length, pretrained_model
from review_toolkit.accel.scoring_lanes import scoring_lanes_for

ROW_TOKENS = (128, 512, 1024, 1536, 2048, 2560, 3072, 4096, 5120, 6144, 7168, 8192, 16384, 32768)
CALL_REVIEWS = (1, 8, 16, 24, 32, 48, 64)
PROFILED_ROWS = (2560, 6144, 8192, 32768)


def rows_of(ids: list[np.ndarray], tokens: int, count: int, seed: int) -> list[list[int]]:
    """``count`` rows of random reviews, each filled while its packed length stays within ``tokens``."""
    generator = np.random.default_rng(seed)
    rows = []
    for _ in range(count):
        row, total = [], 0
        for index in generator.permutation(len(ids)):
            if packed_row_length(total + len(ids[index])) > tokens:
                if row:
                    break
                continue
            row.append(int(index))
            total += len(ids[index])
        rows.append(row)
    return rows


@torch.inference_mode()
def time_rows(encoder, ids, device, rows, repeats: int) -> float:
    """Seconds of GPU time per row, the rows queued back to back on a lane's stream."""
    lanes = scoring_lanes_for(encoder, device)
    with lanes.borrow() as lane, queueing_lock(encoder), torch.cuda.stream(lane.stream):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            for row in rows[:2]:
                _packed_row(encoder, ids, row, device, lane.graphs)
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(repeats):
                for row in rows:
                    _packed_row(encoder, ids, row, device, lane.graphs)
            end.record()
            torch.cuda.synchronize()
    return start.elapsed_time(end) / 1000 / (repeats * len(rows))


def measure_rows(name: str, encoder, ids, device) -> list[dict]:
    results = []
    for tokens in ROW_TOKENS:
        rows = rows_of(ids, tokens, 8 if tokens <= 8192 else 2, seed=tokens)
        seconds = time_rows(encoder, ids, device, rows, repeats=6 if tokens <= 8192 else 3)
        reviews = statistics.mean(len(row) for row in rows)
        review_tokens = statistics.mean(sum(len(ids[i]) for i in row) for row in rows)
        result = {
            "variant": name, "row_tokens": tokens, "reviews": round(reviews, 1), "review_tokens": round(review_tokens),
            "us_per_row": round(seconds * 1e6, 1), "us_per_review_token": round(seconds * 1e6 / review_tokens, 3),
            "reviews_per_s": round(reviews / seconds),
        }
        results.append(result)
        print(json.dumps(result), flush=True)
    return results


def measure_calls(classifier, ids_by_review: list[list[int]], texts: list[str]) -> list[dict]:
    results = []
    device = next(classifier.encoder.parameters()).device
    generator = np.random.default_rng(1)
    for reviews in CALL_REVIEWS:
        picks = [generator.choice(len(texts), reviews, replace=False) for _ in range(40)]
        calls = [([texts[i] for i in pick], [ids_by_review[i] for i in pick]) for pick in picks]
        for batch, token_ids in calls[:3]:
            classifier.predict_proba(batch, calibrated=False, token_ids=token_ids)
        times = []
        for batch, token_ids in calls[:20]:
            started = time.perf_counter()
            classifier.predict_proba(batch, calibrated=False, token_ids=token_ids)
            times.append(time.perf_counter() - started)
        # The host's share: queueing one call's work, up to the copy of its vectors.
        queueing = []
        lanes = scoring_lanes_for(classifier.encoder, device)
        for batch, token_ids in calls[:20]:
            with torch.inference_mode(), lanes.borrow() as lane, queueing_lock(classifier.encoder), torch.cuda.stream(lane.stream):
                started = time.perf_counter()
                _, copied = _embed(classifier.encoder, [token_ids], classifier.tokenizer.pad_token_id, device, GPU_SCORING_TOKENS, True, lane.graphs, None)
                queueing.append(time.perf_counter() - started)
            copied.synchronize()
        done = threading.Barrier(2)

        def score(share: list) -> None:
            done.wait()
            for batch, token_ids in share:
                classifier.predict_proba(batch, calibrated=False, token_ids=token_ids)

        threads = [threading.Thread(target=score, args=(calls[part::2],)) for part in range(2)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        two_threads = time.perf_counter() - started
        result = {
            "reviews": reviews, "ms_one_call": round(statistics.median(times) * 1e3, 2),
            "ms_host_queueing": round(statistics.median(queueing) * 1e3, 2),
            "reviews_per_s_two_threads": round(reviews * len(calls) / two_threads),
        }
        results.append(result)
        print(json.dumps(result), flush=True)
    return results


def kernel_category(name: str) -> str:
    lowered = name.lower()
    if "flash" in lowered or "fmha" in lowered:  # before the products: flash kernels are cutlass templates
        return "attention"
    if any(key in lowered for key in ("gemm", "cutlass", "xmma", "nvjet", "cublas", "sm90")):
        return "matrix products"
    if "layer_norm" in lowered or "layernorm" in lowered:
        return "layer norms"
    if "memcpy" in lowered or "memset" in lowered:
        return "copies"
    return "other elementwise"


def measure_kernels(name: str, encoder, ids, device) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    results = []
    for tokens in PROFILED_ROWS:
        rows = rows_of(ids, tokens, 4, seed=tokens)
        time_rows(encoder, ids, device, rows, repeats=1)
        with profile(activities=[ProfilerActivity.CUDA]) as profiled:
            time_rows(encoder, ids, device, rows, repeats=1)
        totals: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        by_kernel: dict[str, float] = defaultdict(float)
        for event in profiled.events():
            if event.device_type == torch.autograd.DeviceType.CUDA:
                category = kernel_category(event.name)
                totals[category] += event.device_time_total
                counts[category] += 1
                by_kernel[event.name[:120]] += event.device_time_total
        review_tokens = sum(sum(len(ids[i]) for i in row) for row in rows)
        result = {
            "variant": name, "row_tokens": tokens,
            "us_per_review_token": {key: round(value / review_tokens, 4) for key, value in sorted(totals.items())},
            "kernels_per_row": {key: round(value / len(rows)) for key, value in sorted(counts.items())},
            "longest_kernels_us_per_row": {
                name: round(value / len(rows), 1) for name, value in sorted(by_kernel.items(), key=lambda item: -item[1])[:8]
            },
        }
        results.append(result)
        print(json.dumps(result), flush=True)
    return results


def fuse_query_key_value(encoder) -> int:
    """BERT's three attention projections as one matrix product, in place; returns how many layers."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    model = pretrained_model(encoder.transformer)
    fused = 0
    for module in model.modules():
        if not all(hasattr(module, name) for name in ("query", "key", "value", "attention_head_size")):
            continue
        weight = torch.cat([module.query.weight, module.key.weight, module.value.weight])
        bias = torch.cat([module.query.bias, module.key.bias, module.value.bias])
        module.qkv = torch.nn.Linear(weight.shape[1], weight.shape[0], device=weight.device, dtype=weight.dtype)
        module.qkv.weight.data.copy_(weight)
        module.qkv.bias.data.copy_(bias)

        def forward(hidden_states, attention_mask=None, *args, _module=module, **kwargs):
            for name in ("past_key_values", "cache", "cache_position", "past_key_value"):
                kwargs.pop(name, None)
            shape = hidden_states.shape[:-1]
            query, key, value = (
                states.transpose(1, 2)
                for states in _module.qkv(hidden_states).view(*shape, 3, -1, _module.attention_head_size).unbind(-3)
            )
            attention = ALL_ATTENTION_FUNCTIONS.get_interface(_module.config._attn_implementation, None)
            output, weights = attention(_module, query, key, value, attention_mask, dropout=0.0, scaling=_module.scaling, **kwargs)
            return output.reshape(*shape, -1).contiguous(), weights

        module.forward = forward
        fused += 1
    return fused


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--name", default="gpu_row_costs")
    parser.add_argument("--rows-only", action="store_true", help="leave out the calls and the kernel profile")
    parser.add_argument("--variant", action="append", default=[], choices=["fused-qkv", "compiled"])
    args = parser.parse_args()

    classifier = load_run(args.run, device="cuda")
    texts = pd.read_csv(args.data)["text"].astype(str).tolist()
    token_ids = classifier.token_ids(texts)
    ids = [np.asarray(row, dtype=np.int64) for row in token_ids]
    device = next(classifier.encoder.parameters()).device
    use_shape_agnostic_attention()
    enable_packed_attention(classifier.encoder)
    record_scoring_graphs(classifier.encoder, device)
    report = {
        "card": torch.cuda.get_device_name(), "torch": torch.__version__,
        "environment": {name: value for name, value in os.environ.items() if name.startswith(("PYTORCH_TUNABLEOP", "CUBLAS", "DISABLE_ADDMM"))},
        "mean_review_tokens": round(float(np.mean([len(row) for row in ids])), 1),
        "rows": measure_rows("default", classifier.encoder, ids, device),
    }
    if not args.rows_only:
        report["calls"] = measure_calls(classifier, token_ids, texts)
        report["kernels"] = measure_kernels("default", classifier.encoder, ids, device)
    for variant in args.variant:
        encoder = copy.deepcopy(classifier.encoder)
        if variant == "fused-qkv":
            print(json.dumps({"variant": variant, "layers": fuse_query_key_value(encoder)}), flush=True)
        else:
            print(json.dumps({"variant": variant, "layers": compile_for_scoring(encoder)}), flush=True)
        record_scoring_graphs(encoder, device)
        report["rows"] += measure_rows(variant, encoder, ids, device)
        if not args.rows_only:
            report["kernels"] += measure_kernels(variant, encoder, ids, device)
        del encoder
        torch.cuda.empty_cache()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
