"""CPU scoring: the toolkit's PyTorch path, its ONNX export (fp32, int8) and sentence-transformers.

In one process, on the same reviews, with the same bundled all-MiniLM-L6-v2, batch size, maximum
length and threads, alternating the contenders ``--rounds`` times (the best round of each counts:
a job sharing the cores only ever slows a round down):

* ``sentence-transformers``: ``SentenceTransformer.encode``;
* ``toolkit torch``: ``embed_texts`` (length-sorted, token-budget CPU batches);
* ``toolkit onnx fp32`` / ``toolkit onnx int8``: the run's encoder exported as ``export --format
  onnx [--quantize int8]`` does, scored through ONNX Runtime (``embed_texts_onnx``).

Then the accuracy that matters: macro F1 on the run's test split of a frozen MiniLM + logreg run
scored with each backend, and the largest P(fake) difference from the PyTorch model. Last, the
wall time of ``review-toolkit --help`` and ``predict --run RUN --text ...`` (torch, and with an int8
export), each the median of three fresh processes. The CPU, its flags and the load average before
and after are recorded: numbers from a shared machine (load average above ~0.5) are not a benchmark.

    python benchmarks/cpu_scoring.py --data ../shared/data/fake_reviews.csv --out benchmarks/results

``--run`` takes an existing frozen MiniLM run (default: one is trained into ``--workdir`` with the
toolkit's defaults on ``--data``; the run itself is never changed: exports go to copies).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REVIEW = "Great kettle, boils fast and the lid closes well."


def cpu_info() -> tuple[str, list[str]]:
    """The CPU's model name and which of the flags that matter here it has."""
    path = Path("/proc/cpuinfo")
    lines = path.read_text().splitlines() if path.exists() else []
    fields = {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in lines)}
    name = fields.get("model name") or platform.processor() or platform.machine()
    flags = fields.get("flags", "").split()
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    return name, [flag for flag in wanted if flag in flags]


def cli(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "review_toolkit", *arguments]


