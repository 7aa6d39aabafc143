"""Scoring speed on one GPU, side by side in one process: the toolkit, a length-sorted loop, the pipeline.

Random-init models of the real sizes (benchmarks/gpu_speed.py builds them): Stella (native gte,
24 x 1024, 2_Dense_1024 projection) and FLAN-T5-large's encoder. The 6,000 reviews' real texts
with a WordPiece tokenizer, so lengths follow the data (mean ~81 tokens). Rows:

  toolkit   ``load_run(run).predict_proba(texts)`` on a frozen-encoder run (tokenizing included);
            again after ``compile_encoder()`` (``predict --compile``), its first pass reported apart
  sorted    the ten-line loop a user writes: reviews sorted by length, batches of 128/256/512
            padded to their longest, bf16 weights (../shared/bench/infer_gte_gpu.py)
  pipeline  transformers' ``pipeline("text-classification")`` in bf16, batch 32 and 128 (Stella only)

Every row is timed on its second pass over the texts (the first warms kernels and caches). The
toolkit's vectors are checked against its padded float32 path on 256 reviews (cosine).

    python3 benchmarks/gpu_scoring.py --data fake_reviews.csv --tokenizer DIR --out OUT
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_speed import save_stella, save_t5, stella_config, t5_config  # noqa: E402


def timed(function, repeats: int = 1) -> float:
    """Seconds of the fastest of ``repeats`` calls after one warm-up call."""
    function()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return best


def frozen_run(arch: str, checkpoint: Path, data: str, work: Path) -> Path:
    """A frozen-encoder + logistic regression run on 600 reviews (the head's accuracy is beside the point)."""
    from review_toolkit import TrainConfig, train

    frame = pd.read_csv(data)
    subset = work / f"{arch}-subset.csv"
    frame.sample(n=600, random_state=0).to_csv(subset, index=False)
    output = work / f"run-{arch}"
    train(TrainConfig(backbone=arch, model=str(checkpoint), method="frozen", head="logreg", data=str(subset), output_dir=str(output)), progress=False)
    return output


def toolkit_rows(run: Path, texts: list[str]) -> list[dict]:
    """The toolkit's default scoring, then the same classifier with compiled layers (``--compile``)."""
    from review_toolkit import load_run

    classifier = load_run(run, device="cuda")
    seconds = timed(lambda: classifier.predict_proba(texts), repeats=2)
    # Parity: the packed (or token-budget) bf16 vectors against the padded float32 path.
    sample = texts[:256]
    # Loaded onto the GPU, the run keeps its linear weights in bf16; the reference keeps float32's.
    encoder = load_run(run, device="cpu", backend="torch").encoder.to("cuda")
    tokenizer = classifier.tokenizer
    prepared = classifier.backbone.prepare_texts(sample)
    with torch.inference_mode():
        exact = []
        for start in range(0, len(prepared), 32):
            batch = tokenizer(prepared[start : start + 32], padding=True, truncation=True, max_length=classifier.max_length, return_tensors="pt").to("cuda")
            exact.append(encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).float().cpu())
    exact = torch.cat(exact).numpy()

    def cosine(fast: np.ndarray) -> float:
        return round(float(((fast * exact).sum(1) / np.linalg.norm(fast, axis=1) / np.linalg.norm(exact, axis=1)).min()), 6)

    rows = [{"row": "toolkit", "reviews_per_s": round(len(texts) / seconds, 1), "min_cosine_vs_fp32_padded": cosine(classifier.embed(sample))}]
    classifier.compile_encoder()
    started = time.perf_counter()
    classifier.predict_proba(texts)
    first = time.perf_counter() - started
    seconds = timed(lambda: classifier.predict_proba(texts), repeats=2)
    rows.append({
        "row": "toolkit --compile", "reviews_per_s": round(len(texts) / seconds, 1),
        "first_pass_s": round(first, 1), "min_cosine_vs_fp32_padded": cosine(classifier.embed(sample)),
    })
    del classifier
    torch.cuda.empty_cache()
    return rows


