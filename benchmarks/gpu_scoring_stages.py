"""Where end-to-end GPU scoring loses to the encoder alone, stage by stage, in one process.

For each random-init run of the real size (built as ``gpu_scoring.py`` builds them), with
compiled layers (``predict --compile``), every row timed on its best of two passes after a
warm-up pass over the same 6,000 reviews:

  tokenize            the toolkit's token ids of every review, in one thread
  encoder, 1 chunk    ``embed_on_gpu`` on the pre-tokenized reviews as one chunk
  encoder, chunks N   the same in consecutive chunks of N reviews (as ``embed_texts`` cuts them)
  embed_texts         tokenizing in worker threads ahead of the GPU, as ``predict`` does; then with
                      other first-chunk and piece sizes, and with everything tokenized before the
                      GPU starts
  Classifier.embed    ``embed_texts`` through the classifier (what ``predict_proba`` calls)
  predict_proba       the whole call: embedding, head, calibration; again with Python's garbage
                      collector paused
  bf16 weights        the encoder, 1 chunk, with its weights cast to bf16 and compiled again
  padded settings     encoders that take padded batches: the encoder under other ways of cutting them

with the share of the ``predict_proba`` wall time the GPU spends in kernels (torch profiler), the
GPU's idle gaps and the CUDA runtime calls that took the host's time, and a profile of the host's
time in ``predict_proba`` (the functions that take the most of it).

    python3 benchmarks/gpu_scoring_stages.py --data fake_reviews.csv --tokenizer DIR --out OUT
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import gc
import io
import itertools
import pstats
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_scoring import frozen_run, timed  # noqa: E402
from gpu_speed import save_stella, save_t5  # noqa: E402


PADDED_SETTINGS = [
    (float("inf"), 0, 32768), (1.15, 4096, 32768), (1.15, 16384, 32768), (1.3, 8192, 32768),
    (float("inf"), 0, 65536), (1.15, 16384, 65536),
]


def gpu_busy_share(function) -> float:
    """Kernel time on the GPU over the wall time of one call of ``function``."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    started = time.perf_counter()
    with profile(activities=[ProfilerActivity.CUDA]) as trace:
        function()
        torch.cuda.synchronize()
    wall = time.perf_counter() - started
    kernels = sum(event.self_device_time_total for event in trace.key_averages()) / 1e6
    return round(kernels / wall, 3)