def median_wall(command: list[str], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def ensure_run(args: argparse.Namespace, workdir: Path) -> Path:
    if args.run:
        return Path(args.run)
    run = workdir / "minilm-frozen-logreg"
    if not run.exists():
        subprocess.run(cli("train", "--data", args.data, "--output-dir", str(run), "--quiet"), check=True)
    return run


def exported_copy(run: Path, workdir: Path, precision: str) -> Path:
    """A copy of the run with its export, as `export --format onnx` writes it (test split measured)."""
    target = workdir / f"run-onnx-{precision}"
    if not (target / "onnx" / "export.json").is_file():
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(run, target, ignore=shutil.ignore_patterns("onnx", "checkpoints"))
        quantize = ["--quantize", "int8"] if precision == "int8" else []
        subprocess.run(cli("export", "--run", str(target), *quantize, "--quiet"), check=True)
    return target


def markdown(result: dict) -> str:
    machine, rates = result["machine"], result["reviews_per_second"]
    lines = [
        f"{result['reviews']:,} reviews (mean {result['mean_tokens']} tokens), batch {result['batch_size']}, max length "
        f"{result['max_length']}; {machine['cpu']}, {machine['cores']} cores ({', '.join(machine['cpu_flags'])}), "
        f"{machine['threads']} threads; torch {machine['torch']}, onnxruntime {machine['onnxruntime']}, "
        f"sentence-transformers {machine['sentence_transformers']}; best of {result['rounds']} alternating rounds; "
        "load average {} before, {} after".format(*machine["load_average_before_after"])
        # The load before the run says whether others shared the machine; after it, the benchmark's own load shows.
        + (" (**shared machine: timings are not a benchmark**)" if machine["load_average_before_after"][0] > 0.5 else ""),
        "",
        "| contender | reviews/s | vs toolkit torch | vs sentence-transformers |",
        "|---|---|---|---|",
    ]
    for name, rate in rates.items():
        lines.append(
            f"| {name} | {rate:.1f} | {rate / rates['toolkit torch']:.2f}x | {rate / rates['sentence-transformers']:.2f}x |"
        )
    lines += ["", f"Test split of `{result['run']}` ({result['test_reviews']} reviews), threshold {result['threshold']}:", ""]
    lines += ["| scored with | macro F1 | change vs torch | labels changed | max abs p_fake difference |", "|---|---|---|---|---|"]
    for name, row in result["test_split"].items():
        lines.append(
            f"| {name} | {row['f1_macro']:.4f} | {row['f1_macro_change']:+.4f} | {row['labels_changed']} | "
            f"{row['max_abs_p_fake_difference']:.2e} |"
        )
    startup = result["startup_seconds"]
    lines += [
        "",
        "Wall time, median of 3 fresh processes: "
        + ", ".join(f"`{name}` {seconds:.2f} s" for name, seconds in startup.items()),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/fake_reviews.csv", help="CSV with a 'text' column")
    parser.add_argument("--run", help="a frozen MiniLM run (default: trained into --workdir on --data)")
    parser.add_argument("--workdir", default="/tmp/review-toolkit-cpu-scoring", help="where runs and exports go")
    parser.add_argument("--limit", type=int, default=0, help="first N reviews for the speed rounds (0: all)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch and ONNX Runtime threads")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-startup", action="store_true", help="no start-up timings")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--name", default="cpu_scoring", help="file name of the results (.json, .md)")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]

    import onnxruntime
    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    from review_toolkit import load_run
    from review_toolkit.evaluation.backend_parity import test_split_parity
    from review_toolkit.inference.embeddings import embed_texts
    from review_toolkit.inference.onnx_backend import OnnxEncoder, embed_texts_onnx, load_onnx_encoder, read_export

    torch.set_num_threads(args.threads)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    run = ensure_run(args, workdir)
    exports = {precision: exported_copy(run, workdir, precision) for precision in ("fp32", "int8")}

    texts = pd.read_csv(args.data)["text"].astype(str).tolist()
    texts = texts[: args.limit] if args.limit else texts
    torch_classifier = load_run(run, device="cpu", backend="torch")
    texts = torch_classifier.backbone.prepare_texts(texts)
    max_length = torch_classifier.max_length
    onnx = {}
    for precision, copy_dir in exports.items():
        encoder, token_ids = load_onnx_encoder(copy_dir, read_export(copy_dir), max_length)
        onnx[precision] = (OnnxEncoder(encoder.path, embedding_size=encoder.embedding_size, precision=precision,
                                       feed_forward_width=encoder.feed_forward_width, threads=args.threads), token_ids)
    model = SentenceTransformer(torch_classifier.info["checkpoint"], device="cpu")
    model.max_seq_length = max_length

    def sentence_transformers_encode(batch: list[str]) -> np.ndarray:
        return model.encode(batch, batch_size=args.batch_size, convert_to_numpy=True, show_progress_bar=False)

    def toolkit_torch(batch: list[str]) -> np.ndarray:
        return embed_texts(torch_classifier.encoder, torch_classifier.tokenizer, batch, max_length=max_length,
                           batch_size=args.batch_size, progress=False)

    def onnx_contender(precision: str):
        encoder, token_ids = onnx[precision]
        return lambda batch: embed_texts_onnx(encoder, token_ids, batch, batch_size=args.batch_size)

    contenders = {
        "sentence-transformers": sentence_transformers_encode,
        "toolkit torch": toolkit_torch,
        "toolkit onnx fp32": onnx_contender("fp32"),
        "toolkit onnx int8": onnx_contender("int8"),
    }
    for embed in contenders.values():  # warm-up: first calls allocate and load kernels
        embed(texts[: args.batch_size])
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    vectors: dict[str, np.ndarray] = {}
    for round_ in range(args.rounds):
        for name, embed in contenders.items():
            started = time.perf_counter()
            vectors[name] = embed(texts)
            seconds[name].append(time.perf_counter() - started)
        print(f"round {round_ + 1}: " + ", ".join(f"{n} {len(texts) / s[-1]:.1f}/s" for n, s in seconds.items()), flush=True)

    test_split = {"torch": test_split_parity(run, torch_classifier, batch_size=args.batch_size)}
    for precision, (encoder, token_ids) in onnx.items():
        classifier = copy.copy(torch_classifier)
        classifier.encoder, classifier.tokenizer = encoder, token_ids
        test_split[f"onnx {precision}"] = test_split_parity(run, classifier, batch_size=args.batch_size)

    startup = {}
    if not args.skip_startup:
        startup["review-toolkit --help"] = median_wall(cli("--help"))
        startup["predict --text (torch)"] = median_wall(cli("predict", "--run", str(run), "--backend", "torch", "--text", REVIEW, "--quiet"))
        startup["predict --text (onnx int8 export, auto)"] = median_wall(cli("predict", "--run", str(exports["int8"]), "--text", REVIEW, "--quiet"))

    cpu_name, cpu_flags = cpu_info()
    reference = vectors["toolkit torch"]
    tokens = torch_classifier.tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    result = {
        "machine": {
            "cpu": cpu_name,
            "cpu_flags": cpu_flags,
            "cores": os.cpu_count(),
            "threads": args.threads,
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "sentence_transformers": sentence_transformers.__version__,
            "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        },
        "run": str(run),
        "reviews": len(texts),
        "mean_tokens": round(float(np.mean([len(ids) for ids in tokens])), 1),
        "batch_size": args.batch_size,
        "max_length": max_length,
        "rounds": args.rounds,
        "reviews_per_second": {name: round(len(texts) / min(values), 1) for name, values in seconds.items()},
        "reviews_per_second_each_round": {n: [round(len(texts) / s, 1) for s in v] for n, v in seconds.items()},
        "min_cosine_vs_torch": {
            name: float(((reference * v).sum(1) / np.linalg.norm(reference, axis=1) / np.linalg.norm(v, axis=1)).min())
            for name, v in vectors.items()
        },
        "test_reviews": test_split["torch"].get("n_examples"),
        "threshold": test_split["torch"].get("threshold"),
        "test_split": test_split,
        "startup_seconds": {name: round(value, 2) for name, value in startup.items()},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    table = markdown(result)
    (out / f"{args.name}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