def sorted_loop_rows(arch: str, texts: list[str], tokenizer) -> list[dict]:
    """The anchor loop (sort by characters, pad each batch, bf16 weights) at three batch sizes."""
    from transformers import GteForSequenceClassification, T5EncoderModel

    if arch == "stella":
        config = stella_config()
        config.num_labels = 2
        model = GteForSequenceClassification(config).to("cuda", dtype=torch.bfloat16).eval()

        def score(batch):
            return model(**batch).logits.float().softmax(-1)[:, 1]
    else:
        model = T5EncoderModel(t5_config()).to("cuda", dtype=torch.bfloat16).eval()

        def score(batch):
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            return ((hidden * mask).sum(1) / mask.sum(1)).float()[:, 0]

    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    rows = []
    for batch_size in (128, 256, 512):
        def go():
            with torch.inference_mode():
                outputs = []
                for start in range(0, len(order), batch_size):
                    batch = tokenizer([texts[j] for j in order[start : start + batch_size]], padding=True, truncation=True, max_length=512, return_tensors="pt").to("cuda")
                    outputs.append(score(batch))
                torch.cat(outputs).cpu()

        rows.append({"row": f"sorted-bf16-bs{batch_size}", "reviews_per_s": round(len(texts) / timed(go), 1)})
    del model
    torch.cuda.empty_cache()
    return rows


def pipeline_rows(texts: list[str], tokenizer) -> list[dict]:
    from transformers import GteForSequenceClassification, pipeline

    directory = tempfile.mkdtemp()
    config = stella_config()
    config.num_labels = 2
    GteForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    classify = pipeline("text-classification", model=directory, device=0, dtype=torch.bfloat16)
    rows = []
    for batch_size in (32, 128):
        seconds = timed(lambda: classify(texts, batch_size=batch_size, truncation=True, max_length=512))
        rows.append({"row": f"pipeline-bf16-bs{batch_size}", "reviews_per_s": round(len(texts) / seconds, 1)})
    del classify
    torch.cuda.empty_cache()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--tokenizer", required=True, help="a BERT WordPiece tokenizer directory (Stella's kind)")
    parser.add_argument("--archs", default="stella,flan-t5")
    parser.add_argument("--out", required=True)
    parser.add_argument("--toolkit-only", action="store_true", help="leave out the sorted loop and the pipeline")
    parser.add_argument("--keep-runs", help="copy the toolkit's frozen runs here (for a later serving benchmark)")
    args = parser.parse_args()

    from transformers import AutoTokenizer

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.keep_runs or tempfile.mkdtemp())
    work.mkdir(parents=True, exist_ok=True)
    texts = pd.read_csv(args.data)["text"].astype(str).tolist()
    report = {"card": torch.cuda.get_device_name(0), "torch": torch.__version__, "reviews": len(texts), "rows": []}
    for arch in args.archs.split(","):
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
        checkpoint = work / f"{arch}-checkpoint"
        checkpoint.mkdir(exist_ok=True)
        (save_stella if arch == "stella" else save_t5)(checkpoint, tokenizer)
        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        rows = toolkit_rows(frozen_run(arch, checkpoint, args.data, work), texts)
        if not args.toolkit_only:
            rows += sorted_loop_rows(arch, texts, tokenizer)
        if arch == "stella" and not args.toolkit_only:
            rows += pipeline_rows(texts, tokenizer)
        for row in rows:
            row["arch"] = arch
            report["rows"].append(row)
            print(json.dumps(row), flush=True)
        (out / "gpu_scoring.json").write_text(json.dumps(report, indent=1))

    lines = [f"Card: {report['card']}; torch {report['torch']}; {len(texts)} reviews, real texts.", "",
             "| arch | row | reviews/s | vs best sorted loop |", "|---|---|---:|---:|"]
    for arch in args.archs.split(","):
        rows = [row for row in report["rows"] if row["arch"] == arch]
        best_sorted = max((row["reviews_per_s"] for row in rows if row["row"].startswith("sorted")), default=float("nan"))
        for row in rows:
            extra = f" (min cosine {row['min_cosine_vs_fp32_padded']})" if "min_cosine_vs_fp32_padded" in row else ""
            extra += f" (first pass, compiling: {row['first_pass_s']} s)" if "first_pass_s" in row else ""
            lines.append(f"| {arch} | {row['row']}{extra} | {row['reviews_per_s']:.0f} | {row['reviews_per_s'] / best_sorted:.2f}x |")
    (out / "gpu_scoring.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
