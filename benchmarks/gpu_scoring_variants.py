"""Which choices of GPU scoring pay, measured on one run in one process: packed rows or padded
batches, float32 weights under autocast or bf16 weights, and the token budget.

Embeds the 6,000 reviews (pre-tokenized, so only the encoder is timed) with
``review_toolkit.accel.gpu_scoring.embed_on_gpu`` under each setting, and prints the CUDA
kernels that take the most time in the default setting.

    python3 benchmarks/gpu_scoring_variants.py --run RUN --data fake_reviews.csv --out OUT
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import pandas as pd
import torch

from review_toolkit import load_run
from review_toolkit.accel.compilation import compile_encoder_layers
from review_toolkit.accel.gpu_scoring import embed_on_gpu, packs_on
from review_toolkit.accel.packing import pretrained_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--profile", action="store_true", help="also print the kernels that take the most time")
    args = parser.parse_args()

    classifier = load_run(args.run, device="cuda")
    texts = classifier.backbone.prepare_texts(pd.read_csv(args.data)["text"].astype(str).tolist())
    ids = classifier.tokenizer(texts, truncation=True, max_length=classifier.max_length)["input_ids"]
    pad = classifier.tokenizer.pad_token_id
    device = torch.device("cuda")
    float32 = classifier.encoder
    bf16 = copy.deepcopy(float32).to(torch.bfloat16)
    rows = []

    def measure(name: str, encoder, **options) -> None:
        embed_on_gpu(encoder, [ids], pad_token_id=pad, device=device, **options)
        torch.cuda.synchronize()
        best = float("inf")
        for _ in range(2):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            embed_on_gpu(encoder, [ids], pad_token_id=pad, device=device, **options)
            end.record()
            torch.cuda.synchronize()
            best = min(best, start.elapsed_time(end) / 1000)
        rows.append({"variant": name, "reviews_per_s": round(len(ids) / best, 1)})
        print(json.dumps(rows[-1]), flush=True)

    packs = packs_on(float32, device)
    for tokens in (16384, 32768, 65536):
        if packs:
            measure(f"packed fp32-weights autocast {tokens}", float32, max_tokens=tokens, pack=True)
            measure(f"packed bf16-weights {tokens}", bf16, max_tokens=tokens, pack=True)
    measure("padded fp32-weights autocast 32768", float32, pack=False)
    measure("padded bf16-weights 32768", bf16, pack=False)
    del bf16
    compiled = copy.deepcopy(float32)
    layers = compile_encoder_layers(pretrained_model(compiled.transformer))
    started = time.perf_counter()
    try:
        embed_on_gpu(compiled, [ids], pad_token_id=pad, device=device)
        torch.cuda.synchronize()
        rows.append({"variant": f"compiled layers ({layers}): first pass, compiling included", "seconds": round(time.perf_counter() - started, 1)})
        print(json.dumps(rows[-1]), flush=True)
        measure("compiled layers, default settings", compiled)
    except Exception as error:  # report, keep the other rows
        rows.append({"variant": "compiled layers", "error": repr(error)[:400]})
        print(json.dumps(rows[-1]), flush=True)
    del compiled

    table = ""
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as profiler:
            embed_on_gpu(float32, [ids[:2000]], pad_token_id=pad, device=device)
            torch.cuda.synchronize()
        table = profiler.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=70)
        print(table)
    out = Path(args.out)
    name = Path(args.run).name
    (out / f"gpu_scoring_variants_{name}.json").write_text(json.dumps({"card": torch.cuda.get_device_name(0), "run": name, "rows": rows}, indent=1))
    if table:
        (out / f"gpu_scoring_profile_{name}.txt").write_text(table)


if __name__ == "__main__":
    main()
