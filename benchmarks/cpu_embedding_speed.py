"""CPU embedding speed of the toolkit's default backbone against sentence-transformers.

Both contenders embed the same reviews with the same bundled all-MiniLM-L6-v2,
in one process, alternating (sentence-transformers, toolkit, ... ``--rounds``
times), with the same batch size, maximum length and torch threads; the best
round of each counts (a background job sharing the cores only ever slows a
round down). The toolkit's mean-pooled vectors are L2-normalised, as the
model's sentence-transformers pipeline does, before they are compared.

    python benchmarks/cpu_embedding_speed.py --data ../shared/data/fake_reviews.csv \
        --limit 0 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer

from review_toolkit import registry
from review_toolkit.inference.embeddings import embed_texts

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_scoring import cpu_info  # noqa: E402  (the CPU's name and the flags that matter)


def load_contenders():
    backbone, _ = registry.get("backbone", "minilm")
    method, _ = registry.get("method", "frozen")
    checkpoint = backbone.resolve_checkpoint(None)
    encoder = method.load_for_training(backbone, checkpoint, None)  # the frozen method ignores the config
    tokenizer = backbone.load_tokenizer(checkpoint)
    model = SentenceTransformer(checkpoint, device="cpu")
    return checkpoint, model, encoder, tokenizer, backbone


def markdown(result: dict) -> str:
    machine, rates = result["machine"], result["reviews_per_second"]
    lines = [
        f"{result['reviews']:,} reviews (mean {result['mean_tokens']} tokens), batch {result['batch_size']}, "
        f"max length {result['max_length']}; {machine['cpu']}, {machine['cores']} cores "
        f"({', '.join(machine['cpu_flags'])}), {machine['torch_threads']} torch threads, torch {machine['torch']}, "
        f"sentence-transformers {machine['sentence_transformers']}; best of {result['rounds']} alternating rounds, "
        "load average {} before, {} after".format(*machine["load_average_before_after"]),
        "",
        "| contender | reviews/s | vs sentence-transformers |",
        "|---|---|---|",
    ]
    for name, rate in rates.items():
        lines.append(f"| {name} | {rate:.1f} | {rate / rates['sentence-transformers']:.2f}x |")
    lines += [
        "",
        f"max abs difference {result['max_abs_difference']:.2e}, "
        f"min cosine similarity {result['min_cosine_similarity']:.7f} (toolkit vectors L2-normalised)",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="CSV with a 'text' column")
    parser.add_argument("--limit", type=int, default=2000, help="first N reviews (0: all)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="torch threads, the same for both")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="bench-out")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    texts = pd.read_csv(args.data)["text"].astype(str).tolist()
    texts = texts[: args.limit] if args.limit else texts
    checkpoint, model, encoder, tokenizer, backbone = load_contenders()
    max_length = min(model.max_seq_length, backbone.max_length)
    texts = backbone.prepare_texts(texts)

    def sentence_transformers_encode(texts: list[str]) -> np.ndarray:
        return model.encode(texts, batch_size=args.batch_size, convert_to_numpy=True, show_progress_bar=False)

    def toolkit(texts: list[str]) -> np.ndarray:
        vectors = embed_texts(
            encoder, tokenizer, texts, max_length=max_length, batch_size=args.batch_size, progress=False
        )
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    contenders = {"sentence-transformers": sentence_transformers_encode, "toolkit": toolkit}
    for run in contenders.values():  # warm-up: first calls allocate and load kernels
        run(texts[: args.batch_size])
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    vectors: dict[str, np.ndarray] = {}
    load_before = os.getloadavg()[0]
    for round_ in range(args.rounds):
        for name, run in contenders.items():
            started = time.perf_counter()
            vectors[name] = run(texts)
            seconds[name].append(time.perf_counter() - started)
        print(f"round {round_ + 1}: " + ", ".join(f"{n} {len(texts) / s[-1]:.1f}/s" for n, s in seconds.items()))

    reference, ours = vectors["sentence-transformers"], vectors["toolkit"]
    cpu_name, cpu_flags = cpu_info()
    rates = {name: len(texts) / min(values) for name, values in seconds.items()}
    tokens = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    result = {
        "machine": {
            "cpu": cpu_name,
            "cpu_flags": cpu_flags,
            "cores": os.cpu_count(),
            "torch_threads": args.threads,
            "torch": torch.__version__,
            "sentence_transformers": sentence_transformers.__version__,
            "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        },
        "checkpoint": checkpoint,
        "reviews": len(texts),
        "mean_tokens": round(float(np.mean([len(ids) for ids in tokens])), 1),
        "batch_size": args.batch_size,
        "max_length": max_length,
        "rounds": args.rounds,
        "reviews_per_second": {name: round(rate, 1) for name, rate in rates.items()},
        "reviews_per_second_each_round": {n: [round(len(texts) / s, 1) for s in v] for n, v in seconds.items()},
        "speedup": round(rates["toolkit"] / rates["sentence-transformers"], 3),
        "max_abs_difference": float(np.abs(reference - ours).max()),
        "min_cosine_similarity": float((reference * ours).sum(axis=1).min()),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cpu_embedding_speed.json").write_text(json.dumps(result, indent=1) + "\n")
    table = markdown(result)
    (out / "cpu_embedding_speed.md").write_text(table)
    print(json.dumps(result, indent=1))
    print(table)


if __name__ == "__main__":
    main()