def idle_gaps(function) -> dict:
    """Where the GPU waits during one call of ``function``: its idle gaps between kernels, and the
    CUDA runtime calls that took the host's time (a synchronization there stalls the launches)."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as trace:
        function()
        torch.cuda.synchronize()
    kernels = sorted(
        (event.time_range.start, event.time_range.end)
        for event in trace.events()
        if event.device_type == torch.autograd.DeviceType.CUDA
    )
    gaps, busy_until = [], kernels[0][1] if kernels else 0
    for start, end in kernels[1:]:  # copies may overlap kernels: a gap is time covered by none
        if start > busy_until:
            gaps.append(start - busy_until)
        busy_until = max(busy_until, end)
    runtime = sorted(
        (event for event in trace.key_averages() if event.key.startswith("cuda") and not event.key.startswith("cudaLaunch")),
        key=lambda event: event.cpu_time_total, reverse=True,
    )
    return {
        "kernels": len(kernels),
        "span_ms": round((kernels[-1][1] - kernels[0][0]) / 1e3, 1) if kernels else 0.0,
        "idle_ms": round(sum(gaps) / 1e3, 1),
        "gaps_over_100us": sum(gap > 100 for gap in gaps),
        "idle_in_gaps_over_100us_ms": round(sum(gap for gap in gaps if gap > 100) / 1e3, 1),
        "largest_gaps_ms": [round(gap / 1e3, 2) for gap in sorted(gaps, reverse=True)[:10]],
        "runtime_calls": [
            {"call": event.key, "count": event.count, "cpu_ms": round(event.cpu_time_total / 1e3, 1)} for event in runtime[:8]
        ],
    }


def stage_rows(run: Path, texts: list[str]) -> list[dict]:
    from review_toolkit import load_run
    from review_toolkit.accel import gpu_scoring
    from review_toolkit.accel.compilation import compile_for_scoring
    from review_toolkit.accel.gpu_scoring import embed_on_gpu, packs_on
    from review_toolkit.inference.embeddings import chunk_sizes, embed_texts, tokenized_ahead
    from review_toolkit.inference.token_ids import token_id_encoder

    classifier = load_run(run, device="cuda")
    # A copy with bf16 weights (autocast keeps norms and residuals in float32 otherwise), compiled apart.
    bf16 = copy.deepcopy(classifier.encoder).to(torch.bfloat16)
    classifier.compile_encoder()
    prepared = classifier.backbone.prepare_texts(texts)
    encode = token_id_encoder(classifier.tokenizer, classifier.max_length)
    ids = encode(prepared)
    device = torch.device("cuda")
    pad = classifier.tokenizer.pad_token_id
    rows = []
    defaults = gpu_scoring.PADDED_LENGTH_SPREAD, gpu_scoring.PADDED_BATCH_MIN_TOKENS

    def record(entry: dict) -> None:
        rows.append(entry)
        print(json.dumps(entry), flush=True)

    def row(name: str, function) -> None:
        seconds = timed(function, repeats=2)
        record({"stage": name, "seconds": round(seconds, 4), "reviews_per_s": round(len(texts) / seconds, 1)})

    started = time.perf_counter()
    classifier.predict_proba(texts)  # compiles
    record({"stage": "first predict_proba (compiling)", "seconds": round(time.perf_counter() - started, 1)})
    row("tokenize (one thread)", lambda: encode(prepared))
    row("encoder, 1 chunk", lambda: embed_on_gpu(classifier.encoder, [ids], pad_token_id=pad, device=device))
    for size in (1024, 2048, 4096):
        chunks = [ids[start : start + size] for start in range(0, len(ids), size)]
        row(f"encoder, chunks of {size}", lambda chunks=chunks: embed_on_gpu(classifier.encoder, chunks, pad_token_id=pad, device=device))
    row("embed_texts", lambda: embed_texts(classifier.encoder, classifier.tokenizer, prepared, max_length=classifier.max_length, progress=False))

    def ahead(**sizes):  # embed_texts with other chunk and piece sizes
        chunks = tokenized_ahead(classifier.tokenizer, prepared, max_length=classifier.max_length, **sizes)
        return embed_on_gpu(classifier.encoder, chunks, pad_token_id=pad, device=device)

    for sizes in ({"first": 128}, {"first": 8}, {"piece": 32}, {"piece": 512}):
        row("embed_texts, " + ", ".join(f"{name} {value}" for name, value in sizes.items()), lambda sizes=sizes: ahead(**sizes))

    def tokenized_first():
        chunks = tokenized_ahead(classifier.tokenizer, prepared, max_length=classifier.max_length)
        return embed_on_gpu(classifier.encoder, [[ids for chunk in chunks for ids in chunk]], pad_token_id=pad, device=device)

    row("embed_texts, all tokenized first (threads), then 1 chunk", tokenized_first)
    row("Classifier.embed", lambda: classifier.embed(texts))
    row("predict_proba", lambda: classifier.predict_proba(texts))

    def without_collector():
        gc.disable()
        try:
            return classifier.predict_proba(texts)
        finally:
            gc.enable()

    row("predict_proba, garbage collector paused", without_collector)
    record({"stage": "embed_texts: GPU idle gaps", **idle_gaps(lambda: embed_texts(
        classifier.encoder, classifier.tokenizer, prepared, max_length=classifier.max_length, progress=False))})
    record({"stage": "predict_proba: GPU busy share", "share": gpu_busy_share(lambda: classifier.predict_proba(texts))})
    record({"stage": "encoder, 1 chunk: GPU busy share", "share": gpu_busy_share(
        lambda: embed_on_gpu(classifier.encoder, [ids], pad_token_id=pad, device=device))})
    record({"stage": "predict_proba: GPU idle gaps", **idle_gaps(lambda: classifier.predict_proba(texts))})
    record({"stage": "encoder, 1 chunk: GPU idle gaps", **idle_gaps(
        lambda: embed_on_gpu(classifier.encoder, [ids], pad_token_id=pad, device=device))})
    if not packs_on(classifier.encoder, device):
        # Padded batches: how they are cut (spread and least tokens before a spread closes a batch;
        # infinite spread: filled to the budget) and the budget.
        sizes = chunk_sizes(len(ids))
        growing = [ids[start : start + size] for start, size in zip(itertools.accumulate([0, *sizes]), sizes)]
        for spread, least, budget in PADDED_SETTINGS:
            gpu_scoring.PADDED_LENGTH_SPREAD, gpu_scoring.PADDED_BATCH_MIN_TOKENS = spread, least
            name = f"padded spread {spread} from {least} tokens, budget {budget}"
            row(f"{name}: encoder, 1 chunk", lambda budget=budget: embed_on_gpu(
                classifier.encoder, [ids], pad_token_id=pad, device=device, max_tokens=budget))
            row(f"{name}: encoder, growing chunks", lambda budget=budget: embed_on_gpu(
                classifier.encoder, growing, pad_token_id=pad, device=device, max_tokens=budget))
        gpu_scoring.PADDED_LENGTH_SPREAD, gpu_scoring.PADDED_BATCH_MIN_TOKENS = defaults
    profile = cProfile.Profile()
    profile.runcall(classifier.predict_proba, texts)
    listing = io.StringIO()
    pstats.Stats(profile, stream=listing).sort_stats("tottime").print_stats(15)
    print(listing.getvalue(), flush=True)
    compile_for_scoring(bf16)
    row("encoder with bf16 weights, 1 chunk", lambda: embed_on_gpu(bf16, [ids], pad_token_id=pad, device=device))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--tokenizer", required=True, help="a BERT WordPiece tokenizer directory")
    parser.add_argument("--archs", default="stella,flan-t5")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    from transformers import AutoTokenizer

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp())
    texts = pd.read_csv(args.data)["text"].astype(str).tolist()
    report = {"card": torch.cuda.get_device_name(0), "torch": torch.__version__, "reviews": len(texts), "rows": []}
    for arch in args.archs.split(","):
        checkpoint = work / f"{arch}-checkpoint"
        checkpoint.mkdir()
        (save_stella if arch == "stella" else save_t5)(checkpoint, AutoTokenizer.from_pretrained(args.tokenizer))
        for row in stage_rows(frozen_run(arch, checkpoint, args.data, work), texts):
            report["rows"].append({"arch": arch, **row})
        torch.cuda.empty_cache()
        (out / "gpu_scoring_stages.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
